"""The feedback store in PostgreSQL (psycopg 3): schema, events, the suppression list, DMARC and TLS-RPT reports,
counters for the metrics, and the report queries.

`LOOKUP_QUERY` is the one copy of the query the senders' Postfix `pgsql:` map runs (the Ansible role reads it
from here); `check` runs the same SQL with the address as a bound parameter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sendfleet.core.suppression import Entry, Event, address_key, merge
from sendfleet.errors import CannotCheckError

if TYPE_CHECKING:  # psycopg is imported when a connection is made (the Ansible filter reads LOOKUP_QUERY alone)
    import psycopg

# Postfix quotes %u (local part) and %d (domain) for SQL and runs the query for full addresses only (not for the
# bare domain and local part check_recipient_access also tries); its reply text follows "<address>: Recipient
# address rejected:", so it does not repeat the address.
LOOKUP_QUERY = (
    "SELECT '550 5.1.1 suppressed since ' || "
    "to_char(created AT TIME ZONE 'UTC','YYYY-MM-DD') || ' (' || reason || ')' "
    "FROM suppression WHERE address = lower('%u@%d') AND (expires IS NULL OR expires > now())"
)
#: The Postfix placeholders of LOOKUP_QUERY, as one bound parameter (the address) for psycopg.
_LOOKUP_PARAM = "'%u@%d'"
SCHEMA_VERSION = 1

# Each statement is idempotent: `schema` runs them all on every deploy.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS suppression (
        address text PRIMARY KEY CHECK (address = lower(address)),
        reason text NOT NULL,
        source text NOT NULL,
        created timestamptz NOT NULL DEFAULT now(),
        expires timestamptz NULL,
        detail text NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS events (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT now(),
        kind text NOT NULL,
        class text NULL,
        action text NULL,
        recipient text NOT NULL,
        sender_domain text NULL,
        ip text NULL,
        provider text NULL,
        status text NULL,
        diagnostic text NULL,
        source text NULL)""",
    "CREATE INDEX IF NOT EXISTS events_recipient_at ON events (recipient, at)",
    "CREATE INDEX IF NOT EXISTS events_at ON events (at)",
    """CREATE TABLE IF NOT EXISTS dmarc_reports (
        id bigserial PRIMARY KEY,
        org_name text NOT NULL,
        report_id text NOT NULL,
        domain text NOT NULL,
        policy text NULL,
        begin_at timestamptz NOT NULL,
        end_at timestamptz NOT NULL,
        received timestamptz NOT NULL DEFAULT now(),
        UNIQUE (org_name, report_id))""",
    """CREATE TABLE IF NOT EXISTS dmarc_records (
        report bigint NOT NULL REFERENCES dmarc_reports (id) ON DELETE CASCADE,
        source_ip text NOT NULL,
        count bigint NOT NULL,
        disposition text NOT NULL,
        header_from text NOT NULL,
        dkim text NOT NULL,
        spf text NOT NULL,
        dkim_results jsonb NOT NULL,
        spf_results jsonb NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS dmarc_records_report ON dmarc_records (report)",
    """CREATE TABLE IF NOT EXISTS tlsrpt_reports (
        id bigserial PRIMARY KEY,
        org_name text NOT NULL,
        report_id text NOT NULL,
        begin_at timestamptz NOT NULL,
        end_at timestamptz NOT NULL,
        received timestamptz NOT NULL DEFAULT now(),
        UNIQUE (org_name, report_id))""",
    """CREATE TABLE IF NOT EXISTS tlsrpt_policies (
        report bigint NOT NULL REFERENCES tlsrpt_reports (id) ON DELETE CASCADE,
        policy_type text NOT NULL,
        policy_domain text NOT NULL,
        success bigint NOT NULL,
        failure bigint NOT NULL,
        failures jsonb NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS tlsrpt_policies_report ON tlsrpt_policies (report)",
    # the processor's counters (sendfleet_feedback_*_total): name + labels (JSON text, keys sorted) -> value
    """CREATE TABLE IF NOT EXISTS counters (
        name text NOT NULL,
        labels text NOT NULL,
        value bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (name, labels))""",
    """CREATE TABLE IF NOT EXISTS state (key text PRIMARY KEY, value double precision NOT NULL)""",
)


