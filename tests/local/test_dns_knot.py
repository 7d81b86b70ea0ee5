"""`sendfleet dns apply/check/gate` against a real knotd started here on 127.0.0.1 (high port).

knotd is both the RFC 2136 update server (TSIG) and the resolver of the throwaway inventory. The fixture
starts exactly one knotd with subprocess.Popen and kills exactly that PID at teardown.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sendfleet.cli import main

KNOTD = "/usr/sbin/knotd"
ZONES = ("lab.test", "shop.test", "news.test", "100.51.198.in-addr.arpa")
KEY_NAME = "sendfleet-test"
APEX_OTHER_TXT = "google-site-verification=keep-me"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Knot:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.secret = base64.b64encode(os.urandom(32)).decode()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        zones = self.root / "zones"
        zones.mkdir(parents=True)
        (self.root / "db").mkdir()
        for zone in ZONES:
            extra = f'@ TXT "{APEX_OTHER_TXT}"\n' if zone == "shop.test" else ""
            (zones / f"{zone}.zone").write_text(
                f"$ORIGIN {zone}.\n$TTL 5\n@ SOA ns.lab.test. hostmaster.lab.test. 1 60 30 3600 5\n"
                f"@ NS ns.lab.test.\n{extra}" + ("ns A 127.0.0.1\n" if zone == "lab.test" else "")
            )
        conf = self.root / "knot.conf"
        conf.write_text(
            f"""server:
    rundir: "{self.root}"
    listen: 127.0.0.1@{self.port}
log:
  - target: stderr
    any: info
database:
    storage: "{self.root}/db"
key:
  - id: {KEY_NAME}
    algorithm: hmac-sha256
    secret: {self.secret}
acl:
  - id: update
    key: {KEY_NAME}
    action: update
template:
  - id: default
    storage: "{zones}"
    file: "%s.zone"
    acl: update
    semantic-checks: off
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
    serial-policy: unixtime
zone:
"""
            + "".join(f"  - domain: {z}\n" for z in ZONES)
        )
        self.log = (self.root / "knotd.log").open("wb")
        self.proc = subprocess.Popen([KNOTD, "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"knotd exited: {(self.root / 'knotd.log').read_text()}")
            try:
                q = dns.message.make_query("shop.test.", "SOA")
                r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=0.5)
                if r.rcode() == dns.rcode.NOERROR and r.answer:
                    return
            except (OSError, dns.exception.Timeout):
                pass
            time.sleep(0.1)
        raise RuntimeError("knotd did not answer within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def query(self, name: str, rdtype: str) -> list[str]:
        q = dns.message.make_query(name + ".", rdtype)
        r = dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=5)
        out = []
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.from_text(rdtype):
                for rd in rrset:
                    if rdtype == "TXT":
                        out.append(b"".join(rd.strings).decode())
                    else:
                        out.append(rd.to_text())
        return sorted(out)

    def update(self, zone: str, build: Any) -> None:
        upd = dns.update.UpdateMessage(zone + ".", keyring=dns.tsig.Key(KEY_NAME + ".", self.secret, "hmac-sha256."))
        build(upd)
        r = dns.query.tcp(upd, "127.0.0.1", port=self.port, timeout=5)
        assert r.rcode() == dns.rcode.NOERROR


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Knot]:
    assert Path(KNOTD).exists(), f"{KNOTD} is missing: install knot (apt-get install knot)"
    server = Knot(tmp_path_factory.mktemp("knot"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _key(path: Path, bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)
    path.parent.chmod(0o700)  # as the opendkim role keeps them
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


MTA1_IPS = """sending_ips:
  - {ip: 198.51.100.70, pool: transactional, ptr: o70.mta1.lab.test, warmup_start: 2026-11-27}
  - {ip: 198.51.100.72, pool: marketing, ptr: o72.mta1.lab.test}
"""
MTA2_IPS = """sending_ips:
  - {ip: 198.51.100.73, pool: transactional, ptr: o73.mta2.lab.test}
  - {ip: 198.51.100.74, pool: transactional, ptr: o74.mta2.lab.test}
