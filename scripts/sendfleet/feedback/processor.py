"""`process`: the Postfix pipe(8) entry of the feedback host, one message on stdin.

Exit codes (pipe(8)): 0 = stored, or written to the dead-letter directory (a message that cannot be parsed is
never lost, a metric counts it); 75 (EX_TEMPFAIL) = the database is unreachable, Postfix keeps the message and
retries. The database is reached before anything else: when it is down nothing is written at all.

Bounces and complaints are stored as events and the suppression policy applied in one transaction; the provider
class of an event is the recipient domain's class by MX (looked up once per domain and run; `other` when the
lookup fails), and a failed bounce is classified again with the rules of that class (and `other`'s generic
ones, as the shaper matches them): the parser, which does not know the class, tried every class's. DMARC and
TLS-RPT reports are stored once per (org_name, report_id) and need no lookup.

The metrics textfile holds every series of the bounded label sets from the start (`metric_series`), zeros
included: a counter's first count is then an increase Prometheus sees, and `metrics` (run by a timer) refreshes
the active suppressions as entries expire with no message arriving.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import psycopg

from sendfleet import atomicfile
from sendfleet.core import feedback, shaping, suppression
from sendfleet.core.metrics import Family, render
from sendfleet.dns import mx
from sendfleet.feedback import store
from sendfleet.feedback.config import DEFAULT_MX_TIMEOUT, Config

EX_TEMPFAIL = 75
METRICS_FILE = "sendfleet_feedback.prom"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Outcome:
    kind: str  # dsn | arf | dmarc | tlsrpt | unknown
    outcome: str  # stored | duplicate | dead_letter
    suppressed: tuple[str, ...] = ()
    dead_letter: Path | None = None
    error: str | None = None


class MxClassifier:
    """A recipient domain's provider class by its MX hosts (sendfleet.dns.mx: a domain without MX is its own host),
    cached per domain for the run. A domain whose lookup failed is `other` and in `failed` (its class is unknown,
    not known to be `other`). `lookup` replaces the DNS lookup (tests)."""

    def __init__(self, classes: Any, *, timeout: float = DEFAULT_MX_TIMEOUT,
                 lookup: Callable[[str], mx.MxAnswer] | None = None) -> None:
        self.classes = classes
        self.timeout = timeout
        self.lookup = lookup or mx.MxLookup(timeout=timeout)
        self.cache: dict[str, str] = {}
        self.failed: set[str] = set()

    @staticmethod
    def domain(recipient: str) -> str:
        return recipient.rpartition("@")[2].lower().rstrip(".")

    def __call__(self, recipient: str) -> str:
        domain = self.domain(recipient)
        if domain not in self.cache:
            klass = mx.provider_class(self.lookup(domain), self.classes) if domain else shaping.OTHER
            if klass is None:  # the lookup failed: the class is unknown
                self.failed.add(domain)
            self.cache[domain] = klass or shaping.OTHER
        return self.cache[domain]

    def known(self, recipient: str) -> bool:
        """Whether the class of `recipient` came from an answer (after a call for it)."""
        return self.domain(recipient) not in self.failed


def with_class(cfg: Config, bounce: feedback.Bounce, klass: str) -> feedback.Bounce:
    """A failed bounce classified again knowing the recipient's provider class: only that class's reply rules
    and `other`'s apply (a Microsoft block-list code from a Gmail recipient's server is no Microsoft block).
    A delayed DSN stays soft."""
    if bounce.action != "failed":
        return bounce
    kind = feedback.classify_bounce(bounce.status, bounce.diagnostic, cfg.classes, klass)
    return bounce if kind == bounce.kind else replace(bounce, kind=kind)


# ------------------------------------------------------------------------------------------------ labels


def _label_domain(cfg: Config, domain: str | None) -> str:
    return domain if domain in cfg.sender_domains else "other"


def _label_ip(cfg: Config, ip: str | None) -> str:
    return ip if ip in cfg.fleet_ips else "unknown"


def _label_provider(cfg: Config, provider: str) -> str:
    return provider if provider in cfg.classes else shaping.OTHER


# ----------------------------------------------------------------------------------------------- storing


def store_parsed(cfg: Config, conn: psycopg.Connection[Any], parsed: feedback.Parsed, provider_of: MxClassifier,
                 now: datetime | None = None) -> Outcome:
    """Store one parsed message in one transaction (events, suppression, reports, counters). The events are
    dated `now`, by default the time the transaction holds its recipients' locks (so that of two messages about a
    recipient the one weighed later is the later one)."""
    suppressed: list[str] = []
    stored = True
    providers = {r: provider_of(r) for r in {b.recipient for b in parsed.bounces}
                 | {c.recipient for c in parsed.complaints}}
    # the parser tried every class's rules; with the class known (the lookup answered) only its own apply
    bounces = [with_class(cfg, b, providers[b.recipient]) if provider_of.known(b.recipient) else b
               for b in parsed.bounces]

    def apply(cur: psycopg.Cursor[Any], recipient: str, event: suppression.Event) -> None:
        # weighed against what was stored before it, then stored itself
        since = at - timedelta(days=cfg.policy.soft_window_days)
        entry = suppression.decide(recipient, event, store.recent_events(cur, recipient, since), cfg.policy)
        if entry is not None and store.upsert(cur, entry, now=at):
            suppressed.append(suppression.address_key(entry.address))

    with conn.transaction(), conn.cursor() as cur:
        # processors running at once weigh a recipient's events one after the other (in one order: no deadlock)
        store.lock_recipients(cur, providers)
        at = now or datetime.now(UTC)
        for b in bounces:
            event = suppression.bounce_event(b, at)
            provider = providers[b.recipient]
            apply(cur, b.recipient, event)
            store.insert_event(cur, at=at, kind="bounce", klass=b.kind, action=b.action, recipient=b.recipient,
                               sender_domain=b.sender_domain, ip=b.source_ip, provider=provider, status=b.status,
                               diagnostic=b.diagnostic, source=event.source)
            store.bump(cur, "sendfleet_feedback_bounces_total", {
                "sender_domain": _label_domain(cfg, b.sender_domain), "ip": _label_ip(cfg, b.source_ip),
                "provider": _label_provider(cfg, provider), "class": b.kind})
        for c in parsed.complaints:
            event = suppression.complaint_event(c, at)
            provider = providers[c.recipient]
            apply(cur, c.recipient, event)
            store.insert_event(cur, at=at, kind="complaint", klass=None, action=c.feedback_type,
                               recipient=c.recipient, sender_domain=c.sender_domain, ip=c.source_ip,
                               provider=provider, status=None, diagnostic=c.arrival, source=event.source)
            store.bump(cur, "sendfleet_feedback_complaints_total", {
                "sender_domain": _label_domain(cfg, c.sender_domain), "ip": _label_ip(cfg, c.source_ip),
                "provider": _label_provider(cfg, provider)})
        if parsed.dmarc is not None:
            stored = store.store_dmarc(cur, parsed.dmarc)
        if parsed.tlsrpt is not None:
            stored = store.store_tlsrpt(cur, parsed.tlsrpt)
        store.bump(cur, "sendfleet_feedback_messages_total", {"kind": parsed.kind, "outcome": "stored"})
        store.set_state(cur, "last_processed", at.timestamp())
    return Outcome(parsed.kind, "stored" if stored else "duplicate", tuple(suppressed))


# ------------------------------------------------------------------------------------------- dead letters


def write_dead_letter(directory: Path, head: bytes, rest: IO[bytes] | None, *, error: str, recipient: str,
                      sender: str, now: datetime) -> Path:
    """The message (head, then whatever is left on `rest`) as <dir>/<stamp>-<pid>-<rand>.eml, and a JSON sidecar
    <same>.json naming the error, envelope and time; each written to a temp file then renamed."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}-{secrets.token_hex(4)}"
    path = directory / f"{name}.eml"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    size = len(head)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head)
            while rest is not None and (chunk := rest.read(_CHUNK)):
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    meta = {"error": error, "recipient": recipient, "sender": sender, "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "bytes": size, "message": path.name}
    atomicfile.write_atomic(directory / f"{name}.json", json.dumps(meta, indent=2) + "\n", mode=0o640)
    return path


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if isinstance(err, feedback.FeedbackParseError) else f"{type(err).__name__}: {text}"


# ------------------------------------------------------------------------------------------------ metrics


#: (kind, outcome) of sendfleet_feedback_messages_total: what `store_parsed` and a dead letter count
MESSAGE_SERIES = (("dsn", "stored"), ("arf", "stored"), ("dmarc", "stored"), ("tlsrpt", "stored"),
                  ("unknown", "dead_letter"))
BOUNCE_CLASSES = ("hard", "soft", "block")
_COUNTERS = {
    "sendfleet_feedback_messages_total": "Messages the feedback processor handled, by kind and outcome.",
    "sendfleet_feedback_bounces_total": "Bounces received, by sender domain, sending IP, provider and class.",
    "sendfleet_feedback_complaints_total": "Complaints (ARF) received, by sender domain, sending IP, provider.",
}


def metric_series(cfg: Config) -> dict[str, list[dict[str, str]]]:
    """Every series of the counters' bounded label sets, by metric: sender_domain a configured sender domain or
    `other`, ip a fleet IP or `unknown`, provider a configured class (`other` included), class hard|soft|block,
    (kind, outcome) of `MESSAGE_SERIES`. (D + 1) x (I + 1) x C x 4 + 5 series for D sender domains, I fleet IPs
    and C classes."""
    domains = [*sorted(cfg.sender_domains - {"other"}), "other"]
    ips = [*sorted(cfg.fleet_ips), "unknown"]
    providers = [*sorted(set(cfg.classes) - {shaping.OTHER}), shaping.OTHER]
    paths = [{"sender_domain": d, "ip": i, "provider": p} for d in domains for i in ips for p in providers]
    return {
        "sendfleet_feedback_messages_total": [{"kind": k, "outcome": o} for k, o in MESSAGE_SERIES],
        "sendfleet_feedback_bounces_total": [{**path, "class": k} for path in paths for k in BOUNCE_CLASSES],
        "sendfleet_feedback_complaints_total": paths,
    }


def render_metrics(cfg: Config, conn: psycopg.Connection[Any]) -> str:
    """The textfile: every series of `metric_series` (0 until counted) and any other the database counted (a
    sender domain or IP since removed from the configuration keeps its series), the active suppression entries
    by reason as of now, and when a message was last handled. Labels in name order."""
    counted: dict[str, dict[tuple[tuple[str, str], ...], int]] = {}
    for name, labels, value in store.counters(conn):
        counted.setdefault(name, {})[tuple(sorted(labels.items()))] = value
    families: list[Family] = []
    for name, series in metric_series(cfg).items():
        family = Family(name, _COUNTERS[name], "counter")
        values = dict(counted.get(name, {}))
        for labels in series:
            key = tuple(sorted(labels.items()))
            family.add(values.pop(key, 0), **dict(key))
        for key, value in sorted(values.items()):
            family.add(value, **dict(key))
        families.append(family)
    active = store.active_by_reason(conn)
    entries = Family("sendfleet_suppression_entries", "Active suppression entries, by reason.")
    for reason in suppression.REASONS:
        entries.add(active.get(reason, 0), reason=reason)
    last = store.state(conn, "last_processed")
    processed = Family("sendfleet_feedback_last_processed_timestamp_seconds",
                       "When the processor last handled a message.")
    processed.add(round(last, 3) if last is not None else 0)
    return render([*families, entries, processed])


def write_metrics(cfg: Config, conn: psycopg.Connection[Any]) -> tuple[Path | None, str]:
    """Render the metrics and, when the configuration has a textfile_dir, replace the file atomically:
    (its path or None, the text)."""
    text = render_metrics(cfg, conn)
    if cfg.textfile_dir is None:
        return None, text
    path = cfg.textfile_dir / METRICS_FILE
    atomicfile.write_atomic(path, text, mode=0o644)
    return path, text


# ---------------------------------------------------------------------------------------------- the entry


def process(cfg: Config, stdin: IO[bytes], recipient: str, sender: str, *, now: datetime | None = None,
            classifier: MxClassifier | None = None, err: IO[str] | None = None) -> tuple[int, Outcome | None]:
    """Handle one message; returns (exit code, outcome). Nothing is written when the database is unreachable."""
    err = err or sys.stderr
    head = stdin.read(cfg.limits.max_message_bytes + 1)
    try:
        with store.connect(cfg.database) as conn:
            return _process(cfg, conn, head, stdin, recipient, sender, now,
                            classifier or MxClassifier(cfg.classes), err)
    except store.DatabaseUnavailable as e:
        err.write(f"sendfleet-feedback: {e}; Postfix will retry\n")
        return EX_TEMPFAIL, None


def _process(cfg: Config, conn: psycopg.Connection[Any], head: bytes, stdin: IO[bytes], recipient: str, sender: str,
             now: datetime | None, classifier: MxClassifier, err: IO[str]) -> tuple[int, Outcome]:
    error: str | None = None
    outcome: Outcome | None = None
    if len(head) > cfg.limits.max_message_bytes:
        error = f"message larger than limits.max_message_bytes ({cfg.limits.max_message_bytes} bytes)"
    else:
        try:
            parsed = feedback.parse_message(head, recipient, bounce_domains=cfg.bounce_domains,
                                            fleet_ips=cfg.fleet_ips, rules=cfg.classes, limits=cfg.limits)
        except Exception as e:  # anything inside parsing: a dead letter, never a crash
            error = _one_line(e)
        else:
            try:
                outcome = store_parsed(cfg, conn, parsed, classifier, now)
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                err.write(f"sendfleet-feedback: database lost: {_one_line(e)}; Postfix will retry\n")
                return EX_TEMPFAIL, Outcome(parsed.kind, "tempfail", error=_one_line(e))
            except psycopg.Error as e:
                error = f"database refused it: {_one_line(e)}"
    if outcome is None:
        now = now or datetime.now(UTC)
        path = write_dead_letter(cfg.dead_letter_dir, head, stdin, error=error or "unknown", recipient=recipient,
                                 sender=sender, now=now)
        err.write(f"sendfleet-feedback: {error}; kept as {path}\n")
        try:
            with conn.transaction(), conn.cursor() as cur:
                store.bump(cur, "sendfleet_feedback_messages_total", {"kind": "unknown", "outcome": "dead_letter"})
                store.set_state(cur, "last_processed", now.timestamp())
        except psycopg.Error as e:
            err.write(f"sendfleet-feedback: dead letter not counted: {_one_line(e)}\n")
        outcome = Outcome("unknown", "dead_letter", dead_letter=path, error=error)
    try:
        write_metrics(cfg, conn)
    except (OSError, psycopg.Error) as e:
        err.write(f"sendfleet-feedback: metrics not written: {_one_line(e)}\n")
    return 0, outcome