class DatabaseUnavailable(CannotCheckError):
    """The database cannot be reached (the processor answers Postfix EX_TEMPFAIL)."""


def entry_dict(entry: Entry) -> dict[str, Any]:
    """An entry as the CLI prints and exports it (times ISO 8601 UTC, to the second)."""
    return {"address": entry.address, "reason": entry.reason, "source": entry.source, "created": _iso(entry.created),
            "expires": _iso(entry.expires) if entry.expires else None, "detail": entry.detail}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def connect(conninfo: str, *, timeout: int = 10) -> Iterator[psycopg.Connection[Any]]:
    """A connection (closed on exit); DatabaseUnavailable when the server cannot be reached."""
    import psycopg

    try:
        conn = psycopg.connect(conninfo, connect_timeout=timeout)
    except psycopg.OperationalError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DatabaseUnavailable(f"database unreachable: {first}") from None
    try:
        yield conn
    finally:
        conn.close()


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Create or bring up to date every table and index; returns the schema version."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(727401)")  # one migration at a time
        for statement in SCHEMA:
            cur.execute(statement)
        cur.execute("SELECT max(version) FROM schema_version")
        row = cur.fetchone()
        if row is None or row[0] is None:
            cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
        elif row[0] < SCHEMA_VERSION:
            cur.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))
    return SCHEMA_VERSION


# ------------------------------------------------------------------------------------------------- events


def insert_event(cur: psycopg.Cursor[Any], *, at: datetime, kind: str, klass: str | None, action: str | None,
                 recipient: str, sender_domain: str | None, ip: str | None, provider: str | None,
                 status: str | None, diagnostic: str | None, source: str | None) -> None:
    cur.execute(
        "INSERT INTO events (at, kind, class, action, recipient, sender_domain, ip, provider, status, diagnostic,"
        " source) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (at, kind, klass, action, recipient.lower(), sender_domain, ip, provider, status, diagnostic, source))


def lock_recipients(cur: psycopg.Cursor[Any], recipients: Iterable[str]) -> None:
    """Hold a transaction lock per recipient (sorted), so that concurrent messages about one recipient are weighed
    against each other's events, not side by side."""
    for key in sorted({r.lower() for r in recipients}):
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))


def recent_events(cur: psycopg.Cursor[Any], recipient: str, since: datetime) -> list[Event]:
    """The stored events of `recipient` after `since` (what the suppression policy weighs a new one against)."""
    cur.execute(
        "SELECT at, kind, class, CASE WHEN kind = 'bounce' THEN action END, coalesce(status, ''),"
        " coalesce(diagnostic, ''), coalesce(source, ''), CASE WHEN kind = 'complaint' THEN action END FROM events"
        " WHERE recipient = %s AND at > %s ORDER BY at",
        (recipient.lower(), since))
    return [Event(*row) for row in cur.fetchall()]


def bump(cur: psycopg.Cursor[Any], name: str, labels: Mapping[str, str], by: int = 1) -> None:
    cur.execute(
        "INSERT INTO counters (name, labels, value) VALUES (%s, %s, %s)"
        " ON CONFLICT (name, labels) DO UPDATE SET value = counters.value + EXCLUDED.value",
        (name, json.dumps(dict(labels), sort_keys=True), by))


def set_state(cur: psycopg.Cursor[Any], key: str, value: float) -> None:
    cur.execute("INSERT INTO state (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value ="
                " greatest(state.value, EXCLUDED.value)", (key, value))


def counters(conn: psycopg.Connection[Any]) -> list[tuple[str, dict[str, str], int]]:
    with conn.cursor() as cur:
        cur.execute("SELECT name, labels, value FROM counters ORDER BY name, labels")
        return [(str(n), dict(json.loads(lab)), int(v)) for n, lab, v in cur.fetchall()]


def state(conn: psycopg.Connection[Any], key: str) -> float | None:
    with conn.cursor() as cur:
        cur.execute("SELECT value FROM state WHERE key = %s", (key,))
        row = cur.fetchone()
        return float(row[0]) if row else None


