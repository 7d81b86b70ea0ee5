"""Publish a plan by RFC 2136 dynamic update signed with TSIG, sending only what differs.

Steps: ask the authoritative server what it holds at every planned name (and at every name published
before and no longer planned), diff (sendfleet.core.dnsdiff), send one UPDATE per zone, then remember
what sendfleet now manages in <inventory>/.sendfleet/dns-published.json (so a record dropped from the
inventory is deleted next time; Ansible ignores hidden folders in inventory directories).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.update

from sendfleet.core.dnsdiff import (
    SHARED_TYPES,
    Change,
    ManagedKey,
    diff,
    managed_key,
    normalize,
    presentation,
    prune_keys,
)
from sendfleet.core.inventory import DnsUpdateSettings, Inventory
from sendfleet.core.records import Plan
from sendfleet.dns.resolve import Authoritative, tsig_key
from sendfleet.errors import CannotCheckError, UsageError
from sendfleet.yamlfile import write_atomic

STATE_FILE = Path(".sendfleet") / "dns-published.json"
MAX_UPDATE_BYTES = 30000  # an UPDATE message carries at most 64 KB: split bigger ones (per zone)


@dataclass
class ApplyResult:
    changes: list[Change]
    sent: bool  # the changes were sent (not a dry run, and there were some)
    zones: list[str] = field(default_factory=list)


def state_path(inv: Inventory) -> Path:
    return inv.path / STATE_FILE


@dataclass
class State:
    """What sendfleet published before: the keys it manages, and its addresses at each A/AAAA name."""

    keys: list[ManagedKey] = field(default_factory=list)
    addresses: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)


def read_state(inv: Inventory) -> State:
    path = state_path(inv)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        state = State()
        for r in data["records"]:
            key = ManagedKey(r["zone"], r["name"], r["type"], r.get("match", ""))
            state.keys.append(key)
            if r.get("values"):
                state.addresses[(key.name, key.rtype)] = frozenset(str(v) for v in r["values"])
        return state
    except FileNotFoundError:
        return State()
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path}: unreadable state of published records ({err}); delete it to start over") from None


def write_state(inv: Inventory, state: State) -> None:
    records = []
    for key in sorted(set(state.keys)):
        entry: dict[str, object] = dict(key.as_dict())
        values = state.addresses.get((key.name, key.rtype))
        if values:
            entry["values"] = sorted(values)
        records.append(entry)
    text = json.dumps({"version": 1, "records": records}, indent=1) + "\n"
    path = state_path(inv)
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    write_atomic(path, text, mode=0o644)


def _settings(inv: Inventory) -> DnsUpdateSettings:
    if inv.dns_update is None:
        raise UsageError(f"{inv.path}: dns_update_server is not set: nothing to apply to (use 'sendfleet dns plan')")
    if inv.dns_update.key is None:
        raise UsageError(f"{inv.path}: dns_tsig_key_name/dns_tsig_secret are not set: updates must be signed")
    if not inv.dns_zones:
        raise UsageError(f"{inv.path}: dns_zones is empty: no zone to publish in")
    return inv.dns_update


def compute_changes(inv: Inventory, plan: Plan) -> tuple[list[Change], State]:
    """The diff against the authoritative server, and what sendfleet will manage once it is applied."""
    settings = _settings(inv)
    previously = read_state(inv)
    publishable = plan.publishable()
    prune = [k for k in prune_keys(plan.records, previously.keys) if k.zone in inv.dns_zones]
    wanted = {r.key for r in publishable} | {(k.name, k.rtype) for k in prune}
    with Authoritative(settings.server, settings.port, settings.key) as auth:
        current = auth.current(wanted)
    changes = diff(publishable, current, prune, previously.addresses)
    errored = {(r.name, r.rtype) for r in plan.records if r.error is not None}
    after = State()
    after.keys = [managed_key(r) for r in publishable] + [k for k in previously.keys if (k.name, k.rtype) in errored]
    for rec in publishable:
        if rec.rtype in SHARED_TYPES:
            after.addresses[rec.key] = frozenset(normalize(rec.rtype, v) for v in rec.values)
    for key in after.keys:
        if (key.name, key.rtype) in errored and (key.name, key.rtype) in previously.addresses:
            after.addresses[(key.name, key.rtype)] = previously.addresses[(key.name, key.rtype)]
    return changes, after


def send(settings: DnsUpdateSettings, changes: Sequence[Change]) -> list[str]:
    """Signed UPDATEs, one per zone (more when a zone's changes exceed MAX_UPDATE_BYTES);
    CannotCheckError if the server refuses. Returns the zones updated."""
    assert settings.key is not None
    key = tsig_key(settings.key)
    zones: dict[str, list[Change]] = {}
    for change in changes:
        zones.setdefault(change.zone, []).append(change)
    batches: list[tuple[str, list[Change]]] = []
    for zone, zchanges in zones.items():
        size = MAX_UPDATE_BYTES
        for change in zchanges:
            cost = sum(len(change.name) + len(v) + 24 for v in (*change.delete, *change.add)) + len(change.name) + 24
            if size + cost > MAX_UPDATE_BYTES:
                batches.append((zone, []))
                size = 0
            batches[-1][1].append(change)
            size += cost
    for zone, zchanges in batches:
        upd = dns.update.UpdateMessage(zone + ".", keyring=key)
        for ch in zchanges:
            name = dns.name.from_text(ch.name + ".")
            rdtype = dns.rdatatype.from_text(ch.rtype)
            if ch.delete_rrset:
                upd.delete(name, rdtype)
            else:
                for value in ch.delete:
                    upd.delete(name, _rdata(ch.rtype, value))
            if ch.add:
                upd.add(name, ch.ttl, *(_rdata(ch.rtype, v) for v in ch.add))
        try:
            response = dns.query.tcp(upd, settings.server, port=settings.port, timeout=15)
        except (OSError, EOFError, dns.exception.DNSException) as err:
            raise CannotCheckError(
                f"update of zone {zone} at {settings.server} port {settings.port} failed: {err or type(err).__name__}"
            ) from None
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise CannotCheckError(
                f"update of zone {zone} at {settings.server} port {settings.port} refused:"
                f" {dns.rcode.to_text(rcode)}"
                " (check dns_zones, the TSIG key and the server's update ACL)"
            )
    return sorted(zones)


def _rdata(rtype: str, value: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), presentation(rtype, value))


def apply(inv: Inventory, plan: Plan, *, dry_run: bool = False) -> ApplyResult:
    changes, after = compute_changes(inv, plan)
    if dry_run:
        return ApplyResult(changes, sent=False)
    try:
        zones = send(_settings(inv), changes) if changes else []
    except CannotCheckError:
        # some zones may be updated: remember both what was managed and what is now, so nothing is orphaned
        previously = read_state(inv)
        after.keys = sorted(set(after.keys) | set(previously.keys))
        for name_type, values in previously.addresses.items():
            after.addresses[name_type] = after.addresses.get(name_type, frozenset()) | values
        write_state(inv, after)
        raise
    write_state(inv, after)
    return ApplyResult(changes, sent=bool(changes), zones=zones)
