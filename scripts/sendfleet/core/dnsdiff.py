"""What to send to the authoritative server so that it holds the plan: the minimal diff (pure).

Whole RRsets are owned for PTR, DKIM, DMARC, MTA-STS and TLS-RPT names. At a sender domain's apex only the
`v=spf1` TXT value is owned: other TXT values there (site verifications...) are never touched. At an A/AAAA
name only the addresses sendfleet plans or published before are: a PTR name may be a host's own name.
Records sendfleet published earlier and no longer plans (the state in the inventory, see
`sendfleet.dns.update`) are deleted, never anything else.

Drift (`drifted`, the monitoring host's check) is the same comparison: a record drifted when `diff` would
change it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sendfleet.core.inventory import normalize_name
from sendfleet.core.lookup import Lookup
from sendfleet.core.records import PlannedRecord, txt_presentation


@dataclass(frozen=True)
class Current:
    """An RRset as the authoritative server holds it now (values normalised, TXT joined)."""

    ttl: int | None
    values: tuple[str, ...]


@dataclass(frozen=True, order=True)
class ManagedKey:
    zone: str
    name: str
    rtype: str
    match: str  # "" = whole RRset

    def as_dict(self) -> dict[str, str]:
        return {"zone": self.zone, "name": self.name, "type": self.rtype, "match": self.match}


@dataclass(frozen=True)
class Change:
    zone: str
    name: str
    rtype: str
    ttl: int
    delete: tuple[str, ...]  # values removed
    add: tuple[str, ...]  # values added
    delete_rrset: bool  # the whole RRset is deleted first (TTL change, or a record no longer planned)
    purpose: str
    subject: str

    def lines(self) -> list[str]:
        out = []
        if self.delete_rrset and not self.delete:
            out.append(f"- {self.name}. {self.rtype} (whole RRset)")
        out += [f"- {self.name}. {self.rtype} {presentation(self.rtype, v)}" for v in self.delete]
        out += [f"+ {self.name}. {self.ttl} {self.rtype} {presentation(self.rtype, v)}" for v in self.add]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "name": self.name,
            "type": self.rtype,
            "ttl": self.ttl,
            "delete": list(self.delete),
            "add": list(self.add),
            "delete_rrset": self.delete_rrset,
            "purpose": self.purpose,
            "subject": self.subject,
        }


SHARED_TYPES = ("A", "AAAA")  # only the values sendfleet published are its own


def presentation(rtype: str, value: str) -> str:
    if rtype == "TXT":
        return txt_presentation(value)
    if rtype in ("PTR", "CNAME", "NS"):
        return f"{value}."
    if rtype == "MX":
        pref, _, host = value.strip().partition(" ")
        return f"{pref} {host.strip().rstrip('.')}."
    return value


def normalize(rtype: str, value: str) -> str:
    if rtype in ("A", "AAAA"):
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            return value.strip()
    if rtype in ("PTR", "CNAME", "NS"):
        return normalize_name(value)
    if rtype == "MX":
        pref, _, host = value.strip().partition(" ")
        return f"{pref} {normalize_name(host)}"
    return value


def owned(value: str, match: str | None) -> bool:
    if match is None:
        return True
    low, m = value.lower(), match.lower()
    return low == m or low.startswith(m + " ")


def managed_key(rec: PlannedRecord) -> ManagedKey:
    return ManagedKey(rec.zone or "", rec.name, rec.rtype, rec.match or "")


def diff(
    records: Sequence[PlannedRecord],
    current: Mapping[tuple[str, str], Current],
    prune: Iterable[ManagedKey] = (),
    published: Mapping[tuple[str, str], frozenset[str]] | None = None,
) -> list[Change]:
    """Changes turning `current` into the plan. `records`: the publishable ones; `prune`: keys to delete;
    `published`: the addresses sendfleet published before at each A/AAAA name (the only ones it may remove
    there: a PTR name may also be a host's own name with addresses sendfleet knows nothing about)."""
    published = published or {}
    changes: list[Change] = []
    for rec in records:
        if not rec.publishable or rec.zone is None:
            continue
        cur = current.get(rec.key, Current(None, ()))
        want = [normalize(rec.rtype, v) for v in rec.values]
        have = [normalize(rec.rtype, v) for v in cur.values if owned(v, rec.match)]
        foreign = False
        if rec.rtype in SHARED_TYPES:
            ours = published.get(rec.key, frozenset()) | set(want)
            foreign = any(v not in ours for v in have)
            have = [v for v in have if v in ours]
        have_set, want_set = set(have), set(want)
        ttl_differs = rec.match is None and not foreign and bool(have) and cur.ttl is not None and cur.ttl != rec.ttl
        if have_set == want_set and len(have) == len(have_set) and not ttl_differs:
            continue
        if ttl_differs:
            changes.append(
                Change(
                    rec.zone,
                    rec.name,
                    rec.rtype,
                    rec.ttl,
                    tuple(sorted(have_set)),
                    tuple(want),
                    True,
                    rec.purpose,
                    rec.subject,
                )
            )
            continue
        delete = tuple(sorted(have_set - want_set))
        add = tuple(v for v in want if v not in have_set)
        if not delete and not add:  # duplicates only: rewrite the RRset
            changes.append(
                Change(rec.zone, rec.name, rec.rtype, rec.ttl, (), tuple(want), True, rec.purpose, rec.subject)
            )
            continue
        changes.append(Change(rec.zone, rec.name, rec.rtype, rec.ttl, delete, add, False, rec.purpose, rec.subject))
    for key in sorted(set(prune)):
        cur = current.get((key.name, key.rtype), Current(None, ()))
        match = key.match or None
        values = {normalize(key.rtype, v) for v in cur.values if owned(v, match)}
        whole = match is None
        if key.rtype in SHARED_TYPES:
            ours = published.get((key.name, key.rtype), frozenset())
            whole = whole and values <= ours
            values &= ours
        gone = tuple(sorted(values))
        if not gone:
            continue
        changes.append(
            Change(key.zone, key.name, key.rtype, cur.ttl or 0, gone, (), whole, "no longer planned", key.name)
        )
    return changes


def prune_keys(records: Sequence[PlannedRecord], previously: Iterable[ManagedKey]) -> list[ManagedKey]:
    """Keys published before and no longer planned (a name/type still planned, even with an error, stays)."""
    planned = {(r.name, r.rtype) for r in records}
    return sorted(k for k in set(previously) if (k.name, k.rtype) not in planned)


def seen(records: Iterable[PlannedRecord], lookup: Lookup) -> tuple[dict[tuple[str, str], Current], list[str]]:
    """What `lookup` (a resolver) answers at each publishable record, as `Current` without a TTL (a cache counts
    it down), and one line per record it could not tell (error: timeout, SERVFAIL...), which stays out of the
    mapping: unknown, not absent. NXDOMAIN and NODATA are an empty RRset."""
    current: dict[tuple[str, str], Current] = {}
    unknown: list[str] = []
    for rec in records:
        if not rec.publishable or rec.key in current:
            continue
        answer = lookup(rec.name, rec.rtype)
        if answer.status in ("error", "unknown"):
            unknown.append(f"{rec.name} {rec.rtype}: {answer.detail or answer.status}")
        else:
            current[rec.key] = Current(None, answer.values)
    return current, unknown


def drifted(records: Sequence[PlannedRecord], current: Mapping[tuple[str, str], Current]) -> list[ManagedKey]:
    """The publishable records whose published RRset differs from the plan by the rules of `diff` (what
    `sendfleet dns apply` would change), among those `current` holds: a record whose name and type `current`
    lacks is unknown, never drift. Only the owned part counts (the v=spf1 value in a shared TXT RRset); at an
    A/AAAA name only the planned addresses (which others sendfleet published before is known to the
    controller only); a TTL is compared only where `current` has one."""
    answered = [r for r in records if r.publishable and r.key in current]
    changed = {(c.name, c.rtype) for c in diff(answered, current)}
    return sorted({managed_key(r) for r in answered if r.key in changed})