# -------------------------------------------------------------------------------------------- suppression


def _current(cur: psycopg.Cursor[Any], key: str) -> Entry | None:
    cur.execute("SELECT address, reason, source, created, expires, detail FROM suppression WHERE address = %s"
                " FOR UPDATE", (key,))
    row = cur.fetchone()
    return Entry(*row) if row else None


def upsert(cur: psycopg.Cursor[Any], entry: Entry, *, force: bool = False, now: datetime | None = None) -> bool:
    """Add `entry` (its address lower-cased: what the senders' lookup compares). An address already suppressed
    keeps the entry `sendfleet.core.suppression.merge` chooses; `force` (the operator) always replaces it.
    True when the table changed."""
    key = address_key(entry.address)
    if not force:
        old = _current(cur, key)
        if merge(old, entry, now or entry.created) is old:
            return False
    cur.execute(
        "INSERT INTO suppression (address, reason, source, created, expires, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (address) DO UPDATE SET reason = EXCLUDED.reason,"
        " source = EXCLUDED.source, created = EXCLUDED.created, expires = EXCLUDED.expires,"
        " detail = EXCLUDED.detail",
        (key, entry.reason, entry.source, entry.created, entry.expires, entry.detail))
    return True


def import_entries(conn: psycopg.Connection[Any], entries: Iterable[Entry], *, force: bool = False) -> int:
    """Add every entry in one transaction; returns how many changed the table."""
    now = datetime.now(UTC)
    with conn.transaction(), conn.cursor() as cur:
        return sum(upsert(cur, e, force=force, now=now) for e in entries)


def remove(conn: psycopg.Connection[Any], address: str) -> bool:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("DELETE FROM suppression WHERE address = lower(%s)", (address,))
        return cur.rowcount > 0


def entries(conn: psycopg.Connection[Any], *, include_expired: bool = False) -> list[Entry]:
    where = "" if include_expired else " WHERE expires IS NULL OR expires > now()"
    with conn.cursor() as cur:
        cur.execute("SELECT address, reason, source, created, expires, detail FROM suppression"
                    + where + " ORDER BY address")
        return [Entry(a, r, s, c, e, d) for a, r, s, c, e, d in cur.fetchall()]


def active_by_reason(conn: psycopg.Connection[Any]) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute("SELECT reason, count(*) FROM suppression WHERE expires IS NULL OR expires > now()"
                    " GROUP BY reason")
        return {str(r): int(n) for r, n in cur.fetchall()}


def check(conn: psycopg.Connection[Any], address: str) -> str | None:
    """The senders' map's reply for `address` (None: not suppressed), by LOOKUP_QUERY itself."""
    with conn.cursor() as cur:
        cur.execute(LOOKUP_QUERY.replace(_LOOKUP_PARAM, "%s"), (address,))
        row = cur.fetchone()
        return str(row[0]) if row else None


# ------------------------------------------------------------------------------------------------ reports


def _ts(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def store_dmarc(cur: psycopg.Cursor[Any], report: Any) -> bool:
    """Store a DmarcReport; False when the same (org_name, report_id) is already stored."""
    cur.execute(
        "INSERT INTO dmarc_reports (org_name, report_id, domain, policy, begin_at, end_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (org_name, report_id) DO NOTHING RETURNING id",
        (report.org_name, report.report_id, report.domain, report.policy, _ts(report.begin), _ts(report.end)))
    row = cur.fetchone()
    if row is None:
        return False
    cur.executemany(
        "INSERT INTO dmarc_records (report, source_ip, count, disposition, header_from, dkim, spf, dkim_results,"
        " spf_results) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [(row[0], r.source_ip, r.count, r.disposition, r.header_from, r.dkim, r.spf,
          json.dumps([list(x) for x in r.dkim_results]), json.dumps([list(x) for x in r.spf_results]))
         for r in report.records])
    return True