"""


@pytest.fixture
def inventory(tmp_path: Path, knot: Knot) -> Iterator[Path]:
    """A fresh inventory; the knot zones are reset to empty afterwards by deleting what we published."""
    inv = tmp_path / "inv"
    _write(inv / "hosts.yml", "all:\n  children:\n    senders:\n      hosts:\n        mta1:\n        mta2:\n")
    _write(
        inv / "group_vars/all/pools.yml",
        """pools: {transactional: {}, marketing: {}}
sender_domains:
  shop.test: {pool: transactional, selectors: [s2026a], dmarc: {p: none, rua: "mailto:dmarc@shop.test"}}
  news.test: {pool: marketing, selectors: [s2026a], dmarc: {p: quarantine, rua: "mailto:dmarc@news.test"}}
dns_ttl: 300
""",
    )
    _write(
        inv / "group_vars/all/dns_update.yml",
        f"""dns_update_server: 127.0.0.1
dns_update_port: {knot.port}
dns_tsig_key_name: {KEY_NAME}
dns_tsig_algorithm: hmac-sha256
dns_tsig_secret: {knot.secret}
dns_zones: [{", ".join(ZONES)}]
dns_resolver: 127.0.0.1
dns_resolver_port: {knot.port}
""",
    )
    _write(
        inv / "group_vars/all/site.yml",
        "host_domain: lab.test\nadmin_networks: [198.51.100.0/28]\nsending_ips_require_vetted: false\n",
    )
    _write(inv / "host_vars/mta1.yml", MTA1_IPS)
    _write(inv / "host_vars/mta2.yml", MTA2_IPS)
    _key(inv / "dkim/shop.test/s2026a.pem")
    _key(inv / "dkim/news.test/s2026a.pem")
    yield inv
    # leave the zones as we found them: drop every sendfleet name (no sending IPs, no domains)
    _write(inv / "host_vars/mta1.yml", "sending_ips: []\n")
    _write(inv / "host_vars/mta2.yml", "sending_ips: []\n")
    _write(inv / "group_vars/all/pools.yml", "pools: {transactional: {}, marketing: {}}\n")
    assert main(["dns", "apply", "-i", str(inv)]) == 0
    shutil.rmtree(inv)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr().out
    try:
        return code, json.loads(out)
    except ValueError:
        return code, out


def test_apply_publishes_then_changes_nothing(inventory: Path, knot: Knot, capsys: pytest.CaptureFixture[str]) -> None:
    code, first = run(capsys, "dns", "apply", "-i", str(inventory), "--format", "json")
    assert code == 0 and first["changed"] is True
    assert knot.query("70.100.51.198.in-addr.arpa", "PTR") == ["o70.mta1.lab.test."]
    assert knot.query("o74.mta2.lab.test", "A") == ["198.51.100.74"]
    spf = [t for t in knot.query("shop.test", "TXT") if t.startswith("v=spf1")]
    assert spf == ["v=spf1 ip4:198.51.100.70 ip4:198.51.100.73 ip4:198.51.100.74 ~all"]
    assert APEX_OTHER_TXT in knot.query("shop.test", "TXT")  # not ours: untouched
    dkim = knot.query("s2026a._domainkey.shop.test", "TXT")
    assert len(dkim) == 1 and dkim[0].startswith("v=DKIM1; k=rsa; p=MIIB")
    assert knot.query("_dmarc.news.test", "TXT") == [
        "v=DMARC1; p=quarantine; rua=mailto:dmarc@news.test; adkim=r; aspf=r"
    ]

    code, again = run(capsys, "dns", "apply", "-i", str(inventory), "--format", "json")
    assert code == 0
    assert again["changed"] is False and again["changes"] == []
    code, dry = run(capsys, "dns", "apply", "-i", str(inventory), "--dry-run")
    assert code == 0 and dry.startswith("no changes")


def test_check_all_ok_after_apply(inventory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, before = run(capsys, "dns", "check", "-i", str(inventory), "--format", "json")
    assert code == 1 and any(f["status"] == "error" and f["check"] == "fcrdns" for f in before)
    assert run(capsys, "dns", "apply", "-i", str(inventory))[0] == 0
    code, findings = run(capsys, "dns", "check", "-i", str(inventory), "--format", "json")
    assert [f for f in findings if f["status"] != "ok"] == []
    assert code == 0
    checks = {f["check"] for f in findings}
    assert {"ptr", "address", "spf", "dkim", "dmarc", "fcrdns"} <= checks
    code, gate = run(capsys, "dns", "gate", "-i", str(inventory), "--format", "json")
    assert code == 0
    assert sorted(g["ip"] for g in gate) == [
        "198.51.100.70",
        "198.51.100.72",
        "198.51.100.73",
        "198.51.100.74",
    ]
    assert all(g["passed"] and g["reasons"] == [] for g in gate)
    code, one = run(capsys, "dns", "gate", "-i", str(inventory), "--host", "mta2", "--format", "json")
    assert [g["ip"] for g in one] == ["198.51.100.73", "198.51.100.74"]
    assert one[0] == {
        "ip": "198.51.100.73",
        "host": "mta2",
        "pool": "transactional",
        "ptr": "o73.mta2.lab.test",
        "helo": "o73.mta2.lab.test",
        "passed": True,
        "fcrdns": True,
        "mode": "enforce",
        "reasons": [],
    }


def test_removing_an_ip_changes_spf_minimally(inventory: Path, knot: Knot, capsys: pytest.CaptureFixture[str]) -> None:
    # o74's name is also a host's own name: its other address is not sendfleet's
    knot.update("lab.test", lambda u: u.add("o74.mta2.lab.test.", 300, "A", "198.51.100.11"))
    assert run(capsys, "dns", "apply", "-i", str(inventory))[0] == 0
    assert knot.query("o74.mta2.lab.test", "A") == ["198.51.100.11", "198.51.100.74"]
    _write(
        inventory / "host_vars/mta2.yml",
        MTA2_IPS.replace("  - {ip: 198.51.100.74, pool: transactional, ptr: o74.mta2.lab.test}\n", ""),
    )
    code, dry = run(capsys, "dns", "apply", "-i", str(inventory), "--dry-run", "--format", "json")
    assert code == 0 and dry["changed"] is False
    by_purpose = {c["purpose"]: c for c in dry["changes"]}
    spf = by_purpose["spf"]
    assert spf["name"] == "shop.test" and spf["delete_rrset"] is False
    assert spf["delete"] == ["v=spf1 ip4:198.51.100.70 ip4:198.51.100.73 ip4:198.51.100.74 ~all"]
    assert spf["add"] == ["v=spf1 ip4:198.51.100.70 ip4:198.51.100.73 ~all"]
    # besides SPF only the removed IP's own PTR and A go; nothing else is touched
    others = sorted((c["name"], c["type"]) for c in dry["changes"] if c is not spf)
    assert others == [("74.100.51.198.in-addr.arpa", "PTR"), ("o74.mta2.lab.test", "A")]
    assert knot.query("74.100.51.198.in-addr.arpa", "PTR") == ["o74.mta2.lab.test."]  # dry run sent nothing

    code, applied = run(capsys, "dns", "apply", "-i", str(inventory), "--format", "json")
    assert applied["changed"] is True
    assert [t for t in knot.query("shop.test", "TXT") if t.startswith("v=spf1")] == [
        "v=spf1 ip4:198.51.100.70 ip4:198.51.100.73 ~all"
    ]
    assert APEX_OTHER_TXT in knot.query("shop.test", "TXT")
    assert knot.query("74.100.51.198.in-addr.arpa", "PTR") == []
    assert knot.query("o74.mta2.lab.test", "A") == ["198.51.100.11"]  # only our address went
    knot.update("lab.test", lambda u: u.delete("o74.mta2.lab.test.", "A"))
    assert run(capsys, "dns", "apply", "-i", str(inventory), "--format", "json")[1]["changed"] is False


def test_adding_a_selector_publishes_one_txt(inventory: Path, knot: Knot, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "dns", "apply", "-i", str(inventory))[0] == 0
    pools = inventory / "group_vars/all/pools.yml"
    pools.write_text(
        pools.read_text().replace(
            "selectors: [s2026a], dmarc: {p: none", "selectors: [s2026a, s2026b], dmarc: {p: none"
        )
    )
    p = _key(inventory / "dkim/shop.test/s2026b.pem")
    code, result = run(capsys, "dns", "apply", "-i", str(inventory), "--format", "json")
    assert code == 0 and result["changed"] is True
    assert result["changes"] == [
        {
            "zone": "shop.test",
            "name": "s2026b._domainkey.shop.test",
            "type": "TXT",
            "ttl": 300,
            "delete": [],
            "add": [f"v=DKIM1; k=rsa; p={p}"],
            "delete_rrset": False,
            "purpose": "dkim",
            "subject": "shop.test/s2026b",
        }
    ]
    assert knot.query("s2026b._domainkey.shop.test", "TXT") == [f"v=DKIM1; k=rsa; p={p}"]


def test_missing_key_is_reported_and_nothing_is_invented(
    inventory: Path, knot: Knot, capsys: pytest.CaptureFixture[str]
) -> None:
    (inventory / "dkim/news.test/s2026a.pem").unlink()
    code, plan = run(capsys, "dns", "plan", "-i", str(inventory), "--format", "json")
    assert code == 1
    rec = next(r for r in plan["records"] if r["name"] == "s2026a._domainkey.news.test")
    assert rec["values"] == [] and "missing" in rec["error"]
    code, result = run(capsys, "dns", "apply", "-i", str(inventory), "--format", "json")
    assert code == 0
    assert "s2026a._domainkey.news.test" not in {c["name"] for c in result["changes"]}
    assert knot.query("s2026a._domainkey.news.test", "TXT") == []
    assert any(p["check"] == "dkim" and p["status"] == "error" for p in result["problems"])


def test_check_and_gate_detect_removed_and_wrong_ptr(
    inventory: Path, knot: Knot, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "dns", "apply", "-i", str(inventory))[0] == 0
    zone = "100.51.198.in-addr.arpa"
    knot.update(zone, lambda u: u.delete("70.100.51.198.in-addr.arpa.", "PTR"))
    # .73 now points at a name that does not resolve back to it
    knot.update(zone, lambda u: u.replace("73.100.51.198.in-addr.arpa.", 300, "PTR", "o99.mta2.lab.test."))

    code, findings = run(capsys, "dns", "check", "-i", str(inventory), "--format", "json")
    assert code == 1
    errors = {(f["subject"], f["check"]): f["message"] for f in findings if f["status"] == "error"}
    assert "no PTR record" in errors[("198.51.100.70", "fcrdns")]
    assert "o99.mta2.lab.test has no A record" in errors[("198.51.100.73", "fcrdns")]
    assert "differs from the HELO name o73.mta2.lab.test" in errors[("198.51.100.73", "fcrdns")]
    assert "not published" in errors[("198.51.100.70", "ptr")]
    assert "differs from the plan" in errors[("198.51.100.73", "ptr")]
    assert ("198.51.100.72", "fcrdns") not in errors

    code, gate = run(capsys, "dns", "gate", "-i", str(inventory), "--format", "json")
    assert code == 1
    verdict = {g["ip"]: g for g in gate}
    assert verdict["198.51.100.70"]["passed"] is False and verdict["198.51.100.70"]["ptr"] is None
    assert verdict["198.51.100.73"]["passed"] is False and verdict["198.51.100.73"]["ptr"] == "o99.mta2.lab.test"
    assert verdict["198.51.100.72"]["passed"] is True

    _write(inventory / "group_vars/all/gate.yml", "rdns_gate: warn\n")
    code, warned = run(capsys, "dns", "gate", "-i", str(inventory), "--format", "json")
    assert code == 0
    w = {g["ip"]: g for g in warned}
    assert w["198.51.100.70"]["passed"] is True and w["198.51.100.70"]["fcrdns"] is False
    assert w["198.51.100.70"]["reasons"] == ["no PTR record"] and w["198.51.100.70"]["mode"] == "warn"

    # the next apply repairs both PTRs, and the gate passes them again
    code, fixed = run(capsys, "dns", "apply", "-i", str(inventory), "--format", "json")
    assert sorted(c["name"] for c in fixed["changes"]) == [
        "70.100.51.198.in-addr.arpa",
        "73.100.51.198.in-addr.arpa",
    ]
    code, gate = run(capsys, "dns", "gate", "-i", str(inventory), "--format", "json")
    assert code == 0 and all(g["fcrdns"] for g in gate)


def test_bad_tsig_secret_cannot_apply(inventory: Path, knot: Knot, capsys: pytest.CaptureFixture[str]) -> None:
    conf = inventory / "group_vars/all/dns_update.yml"
    wrong = base64.b64encode(b"x" * 32).decode()
    conf.write_text(conf.read_text().replace(knot.secret, wrong))
    code, _ = run(capsys, "dns", "apply", "-i", str(inventory))
    assert code == 3
    assert knot.query("70.100.51.198.in-addr.arpa", "PTR") == []
    conf.write_text(conf.read_text().replace(wrong, knot.secret))


def test_silent_resolver_is_exit_3(inventory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = inventory / "group_vars/all/dns_update.yml"
    silent = _free_port()
    text = conf.read_text()
    conf.write_text(text.replace("dns_resolver_port:", f"dns_resolver_port: {silent}\n# was:"))
    assert run(capsys, "dns", "apply", "-i", str(inventory))[0] == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:  # bound, never answers
        sink.bind(("127.0.0.1", silent))
        code, _ = run(capsys, "dns", "gate", "-i", str(inventory), "--host", "mta1", "--format", "json")
        assert code == 3
        # the update server itself still answers: what was published can be checked there
        code, findings = run(capsys, "dns", "check", "-i", str(inventory), "--authoritative", "--format", "json")
    assert code == 0 and findings and all(f["status"] == "ok" for f in findings)
    conf.write_text(text)


def test_a_big_fleet_is_sent_in_several_updates(
    inventory: Path, knot: Knot, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """250 IPs: 500 RRsets, split into several UPDATE messages per zone (the limit is lowered here so that
    this size splits); a second run changes nothing."""
    from sendfleet.dns import update

    sent: list[int] = []
    real_tcp = update.dns.query.tcp

    def counting_tcp(msg: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(len(msg.to_wire()) if hasattr(msg, "update") else 0)
        return real_tcp(msg, *args, **kwargs)

    monkeypatch.setattr(update.dns.query, "tcp", counting_tcp)
    monkeypatch.setattr(update, "MAX_UPDATE_BYTES", 4000)  # 250 changes compress to ~6 KB: force splitting
    many = "".join(f"  - {{ip: 198.51.100.{i}, pool: transactional, ptr: o{i}.mta2.lab.test}}\n" for i in range(1, 251))
    _write(inventory / "host_vars/mta1.yml", "sending_ips: []\n")
    _write(inventory / "host_vars/mta2.yml", "sending_ips:\n" + many)
    code, result = run(capsys, "dns", "apply", "-i", str(inventory), "--format", "json")
    assert code == 0 and len(result["changes"]) >= 500
    assert len([n for n in sent if n]) > len(result["zones"])  # more messages than zones
    assert max(sent) < 65535
    assert knot.query("250.100.51.198.in-addr.arpa", "PTR") == ["o250.mta2.lab.test."]
    assert knot.query("o1.mta2.lab.test", "A") == ["198.51.100.1"]
    assert run(capsys, "dns", "apply", "-i", str(inventory), "--format", "json")[1]["changed"] is False


def _playbook(inventory: Path, *extra: str) -> tuple[int, str]:
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [str(repo / ".venv/bin/ansible-playbook"), "-i", str(inventory), "playbooks/dns.yml", *extra],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    recap = re.search(r"localhost\s+:\s+ok=\d+\s+changed=(\d+)", proc.stdout)
    assert recap, proc.stdout[-2000:]
    return int(recap[1]), proc.stdout


def test_playbook_publishes_once_then_reports_no_change(inventory: Path, knot: Knot) -> None:
    # --check: says what would change, sends nothing
    changed, out = _playbook(inventory, "--check")
    assert changed == 1 and "+ 70.100.51.198.in-addr.arpa. 300 PTR o70.mta1.lab.test." in out
    assert knot.query("70.100.51.198.in-addr.arpa", "PTR") == []
    changed, _ = _playbook(inventory)
    assert changed == 1
    assert knot.query("70.100.51.198.in-addr.arpa", "PTR") == ["o70.mta1.lab.test."]
    assert _playbook(inventory)[0] == 0
    assert _playbook(inventory, "--check")[0] == 0
    # a missing key is created on the controller first (the opendkim role's task), then published at once
    (inventory / "dkim/news.test/s2026a.pem").unlink()
    changed, _ = _playbook(inventory)
    assert changed >= 1 and (inventory / "dkim/news.test/s2026a.pem").stat().st_mode & 0o777 == 0o600
    assert len(knot.query("s2026a._domainkey.news.test", "TXT")) == 1
    assert _playbook(inventory)[0] == 0
