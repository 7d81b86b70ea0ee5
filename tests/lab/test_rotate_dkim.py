"""DKIM key rotation on the lab (playbooks/rotate-dkim.yml), end to end, under continuous mail.

A new selector (a fresh name per run, so no resolver holds an answer about it) is added after shop.test's
signing one and the switch phase runs; then the old selector is removed from the inventory and the retire
phase runs. Mail flows through every sender the whole time (a thread submitting a few messages a second from
shop.test and news.test) and a second thread watches the authoritative server (Knot) for the new record.
Checked:
- the new TXT record at the authoritative server carries the controller's new key, and no message was signed
  with the new selector in an SMTP session that ended before the server was last seen without that record;
  after the switch every sender signs with the new selector;
- the old record stays through the switch (grace period); after the retire phase it is gone from the
  authoritative server and the old key from the senders, while news.test's key of the same name stays;
- every message submitted during the rotation was accepted, reached the sink and verifies (dkimpy, lab DNS).
The inventory, the new key and the lab are restored even when the test fails (the fixture converges again);
the second test checks the original selector signs again and that a further site.yml run changes nothing.
"""

from __future__ import annotations

import base64
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dkim
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from tests.lab.helpers import (
    converge,
    host_address,
    load_yaml,
    make_message,
    resolver,
    run_playbook,
    submit,
    txt_lookup,
    wait_for_tags,
)

pytestmark = pytest.mark.lab

DOMAIN = "shop.test"  # rotated
OTHER = "news.test"  # not rotated: its selector has the same name as shop.test's old one
RECIPIENT = "inbox@gmail.test"
INTERVAL_S = 0.25  # one message every 0.25 s, round robin over the senders


def senders(inv: Path) -> dict[str, str]:
    hosts = load_yaml(inv / "hosts.yml")["all"]["children"]["senders"]["hosts"]
    return {host: host_address(inv, host) for host in hosts}


def authoritative(inv: Path) -> str:
    return str(load_yaml(inv / "group_vars" / "all" / "dns_update.yml")["dns_update_server"])


def carries(record: bytes | None, pem: Path) -> bool:
    """The DKIM TXT record's p= is the public half of the controller's private key `pem`."""
    if record is None:
        return False
    key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    tags = dict(t.strip().split("=", 1) for t in record.decode().split(";") if "=" in t)
    return "".join(tags.get("p", "").split()) == base64.b64encode(public).decode()


def signature(raw: bytes) -> dict[str, str]:
    """The tags (d=, s=, a=, ...) of the message's only DKIM-Signature header."""
    found = re.findall(rb"^DKIM-Signature:(.*?)(?=^\S)", raw, re.M | re.S)
    assert len(found) == 1, f"expected one DKIM-Signature, found {len(found)}"
    value = re.sub(rb"\s+", b"", found[0]).decode()
    return dict(t.split("=", 1) for t in value.split(";") if "=" in t)


@dataclass
class Sent:
    tag: str
    host: str
    domain: str
    start: float  # time.monotonic() around the SMTP session
    end: float


@dataclass
class MailFlow:
    """Submits one message every INTERVAL_S, round robin over the senders, from DOMAIN (3 of 4) and OTHER."""

    hosts: dict[str, str]
    run: str
    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def loop(self) -> None:
        names = sorted(self.hosts)
        i = 0
        while not self.stop.is_set():
            host, domain = names[i % len(names)], OTHER if i % 4 == 3 else DOMAIN
            tag = f"rot-{self.run}-{i:05d}"
            start = time.monotonic()
            try:
                submit(self.hosts[host], [make_message(f"probe@{domain}", RECIPIENT, tag)])
            except Exception as err:  # every refusal or failure is a finding, kept for the assertion
                with self.lock:
                    self.errors.append(f"{tag} via {host}: {err!r}")
            else:
                with self.lock:
                    self.sent.append(Sent(tag, host, domain, start, time.monotonic()))
            i += 1
            self.stop.wait(max(0.0, INTERVAL_S - (time.monotonic() - start)))

    def snapshot(self) -> list[Sent]:
        with self.lock:
            return list(self.sent)

    def wait_after(self, moment: float, count: int, deadline_s: float = 60) -> None:
        """Until every sender has had `count` messages submitted after `moment`."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            later = [s.host for s in self.snapshot() if s.start > moment]
            if all(later.count(h) >= count for h in self.hosts):
                return
            time.sleep(0.5)
        raise AssertionError(f"mail stopped flowing: {len(self.snapshot())} sent, errors {self.errors[:5]}")


@dataclass
class Watch:
    """Polls the authoritative server for a TXT record: when it was last seen absent, first seen present."""

    lookup: Callable[..., bytes | None]
    name: str
    last_absent: float | None = None  # start of the last query that found no record
    first_present: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def loop(self) -> None:
        while not self.stop.is_set():
            asked = time.monotonic()
            try:
                record = self.lookup(self.name)
            except Exception:  # a lost query tells nothing either way
                record = b""
            if record is None:
                self.last_absent = asked
            elif record and self.first_present is None:
                self.first_present = asked
            self.stop.wait(0.1)


def start(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def verify(messages: dict[str, Any], sent: list[Sent], txt: Callable[..., bytes | None]) -> dict[str, dict[str, str]]:
    """Check every sent message reached the sink and verifies; its signature's tags, by tag."""
    missing = [s.tag for s in sent if s.tag not in messages]
    assert not missing, f"{len(missing)} of {len(sent)} messages did not reach the sink: {missing[:10]}"
    tags = {}
    bad = []
    for s in sent:
        raw = messages[s.tag].raw
        tags[s.tag] = sig = signature(raw)
        if sig.get("d") != s.domain or not dkim.verify(raw, dnsfunc=txt):
            bad.append(f"{s.tag} ({s.domain} via {s.host}, d={sig.get('d')} s={sig.get('s')})")
    assert not bad, f"{len(bad)} of {len(sent)} messages do not verify: {bad[:10]}"
    return tags


