"""Suppression lists in and out: CSV and JSON.

Export: CSV with the columns address,reason,source,created,expires,detail, or a JSON list of the same objects.
Import takes that, and the CSV another ESP exports: columns are found case-insensitively (address: email, address,
email_address, recipient; reason: reason, type, status; created: created, created_at, date; optional source,
expires, detail). A reason sendfleet does not know is stored as `import`, its text kept in the detail. Every bad row
is one line naming it (row 1 is the first row after the header).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sendfleet.core import suppression
from sendfleet.core.suppression import REASONS, Entry
from sendfleet.errors import UsageError
from sendfleet.feedback.store import entry_dict

COLUMNS = ("address", "reason", "source", "created", "expires", "detail")
ADDRESS_COLUMNS = ("email", "address", "email_address", "recipient")
REASON_COLUMNS = ("reason", "type", "status")
CREATED_COLUMNS = ("created", "created_at", "date")
_SYNONYMS = {
    "hard-bounce": "hard-bounce", "hard_bounce": "hard-bounce", "hardbounce": "hard-bounce", "hard": "hard-bounce",
    "bounce": "hard-bounce", "bounced": "hard-bounce", "bounces": "hard-bounce", "invalid": "hard-bounce",
    "complaint": "complaint", "complaints": "complaint", "spam": "complaint", "spamreport": "complaint",
    "spam_report": "complaint", "spam-report": "complaint", "abuse": "complaint",
    "soft-bounces": "soft-bounces", "soft_bounce": "soft-bounces", "soft-bounce": "soft-bounces",
    "manual": "manual", "unsubscribe": "manual", "unsubscribed": "manual", "import": "import",
}


def normalize_address(value: str) -> str:
    """An address as the store keeps it (lower-cased); ValueError naming what is wrong."""
    try:
        return suppression.address_key(value)
    except suppression.PolicyError as err:
        raise ValueError(str(err)) from None


def parse_time(value: Any, *, default: datetime | None = None) -> datetime | None:
    """ISO 8601 date or date-time (UTC when no offset is given), or Unix seconds; empty -> default."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    text = str(value).strip()
    if re.fullmatch(r"\d{9,11}(\.\d+)?", text):
        return datetime.fromtimestamp(float(text), UTC)
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" UTC", "+00:00"))
    except ValueError:
        raise ValueError(f"not a date or time: {value!r}") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _entry(row: Mapping[str, Any], default_source: str, now: datetime) -> Entry:
    address = normalize_address(str(row.get("address") or ""))
    raw_reason = str(row.get("reason") or "").strip()
    reason = _SYNONYMS.get(raw_reason.lower(), "import") if raw_reason else "import"
    detail = str(row.get("detail") or "")
    if raw_reason and reason == "import" and raw_reason.lower() != "import" and not detail:
        detail = raw_reason
    created = parse_time(row.get("created"), default=now) or now
    try:
        return suppression.manual_entry(address, created, reason=reason, expires=parse_time(row.get("expires")),
                                        source=str(row.get("source") or "").strip() or default_source, detail=detail)
    except suppression.PolicyError as err:
        raise ValueError(str(err)) from None


def _pick(header: Sequence[str], names: Sequence[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    return next((lowered.index(n) for n in names if n in lowered), None)


def parse_csv(text: str, *, source: str, now: datetime) -> tuple[list[Entry], list[str]]:
    """(entries, bad rows): each bad row one line `row N: ...`."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if not header:
        raise UsageError("empty CSV: expected a header row naming an address column")
    col = {"address": _pick(header, ADDRESS_COLUMNS), "reason": _pick(header, REASON_COLUMNS),
           "created": _pick(header, CREATED_COLUMNS), "source": _pick(header, ("source",)),
           "expires": _pick(header, ("expires", "expires_at")), "detail": _pick(header, ("detail",))}
    if col["address"] is None:
        raise UsageError(f"CSV header {','.join(header)!r}: no address column (one of {', '.join(ADDRESS_COLUMNS)})")
    entries: list[Entry] = []
    bad: list[str] = []
    for n, row in enumerate(reader, start=1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            bad.append(f"row {n}: {len(row)} fields, the header has {len(header)}")
            continue
        try:
            entries.append(_entry({k: row[i] for k, i in col.items() if i is not None}, source, now))
        except ValueError as err:
            bad.append(f"row {n}: {err}")
    return entries, bad


def parse_json(text: str, *, source: str, now: datetime) -> tuple[list[Entry], list[str]]:
    """A JSON list of objects with the export's keys (address required)."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise UsageError(f"not JSON: {err}") from None
    if not isinstance(data, list):
        raise UsageError(f"expected a JSON list of entries, got {type(data).__name__}")
    entries: list[Entry] = []
    bad: list[str] = []
    for n, item in enumerate(data, start=1):
        if not isinstance(item, Mapping):
            bad.append(f"row {n}: expected an object with an address, got {item!r}")
            continue
        unknown = sorted(set(item) - set(COLUMNS))
        if unknown:
            bad.append(f"row {n}: unknown key {unknown[0]!r} (known: {', '.join(COLUMNS)})")
            continue
        if item.get("reason") not in (None, "", *REASONS):
            bad.append(f"row {n}: unknown reason {item.get('reason')!r} (known: {', '.join(REASONS)})")
            continue
        try:
            entries.append(_entry(item, source, now))
        except ValueError as err:
            bad.append(f"row {n}: {err}")
    return entries, bad


def parse(text: str, fmt: str, *, source: str, now: datetime) -> tuple[list[Entry], list[str]]:
    if fmt == "csv":
        return parse_csv(text, source=source, now=now)
    if fmt == "json":
        return parse_json(text, source=source, now=now)
    raise UsageError(f"unknown format {fmt!r} (csv, json)")


def to_json(entries: Iterable[Entry]) -> str:
    return json.dumps([entry_dict(e) for e in entries], indent=2) + "\n"


def to_csv(entries: Iterable[Entry]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for e in entries:
        d = entry_dict(e)
        writer.writerow([d[c] if d[c] is not None else "" for c in COLUMNS])
    return buf.getvalue()
