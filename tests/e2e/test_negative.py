"""Break one thing at a time on ONE lab host (mta3) and put it back in `finally`: the right infra test fails
with a message naming what is wrong, and readiness marks exactly the affected IP or domain.

readiness runs on mta3 only (every IP and both domains there): the rows that must fail, fail, and every
other row of the host passes. Shared lab: every change is on mta3 (or one record of lab DNS) and is
restored exactly (a backup of the file, the original mode, the original records), even when an assertion
fails."""

from __future__ import annotations

import contextlib
import time

import pytest

from sendfleet.core.inventory import Inventory, SendingIp
from tests.e2e import helpers
from tests.lab.conftest import LabHandle

pytestmark = pytest.mark.lab

VICTIM = "mta3"


@pytest.fixture(scope="module")
def inv(converged: LabHandle) -> Inventory:
    return helpers.inventory(converged.inventory_dir)


def _ips(inv: Inventory, pool: str | None = None) -> list[SendingIp]:
    return [s for s in inv.hosts[VICTIM].sending_ips if pool is None or s.pool == pool]


def _domains(inv: Inventory, pool: str) -> list[str]:
    return sorted(d.name for d in inv.sender_domains.values() if d.pool == pool)


def _infra_fails(lab: LabHandle, select: str, *needles: str) -> str:
    proc = helpers.run_infra(lab.inventory_dir, f"ansible://{VICTIM}", select)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, f"infra -k {select!r} should fail (exit 1), got {proc.returncode}:\n{out[-4000:]}"
    for needle in needles:
        assert needle in out, f"infra -k {select!r}: the failure does not name {needle!r}:\n{out[-4000:]}"
    return out


def _readiness_marks(lab: LabHandle, expected: set[tuple[str, str, str]], check: str) -> None:
    """readiness on the victim host (every IP, every domain of its pools): exactly `expected` fails."""
    rc, report, err = helpers.run_readiness(lab.inventory_dir, "--host", VICTIM)
    bad = helpers.not_passing(report)
    assert set(bad) == expected, f"readiness should mark exactly {sorted(expected)}:\n{helpers.describe(report)}"
    assert rc == 1, f"readiness exit {rc} (expected 1)\n{err}"
    for key, row in bad.items():
        assert row["verdict"] == "fail", f"{key}: {row}"
        text = " ".join(row["problems"])
        assert check in text, f"{key}: expected a {check!r} problem, got: {text}"


def _transports_of(lab: LabHandle, ip: str) -> list[str]:
    """Every master.cf transport bound to `ip`: its own and its per-provider-class ones."""
    out = []
    for line in lab.ssh(VICTIM, "postconf -P").stdout.splitlines():
        key, _, value = line.partition(" = ")
        if key.endswith(("/smtp_bind_address", "/smtp_bind_address6")) and value.strip() == ip:
            out.append(key.split("/")[0])
    if not out:
        raise AssertionError(f"{VICTIM}: no transport binds to {ip}")
    return out


def test_wrong_helo_name(converged: LabHandle, inv: Inventory) -> None:
    pool = _ips(inv)[0].pool
    sip = _ips(inv, pool)[0]
    ip = str(sip.ip)
    services = _transports_of(converged, ip)
    backup = "/etc/postfix/master.cf.sendfleet-e2e"
    converged.ssh(VICTIM, f"cp -p /etc/postfix/master.cf {backup}")
    try:
        # the IP's HELO: on every transport bound to it (readiness mail may leave by any of them)
        wrong = " ".join(f"'{service}/unix/smtp_helo_name=wrong-helo.lab.test'" for service in services)
        converged.ssh(VICTIM, f"postconf -P {wrong} && postfix reload")
        _infra_fails(converged, "test_transport_helo_names", VICTIM, ip, sip.helo, "wrong-helo.lab.test")
        _readiness_marks(converged, {(VICTIM, ip, d) for d in _domains(inv, pool)}, "helo:")
    finally:
        converged.ssh(VICTIM, f"mv {backup} /etc/postfix/master.cf && postfix reload")
    assert "wrong-helo" not in converged.ssh(VICTIM, "postconf -P").stdout


