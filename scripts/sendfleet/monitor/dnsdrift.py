"""`python -m sendfleet.monitor dnsdrift --plan FILE --textfile-dir DIR [--nameserver IP]... [--port N]
[--interval SPAN]`: are the fleet's DNS records still what the plan says?

Run by the monitoring role's `sendfleet-dnsdrift.timer` on the monitoring host. FILE is the output of
`sendfleet dns plan --format json` (made on the controller, copied to /etc/sendfleet/dns-plan.json). Every
publishable record of the plan is asked of the nameservers (the inventory's `dns_resolver`: what the world sees;
none given: the system's resolvers), compared with the rules `sendfleet dns apply` uses
(sendfleet.core.dnsdiff.drifted), and DIR/sendfleet_dns.prom is written atomically for node_exporter:

  sendfleet_dns_record_drift{zone,name,type}        1 differs from the plan (missing, other value), 0 as planned
                                                    or unknown (its lookup failed: unknown is not drift)
  sendfleet_dns_check_ok                            1 every record got an answer, 0 some or all could not be asked
                                                    (or the plan could not be read)
  sendfleet_dns_last_check_timestamp_seconds        end of the last run
  sendfleet_dns_last_success_timestamp_seconds      end of the last run with check_ok 1 (carried over from the
                                                    previous file; the first run's time if none succeeded yet)
  sendfleet_dns_check_interval_seconds              the timer's interval (--interval), for the alert that says
                                                    the check has not succeeded for three intervals

Exit 0 when every record was checked (drift or not: drift is for the alert), 3 when some could not be, 2 on an
unreadable plan. Only the standard library, dnspython and the sendfleet core are needed on the host.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sendfleet.atomicfile import write_atomic
from sendfleet.core.dnsdiff import ManagedKey, drifted, managed_key, seen
from sendfleet.core.inventory import ResolverSettings
from sendfleet.core.lookup import Lookup
from sendfleet.core.metrics import Family, parse, render
from sendfleet.core.records import PlannedRecord, records_from_json
from sendfleet.dns.resolve import ResolverLookup
from sendfleet.errors import CannotCheckError, SendfleetError, UsageError
from sendfleet.monitor.agent import timespan_seconds

TEXTFILE = "sendfleet_dns.prom"
TAG = "sendfleet-dnsdrift"


@dataclass(frozen=True)
class DriftCheck:
    """One run: every publishable record's key, those that drifted, and what could not be told."""

    keys: tuple[ManagedKey, ...]
    drifted: frozenset[ManagedKey]
    unknown: tuple[str, ...]  # one line per record (or for the whole check) that could not be asked

    @property
    def ok(self) -> bool:
        return not self.unknown


def check(records: Sequence[PlannedRecord], lookup: Lookup) -> DriftCheck:
    """Ask `lookup` for every publishable record and compare; a lookup that raises CannotCheckError (the resolver
    never answered) makes every record unknown."""
    keys = tuple(sorted({managed_key(r) for r in records if r.publishable}))
    try:
        current, unknown = seen(records, lookup)
    except CannotCheckError as err:
        return DriftCheck(keys, frozenset(), (str(err),))
    return DriftCheck(keys, frozenset(drifted(records, current)), tuple(unknown))


