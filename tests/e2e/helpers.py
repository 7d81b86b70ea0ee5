"""Helpers of the end-to-end tests: run readiness and the infra suite as a user would, break one thing on
one lab host (mta3) and put it back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.tsig
import dns.update

from sendfleet.core.inventory import Inventory, zone_for
from sendfleet.inventory_io import load_inventory

REPO = Path(__file__).resolve().parents[2]
#: The lab's resolver caches for at most 2 s (cache-max-ttl), negative answers 1 s: wait this long after
#: a DNS change before asking through it.
RESOLVER_CACHE_SECONDS = 3.5


def inventory(inv_dir: Path) -> Inventory:
    return load_inventory(inv_dir if inv_dir.is_absolute() else REPO / inv_dir)


def run_infra(inv_dir: Path, hosts: str, select: str) -> subprocess.CompletedProcess[str]:
    """The infra suite as CI runs it, limited to `hosts` and the tests matching `select` (-k)."""
    cmd = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-q", "--tb=short",
        "tests/infra", f"--hosts={hosts}", f"--ansible-inventory={inv_dir}", "-k", select,
    ]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)


def run_readiness(inv_dir: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    """`sendfleet readiness --format json`: (exit code, report, stderr)."""
    cmd = [sys.executable, "-m", "sendfleet", "readiness", "-i", str(inv_dir), "--format", "json", *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        out = proc.stderr + proc.stdout
        raise AssertionError(f"readiness printed no JSON (exit {proc.returncode}): {out}") from None
    return proc.returncode, report, proc.stderr


def not_passing(report: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["host"], r["ip"], r["domain"]): r for r in report["rows"] if r["verdict"] != "pass"}


def describe(report: dict[str, Any]) -> str:
    return "\n".join(
        f"{r['host']} {r['ip']} {r['domain']}: {r['verdict']} {'; '.join(r['problems'])}" for r in report["rows"]
    )


def expected_rows(inv: Inventory) -> set[tuple[str, str, str]]:
    """Every (host, sending IP, sender domain of its pool) of the inventory."""
    return {
        (s.host, str(s.ip), d.name)
        for s in inv.sending_ips()
        for d in inv.sender_domains.values()
        if d.pool == s.pool
    }


# ------------------------------------------------------------------------------------ DNS changes


class LabDns:
    """RFC 2136 updates to the lab's authoritative server with the inventory's TSIG key."""

    def __init__(self, inv: Inventory) -> None:
        settings = inv.dns_update
        assert settings is not None and settings.key is not None, "the lab inventory has no dns_update key"
        self.server, self.port = settings.server, settings.port
        self.keyring = {
            dns.name.from_text(settings.key.name): dns.tsig.Key(
                settings.key.name, settings.key.secret, settings.key.algorithm
            )
        }
        self.key_name = dns.name.from_text(settings.key.name)
        self.zones = inv.dns_zones

    def zone(self, name: str) -> str:
        zone = zone_for(name, self.zones)
        assert zone is not None, f"{name}: in no zone of dns_zones {self.zones}"
        return zone

    def query(self, name: str, rdtype: str) -> tuple[int, list[dns.rdata.Rdata]]:
        """(TTL, rdatas) straight from the authoritative server."""
        q = dns.message.make_query(name.rstrip(".") + ".", rdtype)
        resp = dns.query.udp(q, self.server, port=self.port, timeout=5)
        for rrset in resp.answer:
            if rrset.rdtype == dns.rdatatype.from_text(rdtype):
                return rrset.ttl, list(rrset)
        return 0, []

    def _send(self, name: str, build: Any) -> None:
        upd = dns.update.UpdateMessage(
            self.zone(name), keyring=self.keyring, keyname=self.key_name
        )
        build(upd)
        resp = dns.query.tcp(upd, self.server, port=self.port, timeout=10)
        assert resp.rcode() == 0, f"DNS update of {name} refused: {dns.rcode.to_text(resp.rcode())}"

    def delete(self, name: str, rdtype: str) -> None:
        self._send(name, lambda u: u.delete(name + ".", rdtype))

    def replace(self, name: str, ttl: int, rdatas: list[dns.rdata.Rdata]) -> None:
        def build(u: Any) -> None:
            u.delete(name + ".", rdatas[0].rdtype)
            for rd in rdatas:
                u.add(name + ".", ttl, rd)

        self._send(name, build)


def txt(value: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, '"' + value.replace('"', '\\"') + '"')


def reverse_name(ip: str) -> str:
    return dns.reversename.from_address(ip).to_text(omit_final_dot=True)


@contextmanager
def dns_changed(lab_dns: LabDns, name: str, rdtype: str, new: list[dns.rdata.Rdata] | None) -> Iterator[None]:
    """Replace (new) or delete (None) an RRset at the authoritative server; restore it exactly afterwards."""
    ttl, original = lab_dns.query(name, rdtype)
    assert original, f"{name} {rdtype}: nothing published to change"
    try:
        if new is None:
            lab_dns.delete(name, rdtype)
        else:
            lab_dns.replace(name, ttl, new)
        time.sleep(RESOLVER_CACHE_SECONDS)
        yield
    finally:
        lab_dns.replace(name, ttl, original)
        time.sleep(RESOLVER_CACHE_SECONDS)