@dataclass
class Rotation:
    lab: Any
    inv: Path
    pools: Path
    old: str
    new: str


@pytest.fixture
def rotation(converged: Any) -> Iterator[Rotation]:
    """DOMAIN's signing selector and a new selector name; restores the inventory and the lab afterwards."""
    inv = Path(converged.inventory_dir)
    pools = inv / "group_vars" / "all" / "pools.yml"
    original = pools.read_bytes()
    entry = yaml.safe_load(original)["sender_domains"][DOMAIN]
    old = entry.get("signing_selector", entry["selectors"][0])
    new = f"r{uuid.uuid4().hex[:8]}"
    try:
        yield Rotation(converged, inv, pools, old, new)
    finally:
        pools.write_bytes(original)
        (inv / "dkim" / DOMAIN / f"{new}.pem").unlink(missing_ok=True)
        restored = run_playbook(inv, "site.yml")
        assert restored.returncode == 0, "site.yml after restoring the inventory failed:\n" + restored.stdout[-5000:]


def edit_domain(pools: Path, **values: Any) -> None:
    data = yaml.safe_load(pools.read_text())
    data["sender_domains"][DOMAIN].update(values)
    pools.write_text(yaml.safe_dump(data, sort_keys=False))


def rotate(inv: Path, selector: str, phase: str) -> subprocess.CompletedProcess[str]:
    proc = run_playbook(inv, "playbooks/rotate-dkim.yml", "-e", f"rotate_domain={DOMAIN}",
                        "-e", f"rotate_selector={selector}", "-e", f"rotate_phase={phase}")
    assert proc.returncode == 0, f"rotate-dkim.yml ({phase}) failed:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"
    return proc


def host_keys(lab: Any, host: str) -> set[str]:
    out = lab.ssh(host, "cd /etc/opendkim/keys && find . -name '*.private' | sort").stdout
    return {line.removeprefix("./").removesuffix(".private") for line in out.split()}


