"""DNS on the lab: plan -> apply -> check all ok, re-apply changes nothing; removing an IP
changes SPF by a minimal diff; a new selector publishes exactly one TXT; a removed PTR is caught by the
gate and `dns check`, and the next run of playbooks/dns.yml repairs it.

The lab's Knot is the update server and its unbound the resolver (caches at most 2 s, see the lab's
zonedata). Tests that break a record restore it before they end.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.query
import dns.rcode
import dns.tsig
import dns.update
import pytest

from sendfleet import yamlfile
from sendfleet.core.inventory import Inventory
from sendfleet.inventory_io import load_inventory

from .conftest import REPO, LabHandle, sendfleet

ZONES_FILE = "scripts/sendfleet/zones/lab.yml"


def _json(*args: str, codes: tuple[int, ...] = (0,)) -> Any:
    proc = sendfleet(*args, check=False)
    assert proc.returncode in codes, f"sendfleet {' '.join(args)} exited {proc.returncode}: {proc.stderr}{proc.stdout}"
    return json.loads(proc.stdout)


def _playbook(inv: Path, *extra: str) -> dict[str, int]:
    proc = subprocess.run(
        [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inv), "playbooks/dns.yml", *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    recap = re.search(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+).*failed=(\d+)", proc.stdout)
    assert recap, proc.stdout[-2000:]
    return {"ok": int(recap[1]), "changed": int(recap[2]), "failed": int(recap[3])}


def _eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """The resolver may hold an answer for up to 2 s: poll (this is not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not true after {timeout:.0f} s: {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def fleet(lab: LabHandle) -> LabHandle:
    """The lab inventory with sending IPs (the main job's vet + assign steps when there are none yet),
    and its DNS published once by playbooks/dns.yml (which also creates missing DKIM keys)."""
    inv = lab.inventory_dir
    if not load_inventory(inv).sending_ips():
        for cidr, pool in (("198.51.100.64/27", "transactional"), ("198.51.100.96/27", "marketing")):
            proc = sendfleet(
                "vet",
                cidr,
                "--zones",
                ZONES_FILE,
                "--resolver",
                lab.resolver,
                "--admit",
                str(inv),
                "--pool",
                pool,
                "--format",
                "json",
                "--no-progress",
                check=False,
            )
            assert proc.returncode in (0, 1), proc.stderr
        sendfleet("pool", "assign", "-i", str(inv), "--pool", "transactional", "--per-host", "3")
        sendfleet("pool", "assign", "-i", str(inv), "--pool", "marketing", "--per-host", "2")
    assert load_inventory(inv).sending_ips()
    _playbook(inv)
    return lab


def test_plan_apply_check_all_ok_and_reapply_changes_nothing(fleet: LabHandle) -> None:
    inv = str(fleet.inventory_dir)
    plan = _json("dns", "plan", "-i", inv, "--format", "json")
    assert plan["problems"] == [] or all(p["status"] != "error" for p in plan["problems"])
    inventory = load_inventory(fleet.inventory_dir)
    ptrs = [r for r in plan["records"] if r["type"] == "PTR"]
    assert len(ptrs) == len(inventory.sending_ips()) and all(r["publish"] == "rfc2136" for r in ptrs)

    applied = _json("dns", "apply", "-i", inv, "--format", "json")
    assert applied["changed"] is False and applied["changes"] == []

    findings = _json("dns", "check", "-i", inv, "--format", "json")
    assert [f for f in findings if f["status"] != "ok"] == []
    fcrdns = {f["subject"] for f in findings if f["check"] == "fcrdns"}
    assert fcrdns == {str(s.ip) for s in inventory.sending_ips()}
    assert {f["subject"] for f in findings if f["check"] == "dkim"} == {
        f"{d.name}/{s}" for d in inventory.sender_domains.values() for s in d.selectors
    }

    gate = _json("dns", "gate", "-i", inv, "--format", "json")
    assert gate and all(g["passed"] and g["fcrdns"] for g in gate)

    assert _playbook(fleet.inventory_dir)["changed"] == 0
    assert _playbook(fleet.inventory_dir, "--check")["changed"] == 0


def _copy(inv: Path, dest: Path) -> Path:
    shutil.copytree(inv, dest, ignore=shutil.ignore_patterns(".ssh", "*.png"))
    return dest


def test_removing_an_ip_is_a_minimal_spf_diff_on_the_lab(fleet: LabHandle, tmp_path: Path) -> None:
    """A copy of the inventory without one IP, dry-run against the lab's Knot (the lab is not changed)."""
    inventory = load_inventory(fleet.inventory_dir)
    victim = inventory.sending_ips()[0]
    copy = _copy(fleet.inventory_dir, tmp_path / "inv")
    hv = copy / "host_vars" / f"{victim.host}.yml"
    data = yamlfile.load(hv)
    before = len(data["sending_ips"])
    data["sending_ips"] = [e for e in data["sending_ips"] if str(e["ip"]) != str(victim.ip)]
    assert len(data["sending_ips"]) == before - 1
    yamlfile.dump_atomic(hv, data)

    dry = _json("dns", "apply", "-i", str(copy), "--dry-run", "--format", "json")
    assert dry["changed"] is False
    # the SPF of the pool's sender domains, and of their bounce domains (the envelope senders' domains)
    spf = [c for c in dry["changes"] if c["purpose"] in ("spf", "spf-bounce")]
    domains = {d.name for d in inventory.domains_of_pool(victim.pool)}
    domains |= {d.bounce_domain for d in inventory.domains_of_pool(victim.pool) if d.bounce_domain}
    assert {c["name"] for c in spf} == domains
    for change in spf:
        assert change["delete_rrset"] is False and len(change["delete"]) == 1 and len(change["add"]) == 1
        assert str(victim.ip) in change["delete"][0] and str(victim.ip) not in change["add"][0]
    others = sorted((c["name"], c["type"]) for c in dry["changes"] if c["purpose"] not in ("spf", "spf-bounce"))
    assert others == sorted([(victim.ip.reverse_pointer, "PTR"), (victim.ptr, "A")])


def test_adding_a_selector_publishes_exactly_one_txt_on_the_lab(fleet: LabHandle, tmp_path: Path) -> None:
    copy = _copy(fleet.inventory_dir, tmp_path / "inv")
    inventory = load_inventory(copy)
    domain = next(iter(inventory.sender_domains.values()))
    pools = copy / "group_vars/all/pools.yml"
    data = yamlfile.load(pools)
    data["sender_domains"][domain.name]["selectors"].append("s2099z")
    yamlfile.dump_atomic(pools, data)
    key = copy / "dkim" / domain.name / "s2099z.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key)],
        check=True,
        capture_output=True,
    )
    dry = _json("dns", "apply", "-i", str(copy), "--dry-run", "--format", "json")
    assert [(c["name"], c["type"], len(c["add"]), c["delete"]) for c in dry["changes"]] == [
        (f"s2099z._domainkey.{domain.name}", "TXT", 1, [])
    ]


def test_removed_ptr_is_caught_and_the_next_run_repairs_it(fleet: LabHandle) -> None:
    inv = str(fleet.inventory_dir)
    inventory = load_inventory(fleet.inventory_dir)
    victim = inventory.sending_ips()[-1]
    _delete_ptr(inventory, str(victim.ip))
    try:

        def excluded() -> bool:
            gate = _json("dns", "gate", "-i", inv, "--host", victim.host, "--format", "json", codes=(0, 1))
            verdict = next(g for g in gate if g["ip"] == str(victim.ip))
            return verdict["passed"] is False and verdict["reasons"] == ["no PTR record"]

        _eventually(excluded, f"the gate leaves {victim.ip} out")
        findings = _json("dns", "check", "-i", inv, "--format", "json", codes=(1,))
        errors = {(f["subject"], f["check"]) for f in findings if f["status"] == "error"}
        assert errors == {(str(victim.ip), "ptr"), (str(victim.ip), "fcrdns")}
    finally:
        recap = _playbook(fleet.inventory_dir)
    assert recap["changed"] == 1

    def back() -> bool:
        gate = _json("dns", "gate", "-i", inv, "--host", victim.host, "--format", "json", codes=(0, 1))
        return all(g["passed"] for g in gate)

    _eventually(back, f"the gate lets {victim.ip} back in")
    assert _playbook(fleet.inventory_dir)["changed"] == 0


def _site(inv: Path, *extra: str) -> str:
    proc = subprocess.run(
        [str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inv), "site.yml", *extra],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return proc.stdout


def _delete_ptr(inventory: Inventory, ip: str) -> None:
    settings = inventory.dns_update
    assert settings is not None and settings.key is not None
    key = dns.tsig.Key(settings.key.name + ".", settings.key.secret, settings.key.algorithm + ".")
    rev = ipaddress.ip_address(ip).reverse_pointer
    zone = next(z for z in inventory.dns_zones if rev.endswith("." + z))
    upd = dns.update.UpdateMessage(zone + ".", keyring=key)
    upd.delete(rev + ".", "PTR")
    assert dns.query.tcp(upd, settings.server, port=settings.port, timeout=10).rcode() == dns.rcode.NOERROR


def test_site_leaves_out_an_ip_without_fcrdns_and_takes_it_back(converged: LabHandle) -> None:
    """The PTR of one IP disappears where dns.yml cannot repair it (localhost is outside --limit): site.yml
    leaves the IP out of its pool and says so; the next full run republishes the PTR and puts it back."""
    inv = converged.inventory_dir
    inventory = load_inventory(inv)
    victim = next(
        s
        for s in inventory.sending_ips()
        if sum(1 for o in inventory.hosts[s.host].sending_ips if o.pool == s.pool) >= 2
    )
    bind = f"smtp_bind_address={victim.ip}"
    assert bind in converged.ssh(victim.host, "cat /etc/postfix/master.cf").stdout
    _delete_ptr(inventory, str(victim.ip))
    try:

        def excluded() -> bool:
            gate = _json("dns", "gate", "-i", str(inv), "--host", victim.host, "--format", "json", codes=(0, 1))
            return any(g["ip"] == str(victim.ip) and not g["passed"] for g in gate)

        _eventually(excluded, f"the gate sees {victim.ip} without PTR")
        out = _site(inv, "--limit", victim.host)
        flat = " ".join(out.split())  # the callback may wrap long messages
        said = rf"{re.escape(str(victim.ip))} \(pool {victim.pool}[^)]*\) LEFT OUT of its pool: no PTR record"
        assert re.search(said, flat), out[-4000:]
        assert bind not in converged.ssh(victim.host, "cat /etc/postfix/master.cf").stdout
    finally:
        out = _site(inv, "--limit", f"{victim.host}:localhost")
    assert "LEFT OUT of its pool" not in out
    assert bind in converged.ssh(victim.host, "cat /etc/postfix/master.cf").stdout
