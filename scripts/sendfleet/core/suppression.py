"""Which recipients stop receiving mail, from what came back (sendfleet.core.feedback). Pure: a new event and the
recipient's recent events in, at most one suppression entry out; the store applies it.

- a hard bounce (the mailbox is gone) suppresses at once, for `hard_expiry_days` (null: for good);
- a complaint suppresses at once, for `complaint_expiry_days` (null: for good), unless the report says the opposite
  (feedback type `not-spam`) or is about authentication only (`auth-failure`);
- `soft_bounces` failed soft bounces within `soft_window_days` suppress, for `soft_expiry_days`;
- a block (the receiver refused us: reputation, rate, policy) never suppresses: not the recipient's fault; nor
  does a delayed DSN (the mail is still being retried).

An entry's address keeps its local part as written and lower-cases its domain; `address_key` (all lower case) is
what entries are matched by. Times are UTC (a naive datetime is read as UTC).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sendfleet.core.feedback import Bounce, Complaint, normalise_address

REASONS = ("hard-bounce", "complaint", "soft-bounces", "manual", "import")
NOT_SUPPRESSING_FEEDBACK = frozenset({"not-spam", "auth-failure"})
POLICY_KEYS = ("soft_bounces", "soft_window_days", "hard_expiry_days", "complaint_expiry_days", "soft_expiry_days")
DETAIL_CAP = 500
_MAX_DAYS = 36500


class PolicyError(ValueError):
    """Bad policy data or a bad address; the message names the key or the value."""


@dataclass(frozen=True)
class Policy:
    soft_bounces: int = 3  # failed soft bounces ...
    soft_window_days: int = 7  # ... within this many days suppress
    hard_expiry_days: int | None = None  # None: for good
    complaint_expiry_days: int | None = None
    soft_expiry_days: int | None = 30

    def as_dict(self) -> dict[str, int | None]:
        return {k: getattr(self, k) for k in POLICY_KEYS}


def _days(value: Any, where: str, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_DAYS:
        what = f"a whole number 1-{_MAX_DAYS}" + (" or null" if optional else "")
        raise PolicyError(f"{where}: expected {what}, got {value!r}")
    return value


def parse_policy(raw: Any, where: str = "policy") -> Policy:
    """The `policy` mapping of feedback.yml -> Policy (missing keys take the defaults). Raises PolicyError naming
    the key (`policy.soft_bounces: expected ...`)."""
    if raw is None:
        return Policy()
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: expected a mapping of {', '.join(POLICY_KEYS)}, got {type(raw).__name__}")
    for key in raw:
        if key not in POLICY_KEYS:
            raise PolicyError(f"{where}.{key}: unknown key (known: {', '.join(POLICY_KEYS)})")
    base = Policy()
    values: dict[str, int | None] = {}
    for key in POLICY_KEYS:
        if key in raw:
            values[key] = _days(raw[key], f"{where}.{key}", optional=key.endswith("_expiry_days"))
        else:
            values[key] = getattr(base, key)
    return Policy(int(values["soft_bounces"] or 0), int(values["soft_window_days"] or 0),
                  values["hard_expiry_days"], values["complaint_expiry_days"], values["soft_expiry_days"])


# -------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    """One stored feedback event of a recipient (a row of the events table)."""

    at: datetime
    kind: str  # bounce | complaint
    klass: str | None = None  # bounces: hard | soft | block
    action: str | None = None  # bounces: failed | delayed
    status: str = ""
    diagnostic: str = ""
    source: str = ""  # 'dsn from gmail-smtp-in.l.google.com', 'arf from arf.mail.yahoo.com'
    feedback_type: str | None = None  # complaints: abuse | fraud | ... (None: a complaint of unknown type)


def bounce_event(bounce: Bounce, at: datetime) -> Event:
    mta = bounce.remote_mta or bounce.reporting_mta
    return Event(_utc(at), "bounce", bounce.kind, bounce.action, bounce.status, bounce.diagnostic,
                 f"dsn from {mta}" if mta else "dsn")


def complaint_event(complaint: Complaint, at: datetime) -> Event:
    return Event(_utc(at), "complaint", None, None, "", "",
                 f"arf from {complaint.reporter}" if complaint.reporter else "arf", complaint.feedback_type)


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


# ------------------------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class Entry:
    """A row of the suppression table."""

    address: str
    reason: str  # one of REASONS
    source: str  # 'dsn from mx1.l.gmail.test', 'arf from yahoo.com', 'operator', 'import:<file>'
    created: datetime  # UTC
    expires: datetime | None  # UTC; None: for good
    detail: str  # status and diagnostic, or what the complaint was

    def active(self, now: datetime) -> bool:
        return self.expires is None or self.expires > _utc(now)


def entry_address(value: str) -> str:
    """An address as entries keep it (local part as written, domain lower-cased); PolicyError when it is not a
    plain mail address."""
    address = normalise_address(value)
    if address is None:
        raise PolicyError(f"not a mail address: {str(value)[:80]!r}")
    return address


def address_key(address: str) -> str:
    """What entries are matched by (and what the senders' lookup compares): the address in lower case."""
    return entry_address(address).lower()


def _expiry(at: datetime, days: int | None) -> datetime | None:
    return None if days is None else at + timedelta(days=days)


def _detail(*parts: str) -> str:
    text = " ".join(" ".join(p.split()) for p in parts if p and p.strip())
    return text if len(text) <= DETAIL_CAP else text[: DETAIL_CAP - 3] + "..."


def counts_as_soft(event: Event) -> bool:
    """A failed soft bounce: what `soft_bounces` counts (a delayed DSN and a block never count)."""
    return event.kind == "bounce" and event.klass == "soft" and event.action == "failed"


def decide(address: str, event: Event, recent: Iterable[Event], policy: Policy) -> Entry | None:
    """The entry `event` calls for, or None. `recent`: the recipient's earlier events (at least those of the last
    `soft_window_days`; the new event among them or not: an equal event is counted once). Raises PolicyError when
    `address` is not a mail address."""
    addr = entry_address(address)
    at = _utc(event.at)
    if event.kind == "complaint":
        if event.feedback_type in NOT_SUPPRESSING_FEEDBACK:
            return None
        what = f"{event.feedback_type or 'unknown'} complaint"
        return Entry(addr, "complaint", event.source or "arf", at, _expiry(at, policy.complaint_expiry_days),
                     _detail(what))
    if event.kind != "bounce" or event.action != "failed":
        return None
    if event.klass == "hard":
        return Entry(addr, "hard-bounce", event.source or "dsn", at, _expiry(at, policy.hard_expiry_days),
                     _detail(event.status, event.diagnostic))
    if event.klass != "soft":
        return None
    since = at - timedelta(days=policy.soft_window_days)
    events = list(recent)
    if event not in events:
        events.append(event)
    soft = [e for e in events if counts_as_soft(e) and since < _utc(e.at) <= at]
    if len(soft) < policy.soft_bounces:
        return None
    return Entry(addr, "soft-bounces", event.source or "dsn", at, _expiry(at, policy.soft_expiry_days),
                 _detail(f"{len(soft)} soft bounces in {policy.soft_window_days} days, last:", event.status,
                         event.diagnostic))


def manual_entry(address: str, now: datetime, *, reason: str = "manual", source: str = "operator",
                 expires: datetime | None = None, detail: str = "") -> Entry:
    """An operator's or an import's entry (reason manual or import)."""
    if reason not in REASONS:
        raise PolicyError(f"reason: expected one of {', '.join(REASONS)}, got {reason!r}")
    created = _utc(now)
    until = None if expires is None else _utc(expires)
    if until is not None and until <= created:
        raise PolicyError(f"expires: {until.isoformat()} is not after {created.isoformat()}")
    return Entry(entry_address(address), reason, source, created, until, _detail(detail))


def merge(old: Entry | None, new: Entry, now: datetime) -> Entry:
    """The entry to keep when `new` arrives for an address that may have one: the new one when there is none or
    the old one has expired; else the one that lasts longer (no expiry lasts longest), the old one on a tie (it
    keeps its reason and its date)."""
    if old is None or not old.active(now):
        return new
    if old.expires is None:
        return old
    if new.expires is None or new.expires > old.expires:
        return new
    return old