def metrics_text(result: DriftCheck | None, now: float, last_success: float, interval: float | None) -> str:
    """The textfile; `result` None: the plan could not be read (no record gauges, check_ok 0)."""
    drift = Family("sendfleet_dns_record_drift", "1 if the published record differs from the plan (0: as planned "
                   "or unknown)")
    ok = Family("sendfleet_dns_check_ok", "1 if every planned record could be asked at the last check")
    last = Family("sendfleet_dns_last_check_timestamp_seconds", "End of the last DNS drift check")
    success = Family("sendfleet_dns_last_success_timestamp_seconds", "End of the last DNS drift check with check_ok 1")
    every = Family("sendfleet_dns_check_interval_seconds", "Configured time between two DNS drift checks")
    if result is not None:
        # one series per zone, name and type (two planned values in one TXT RRset are one RRset)
        series: dict[tuple[str, str, str], int] = {}
        for key in result.keys:
            label = (key.zone, key.name, key.rtype)
            series[label] = max(series.get(label, 0), 1 if key in result.drifted else 0)
        for (zone, name, rtype), value in sorted(series.items()):
            drift.add(value, zone=zone, name=name, type=rtype)
    ok.add(1 if result is not None and result.ok else 0)
    last.add(now)
    success.add(last_success)
    families = [drift, ok, last, success]
    if interval is not None:
        every.add(interval)
        families.append(every)
    return render(families)


def previous_success(path: Path) -> float | None:
    """The last success time the previous file recorded (None: no such file or value)."""
    try:
        samples = parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, IndexError):
        return None
    return samples.get(("sendfleet_dns_last_success_timestamp_seconds", ()))


def read_plan(path: Path) -> tuple[PlannedRecord, ...]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such plan (the monitoring role writes it from 'sendfleet dns plan')") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: unreadable plan ({err})") from None
    return records_from_json(data, str(path))


def run(plan: Path, textfile_dir: Path, lookup: Lookup, interval: float | None = None,
        now: float | None = None) -> int:
    """One check: read the plan, ask, compare, write the textfile (also when the plan is unreadable: check_ok 0).
    Returns the exit code."""
    target = textfile_dir / TEXTFILE
    before = previous_success(target)
    result: DriftCheck | None = None
    error: SendfleetError | None = None
    try:
        result = check(read_plan(plan), lookup)
    except UsageError as err:
        error = err
    end = time.time() if now is None else now
    success = end if result is not None and result.ok else (before if before is not None else end)
    write_atomic(target, metrics_text(result, end, success, interval))
    if error is not None:
        log(f"{error}", 3)
        return error.exit_code
    assert result is not None
    for key in sorted(result.drifted):
        log(f"drift: {key.name} {key.rtype} (zone {key.zone}) differs from the plan", 4)
    for line in result.unknown:
        log(f"not checked: {line}", 4)
    log(f"{len(result.keys)} record(s) checked, {len(result.drifted)} drifted, {len(result.unknown)} unknown")
    return 0 if result.ok else CannotCheckError.exit_code


def log(message: str, level: int = 6) -> None:
    """One line on stdout: systemd puts it in the journal at syslog level `level` (SyslogLevelPrefix)."""
    sys.stdout.write(f"<{level}>{TAG}: {message}\n")
    sys.stdout.flush()


def _nameserver(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sendfleet.monitor dnsdrift", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, required=True, metavar="FILE",
                        help="the JSON of 'sendfleet dns plan --format json'")
    parser.add_argument("--textfile-dir", type=Path, required=True, metavar="DIR",
                        help="node_exporter's textfile directory")
    parser.add_argument("--nameserver", type=_nameserver, action="append", default=[], metavar="IP",
                        help="resolver to ask (repeatable; default: the system's)")
    parser.add_argument("--port", type=int, default=53, help="the nameservers' port (default 53)")
    parser.add_argument("--interval", metavar="SPAN",
                        help="the timer's interval (systemd time span, e.g. 5min), exported")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per question (default 2)")
    args = parser.parse_args(argv)
    try:
        if not 1 <= args.port <= 65535:
            raise UsageError(f"--port {args.port}: expected 1..65535")
        interval = None if args.interval is None else float(timespan_seconds(args.interval, "--interval"))
        lookup = ResolverLookup(ResolverSettings(tuple(args.nameserver), args.port), timeout=args.timeout,
                                lifetime=3 * args.timeout)
        return run(args.plan, args.textfile_dir, lookup, interval)
    except SendfleetError as err:
        log(f"{err}", 3)
        return err.exit_code
