"""OpenDKIM: a clean configuration, a private key per sender domain and selector (owner, mode, the same key
as the controller's, the one whose public half DNS publishes)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.hazmat.primitives import serialization

from sendfleet.readiness.evidence import DnsError, DnsView
from tests.infra.conftest import Expect

#: Modes a DKIM private key may have (the opendkim role writes 0600; 0640 is tolerated, nothing for others).
KEY_MODES = (0o600, 0o640, 0o400, 0o440)


def test_opendkim_config_clean(host: Any, expect: Expect) -> None:
    res = host.run("opendkim -n")
    assert res.rc == 0 and not (res.stdout + res.stderr).strip(), (
        f"{expect.name}: `opendkim -n` exited {res.rc} (expected 0 and no output): {(res.stderr or res.stdout).strip()}"
    )


def _key_path(expect: Expect, domain: str, selector: str) -> str:
    return f"{expect.var('opendkim', 'opendkim_host_keys_dir')}/{domain}/{selector}.private"


def test_dkim_key_files(host: Any, expect: Expect) -> None:
    """Each selector's key exists, owned by opendkim, mode 0600 (0640/0400/0440 tolerated), in the KeyTable."""
    keytable = host.file("/etc/opendkim/KeyTable")
    table = keytable.content_string if keytable.exists else ""
    problems = []
    for domain in expect.inv.sender_domains.values():
        for selector in domain.selectors:
            path = _key_path(expect, domain.name, selector)
            f = host.file(path)
            if not f.exists:
                problems.append(f"{domain.name} selector {selector}: {path} missing")
                continue
            if f.user != "opendkim":
                problems.append(f"{path}: owner {f.user}, expected opendkim")
            if f.mode not in KEY_MODES:
                problems.append(f"{path}: mode {f.mode:04o}, expected 0600")
            if f"{domain.name}:{selector}:{path}" not in table:
                problems.append(f"{path}: not in /etc/opendkim/KeyTable as {domain.name}:{selector}:{path}")
    assert not problems, f"{expect.name}: " + "; ".join(problems)


def test_dkim_keys_match_controller(host: Any, expect: Expect) -> None:
    """The key on the host is the controller's key (the one the DNS planner published the record from)."""
    problems = []
    for domain in expect.inv.sender_domains.values():
        for selector in domain.selectors:
            local = expect.inv.dkim_key_path(domain.name, selector)
            if not local.is_file():
                continue  # keys kept elsewhere (vault): nothing to compare here
            path = _key_path(expect, domain.name, selector)
            remote = host.file(path)
            if remote.exists and remote.sha256sum != hashlib.sha256(local.read_bytes()).hexdigest():
                problems.append(f"{path} differs from the controller's {local}")
    assert not problems, f"{expect.name}: " + "; ".join(problems)


def test_dkim_dns_records_match_keys(expect: Expect, dnsview: DnsView) -> None:
    """The published TXT of each selector carries the public half of the controller's key."""
    problems = []
    for domain in expect.domains_here():
        for selector in domain.selectors:
            local = expect.inv.dkim_key_path(domain.name, selector)
            if not local.is_file():
                continue
            key = serialization.load_pem_private_key(local.read_bytes(), password=None)
            der = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            want = base64.b64encode(der).decode()
            name = f"{selector}._domainkey.{domain.name}"
            try:
                txts = dnsview.txt(name)
            except DnsError as err:
                problems.append(f"{name}: {err}")
                continue
            ps = ["".join(t.split("p=", 1)[1].split(";")[0].split()) for t in txts if "p=" in t]
            if want not in ps:
                problems.append(f"{name}: TXT p= does not hold the public key of {local} (found {len(txts)} TXT)")
    assert not problems, f"{expect.name}: " + "; ".join(problems)