def test_dkim_key_file_mode(converged: LabHandle, inv: Inventory) -> None:
    pool = sorted({s.pool for s in _ips(inv)})[0]
    domain = inv.sender_domains[_domains(inv, pool)[0]]
    selector = domain.signer  # the key OpenDKIM actually loads when it signs for the domain
    assert selector is not None, f"{domain.name}: no selector in the inventory"
    path = f"/etc/opendkim/keys/{domain.name}/{selector}.private"
    mode = converged.ssh(VICTIM, f"stat -c %a {path}").stdout.strip()
    try:
        converged.ssh(VICTIM, f"chmod 0644 {path}")
        _infra_fails(converged, "test_dkim_key_files", VICTIM, path, "0644", "expected 0600")
        _infra_fails(converged, "test_no_world_readable_secret", VICTIM, path)
        # OpenDKIM refuses a key others can read (RequireSafeKeys) and the milter tempfails: the host
        # answers 451 for that domain only, and its mail waits rather than leaving unsigned.
        _readiness_marks(converged, {(VICTIM, str(s.ip), domain.name) for s in _ips(inv, pool)}, "submission:")
    finally:
        converged.ssh(VICTIM, f"chmod {mode} {path}")


def test_opendkim_stopped(converged: LabHandle, inv: Inventory) -> None:
    socket = converged.ssh(VICTIM, "postconf -h smtpd_milters").stdout.strip().split(",")[0]
    path = "/var/spool/postfix" + socket.removeprefix("unix:")
    try:
        converged.ssh(VICTIM, "systemctl stop opendkim")
        _infra_fails(converged, "test_services_enabled_and_running", VICTIM, "opendkim is not running")
        expected = {(VICTIM, str(s.ip), d) for s in _ips(inv) for d in _domains(inv, s.pool)}
        _readiness_marks(converged, expected, "submission:")
    finally:
        converged.ssh(VICTIM, "systemctl start opendkim")
        for _ in range(30):
            if converged.ssh(VICTIM, f"test -S {path}", check=False).returncode == 0:
                break
            time.sleep(1)
    converged.ssh(VICTIM, f"test -S {path}")


def test_ptr_removed(converged: LabHandle, inv: Inventory) -> None:
    pool = _ips(inv)[0].pool
    sip = _ips(inv, pool)[-1]
    ip = str(sip.ip)
    lab_dns = helpers.LabDns(inv)
    with helpers.dns_changed(lab_dns, helpers.reverse_name(ip), "PTR", None):
        _infra_fails(converged, "test_fcrdns_of_sending_ips", VICTIM, ip, "no PTR", sip.ptr)
        _infra_fails(converged, "test_transports_match_in_service_ips", VICTIM, ip, "FCrDNS")
        _readiness_marks(converged, {(VICTIM, ip, d) for d in _domains(inv, pool)}, "fcrdns:")


def test_spf_of_one_domain_broken(converged: LabHandle, inv: Inventory) -> None:
    """SPF concerns a whole domain: every IP of its pool fails, the other domain passes (restored quickly)."""
    pool = sorted({s.pool for s in _ips(inv)})[0]
    domain = _domains(inv, pool)[0]
    lab_dns = helpers.LabDns(inv)
    _, current = lab_dns.query(domain, "TXT")
    texts = [b"".join(rd.strings).decode() for rd in current]  # type: ignore[attr-defined]
    assert any(t.startswith("v=spf1") for t in texts), f"{domain}: no SPF record published: {texts}"
    broken = [helpers.txt(t) for t in texts if not t.startswith("v=spf1")] + [helpers.txt("v=spf1 -all")]
    # the envelope sender is at the domain's bounce domain (VERP return path): SPF is checked there, so the
    # domain's SPF is broken at both names
    bounce = inv.sender_domains[domain].bounce_domain
    with contextlib.ExitStack() as stack:
        stack.enter_context(helpers.dns_changed(lab_dns, domain, "TXT", broken))
        if bounce:
            stack.enter_context(helpers.dns_changed(lab_dns, bounce, "TXT", [helpers.txt("v=spf1 -all")]))
        ip = str(_ips(inv, pool)[0].ip)
        _infra_fails(converged, "test_spf_authorizes_sending_ips", VICTIM, ip, domain, "expected pass")
        _readiness_marks(converged, {(VICTIM, str(s.ip), domain) for s in _ips(inv, pool)}, "spf:")