def store_tlsrpt(cur: psycopg.Cursor[Any], report: Any) -> bool:
    """Store a TlsReport; False when the same (org_name, report_id) is already stored."""
    cur.execute(
        "INSERT INTO tlsrpt_reports (org_name, report_id, begin_at, end_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (org_name, report_id) DO NOTHING RETURNING id",
        (report.org_name, report.report_id, _ts(report.begin), _ts(report.end)))
    row = cur.fetchone()
    if row is None:
        return False
    cur.executemany(
        "INSERT INTO tlsrpt_policies (report, policy_type, policy_domain, success, failure, failures)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        [(row[0], p.policy_type, p.policy_domain, p.success, p.failure, json.dumps([list(f) for f in p.failures]))
         for p in report.policies])
    return True


def feedback_counts(conn: psycopg.Connection[Any], since: datetime) -> list[dict[str, Any]]:
    """Events since `since` per (sender_domain, ip, provider): bounces per class (failed ones; `delayed` soft
    DSNs counted apart) and complaints."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(sender_domain, ''), coalesce(ip, ''), coalesce(provider, ''),"
            " count(*) FILTER (WHERE kind = 'bounce' AND class = 'hard'),"
            " count(*) FILTER (WHERE kind = 'bounce' AND class = 'soft' AND action = 'failed'),"
            " count(*) FILTER (WHERE kind = 'bounce' AND class = 'soft' AND action IS DISTINCT FROM 'failed'),"
            " count(*) FILTER (WHERE kind = 'bounce' AND class = 'block'),"
            " count(*) FILTER (WHERE kind = 'complaint')"
            " FROM events WHERE at > %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", (since,))
        keys = ("sender_domain", "ip", "provider", "hard", "soft", "delayed", "block", "complaints")
        return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]


def dmarc_summary(conn: psycopg.Connection[Any], since: datetime) -> list[dict[str, Any]]:
    """DMARC aggregate records of reports whose period ended after `since`, per (domain, source_ip)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT r.domain, d.source_ip, sum(d.count), count(DISTINCT r.id),"
            " sum(d.count) FILTER (WHERE d.dkim = 'pass'), sum(d.count) FILTER (WHERE d.spf = 'pass'),"
            " sum(d.count) FILTER (WHERE d.dkim = 'pass' OR d.spf = 'pass'),"
            " sum(d.count) FILTER (WHERE d.disposition = 'quarantine'),"
            " sum(d.count) FILTER (WHERE d.disposition = 'reject'),"
            " string_agg(DISTINCT r.org_name, ',')"
            " FROM dmarc_records d JOIN dmarc_reports r ON r.id = d.report WHERE r.end_at > %s"
            " GROUP BY 1, 2 ORDER BY 1, 3 DESC, 2", (since,))
        keys = ("domain", "source_ip", "messages", "reports", "dkim_pass", "spf_pass", "dmarc_pass", "quarantined",
                "rejected", "reporters")
        return [{k: (int(v) if k not in ("domain", "source_ip", "reporters") else v) if v is not None else 0
                 for k, v in zip(keys, row, strict=True)} for row in cur.fetchall()]


def tlsrpt_summary(conn: psycopg.Connection[Any], since: datetime) -> list[dict[str, Any]]:
    """TLS-RPT policies of reports whose period ended after `since`, per (policy domain, policy type): sessions that
    succeeded and failed, failures per result type, the reporters."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT p.policy_domain, p.policy_type, p.success, p.failure, p.failures, r.org_name, r.id"
            " FROM tlsrpt_policies p JOIN tlsrpt_reports r ON r.id = p.report WHERE r.end_at > %s"
            " ORDER BY 1, 2", (since,))
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for domain, ptype, ok, failed, failures, org, report in cur.fetchall():
            row = out.setdefault((domain, ptype), {"policy_domain": domain, "policy_type": ptype, "success": 0,
                                                   "failure": 0, "failures": {}, "reports": set(), "reporters": set()})
            row["success"] += int(ok)
            row["failure"] += int(failed)
            for kind, count in failures if isinstance(failures, list) else json.loads(failures or "[]"):
                row["failures"][str(kind)] = row["failures"].get(str(kind), 0) + int(count)
            row["reports"].add(report)
            row["reporters"].add(org)
    return [{**r, "reports": len(r["reports"]), "reporters": ",".join(sorted(r["reporters"]))} for r in out.values()]


def since_days(days: int, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(days=days)