def test_rotation_publishes_before_switching_and_retires_without_unverifiable_mail(rotation: Rotation) -> None:
    lab, inv, old, new = rotation.lab, rotation.inv, rotation.old, rotation.new
    auth = authoritative(inv)
    at_auth = txt_lookup(resolver(auth))
    lab_dns = txt_lookup(resolver(lab.resolver))
    old_pem, new_pem = inv / "dkim" / DOMAIN / f"{old}.pem", inv / "dkim" / DOMAIN / f"{new}.pem"
    new_name, old_name = f"{new}._domainkey.{DOMAIN}", f"{old}._domainkey.{DOMAIN}"
    assert carries(at_auth(old_name), old_pem), f"{old_name} is not published before the rotation"
    assert at_auth(new_name) is None, f"{new_name} exists before the rotation"

    flow = MailFlow(senders(inv), uuid.uuid4().hex[:8])
    watch = Watch(at_auth, new_name)
    threads = [start(flow.loop), start(watch.loop)]
    try:
        flow.wait_after(time.monotonic(), 2)  # mail flows before anything changes

        # Switch: the new selector is listed after the signing one, then rotate-dkim.yml publishes and switches.
        edit_domain(rotation.pools, selectors=[old, new])
        switch = rotate(inv, new, "switch")
        switched = time.monotonic()
        edit_domain(rotation.pools, signing_selector=new)  # as the playbook says: later runs keep signing with it
        out = switch.stdout
        waited = out.find("TASK [Wait until the authoritative server serves the new key]")
        signing = out.find("TASK [opendkim : Write the key, signing and trusted hosts tables]")
        assert 0 <= waited < signing, "the switch did not wait for the record before writing the signing table"
        assert "ok: [" in out[waited:out.find("TASK [", waited + 1)], "the wait for the record did not run"
        assert carries(at_auth(new_name), new_pem), f"{new_name} does not carry the new key: {at_auth(new_name)!r}"
        assert carries(at_auth(old_name), old_pem), f"{old_name} went before the grace period"
        assert {f"{DOMAIN}/{old}", f"{DOMAIN}/{new}", f"{OTHER}/{old}"} <= host_keys(lab, "mta1")

        # Everything submitted so far (old key, new key, both around the switch) verifies while both records exist.
        flow.wait_after(switched, 2)
        before_retire = flow.snapshot()
        got = wait_for_tags({s.tag for s in before_retire})
        sigs = verify(got, before_retire, lab_dns)
        selectors = {s.tag: sigs[s.tag]["s"] for s in before_retire if s.domain == DOMAIN}
        assert set(selectors.values()) == {old, new}, f"{DOMAIN} signed with {set(selectors.values())}"
        assert watch.last_absent is not None and watch.first_present is not None, "the watch missed the publication"
        early = [s.tag for s in before_retire if selectors.get(s.tag) == new and s.end < watch.last_absent]
        assert not early, f"signed with {new} before the authoritative server served it: {early}"
        first_new = min(s.start for s in before_retire if selectors.get(s.tag) == new)
        print(f"rotation: {len(before_retire)} messages by the switch; {new} first seen at the authoritative server "
              f"{first_new - watch.first_present:.1f} s before the first message signed with it")
        stale = [f"{s.tag} via {s.host}" for s in before_retire if s.start > switched and selectors.get(s.tag) != new
                 and s.domain == DOMAIN]
        assert not stale, f"still signed with {old} after the switch: {stale}"
        assert all(sigs[s.tag]["s"] == old for s in before_retire if s.domain == OTHER)

        # Retire: the old selector leaves the inventory; its key leaves the senders, then its record the DNS.
        edit_domain(rotation.pools, selectors=[new])
        rotate(inv, old, "retire")
        retired = time.monotonic()
        assert at_auth(old_name) is None, f"{old_name} still at the authoritative server after retirement"
        assert carries(at_auth(new_name), new_pem), f"{new_name} gone after retirement"
        assert carries(at_auth(f"{old}._domainkey.{OTHER}"), inv / "dkim" / OTHER / f"{old}.pem"), \
            f"{OTHER}'s {old} record went with {DOMAIN}'s"
        for host in flow.hosts:
            keys = host_keys(lab, host)
            assert f"{DOMAIN}/{old}" not in keys and {f"{DOMAIN}/{new}", f"{OTHER}/{old}"} <= keys, f"{host}: {keys}"
            table = lab.ssh(host, "cat /etc/opendkim/KeyTable /etc/opendkim/SigningTable").stdout
            assert old_name not in table, f"{host}: {old_name} still in the tables"
        flow.wait_after(retired, 2)
    finally:
        flow.stop.set()
        watch.stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert not flow.errors, f"{len(flow.errors)} submissions failed during the rotation: {flow.errors[:10]}"
    after = [s for s in flow.snapshot() if s.tag not in sigs]
    sigs_after = verify(wait_for_tags({s.tag for s in after}), after, lab_dns)
    wrong = [t for t, sig in sigs_after.items() if sig["s"] != (new if sig["d"] == DOMAIN else old)]
    assert not wrong, f"signed with the wrong selector after the switch: {wrong[:10]}"
    total = len(before_retire) + len(after)
    assert total >= 40, f"only {total} messages flowed during the rotation"
    print(f"rotation: {total} messages, all verified; {len(after)} after the switch checkpoint")


def test_after_rotation_the_original_selector_signs_and_site_is_idempotent(converged: Any) -> None:
    """Runs after the test above restored the inventory and converged: the original state, and nothing to change."""
    lab = converged
    inv = Path(lab.inventory_dir)
    again = converge(inv)
    assert not again, f"site.yml after the rotation is not idempotent: {again}"
    entry = load_yaml(inv / "group_vars" / "all" / "pools.yml")["sender_domains"][DOMAIN]
    selector = entry.get("signing_selector", entry["selectors"][0])
    at_auth = txt_lookup(resolver(authoritative(inv)))
    assert carries(at_auth(f"{selector}._domainkey.{DOMAIN}"), inv / "dkim" / DOMAIN / f"{selector}.pem")
    assert sorted(p.stem for p in (inv / "dkim" / DOMAIN).glob("*.pem")) == sorted(entry["selectors"])
    state = load_yaml(inv / ".sendfleet" / "dns-published.json")  # what `sendfleet dns apply` manages (JSON)
    managed = {r["name"] for r in state["records"] if r["name"].endswith(f"._domainkey.{DOMAIN}")}
    assert managed == {f"{s}._domainkey.{DOMAIN}" for s in entry["selectors"]}, f"DKIM records left: {managed}"
    hosts = senders(inv)
    for host in hosts:
        keys = {k for k in host_keys(lab, host) if k.startswith(f"{DOMAIN}/")}
        assert keys == {f"{DOMAIN}/{s}" for s in entry["selectors"]}, f"{host}: {keys}"
    run = uuid.uuid4().hex[:8]
    sent = []
    for host, address in hosts.items():
        tag = f"rot-after-{run}-{host}"
        submit(address, [make_message(f"probe@{DOMAIN}", RECIPIENT, tag)])
        sent.append(Sent(tag, host, DOMAIN, 0.0, 0.0))
    sigs = verify(wait_for_tags({s.tag for s in sent}), sent, txt_lookup(resolver(lab.resolver)))
    assert {sig["s"] for sig in sigs.values()} == {selector}
