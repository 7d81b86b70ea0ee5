"""`python -m sendfleet.monitor {check|apply|delivery|status} --config /etc/sendfleet/monitor/config.json`.

The host-side adapter of the monitor: DNS through the `sendfleet vet` engine (sendfleet.dns.vetting), Postfix
through postconf(1) and postfix(1), the log through journalctl(1) or a log file. Every decision is made in
the pure core (sendfleet.core.drain, .poolmap, .maillog, .metrics).

Config (JSON, written by the dnsbl_monitor role): see roles/dnsbl_monitor/templates/config.json.j2.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sendfleet.atomicfile import write_atomic
from sendfleet.core import drain, maillog, poolmap, shaping
from sendfleet.core import queue as mailqueue
from sendfleet.core.metrics import Family, render
from sendfleet.core.resolvers import Resolver, parse_resolver
from sendfleet.core.verdicts import Outcome, ZoneStatus
from sendfleet.core.zones import ZonesConfig, parse_zones
from sendfleet.errors import CannotCheckError, SendfleetError, UsageError
from sendfleet.monitor import follow

STATE_VERSION = 1
# attempts (deferral: per IP and class over 10 minutes; bounce: per sender domain over an hour) and messages sent
# (complaint: per sender domain over a day) below which the rate alerts stay quiet (config alert_min_volume)
MIN_VOLUME = {"deferral": 20, "bounce": 100, "complaint": 1000}
CLASS_CACHE_MAX = 20_000  # recipient domains kept in the queue's classification cache
MAX_EVENTS = 200
TAG = "sendfleet-monitor"


# ------------------------------------------------------------------------------------------ small I/O


def now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).isoformat(timespec="seconds")


def log(message: str, level: int = 6) -> None:
    """One line on stdout: systemd puts it in the journal at syslog level `level` (SyslogLevelPrefix)."""
    sys.stdout.write(f"<{level}>{TAG}: {message}\n")
    sys.stdout.flush()


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as err:
        log(f"{path}: unreadable ({err}); starting from an empty state", 4)
        return default


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -------------------------------------------------------------------------------------------- config


_SPAN_UNITS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def timespan_seconds(value: Any, where: str) -> int:
    """A systemd time span of the role's form ('15min', '30s', '1h', '2d', or seconds) -> seconds (>= 1)."""
    text = str(value).strip().lower()
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz").strip()
    unit = text[len(number):].strip() if number else ""
    if not number.isdigit() or unit not in _SPAN_UNITS or int(number) * _SPAN_UNITS[unit] < 1:
        raise UsageError(f"{where}: expected a time span such as 15min, 30s or 1h, got {value!r}")
    return int(number) * _SPAN_UNITS[unit]



class Config:
    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        try:
            self.host = str(data.get("host", os.uname().nodename))
            self.zones_file = Path(data["zones_file"])
            self.resolvers = [parse_resolver(str(r)) for r in data.get("resolvers") or []]
            self.timeout = float(data.get("timeout", 2.0))
            self.retries = int(data.get("retries", 3))
            self.settings = drain.DrainSettings(
                auto_drain=bool(data.get("auto_drain", True)),
                restore_after=int(data.get("restore_after", 3)),
                drain_last=bool(data.get("drain_last", False)),
            )
            self.members: list[dict[str, Any]] = [dict(m) for m in data.get("members") or []]
            for m in self.members:
                m["ip"], m["pool"], m["transport"] = str(m["ip"]), str(m["pool"]), str(m["transport"])
                m["weight"] = int(m.get("weight", 1))
                m["limits"] = dict(m.get("limits") or {})
            self.state_file = Path(data.get("state_file", "/var/lib/sendfleet/monitor/state.json"))
            self.delivery_file = Path(data.get("delivery_file", "/var/lib/sendfleet/monitor/delivery.json"))
            self.textfile_dir = Path(data.get("textfile_dir", "/var/lib/prometheus/node-exporter"))
            self.fact_file = Path(data["fact_file"]) if data.get("fact_file") else None
            self.lock_file = Path(data.get("lock_file", "/run/sendfleet-monitor.lock"))
            self.apply_postfix = bool(data.get("apply_postfix", True))
            self.postfix_config_dir = Path(data.get("postfix_config_dir", "/etc/postfix"))
            self.log_source = str(data.get("log_source", "auto"))
            self.keep_hours = int(data.get("keep_hours", 168))
            self.reasons_top = int(data.get("reasons_top", 10))
            # the provider classes with a transport per IP (every class but other)
            shaping_data = data.get("shaping") or {}
            self.classes = sorted(c for c in (shaping_data.get("classes") or {}) if c != "other")
            self.class_data = shaping_data.get("classes") or {}
            self.shaping_state_file = Path(shaping_data.get("state_file", "/var/lib/sendfleet/monitor/shaping.json"))
            self.warmup_restarts = {str(k): str(v) for k, v in (data.get("warmup_restarts") or {}).items()}
            # how often the check runs (the timer's span): exported, so an alert can say "3 intervals late"
            self.interval_seconds = timespan_seconds(data.get("interval", "15min"), f"{source}: interval")
            # sender domain -> bounce domain: delivery counts and suppression refusals per sender domain
            self.sender_domains = {
                str(k).lower(): str(v).lower() for k, v in (data.get("sender_domains") or {}).items()
            }
            # the queue: postqueue -j on the delivery timer
            queue_data = data.get("queue") or {}
            self.queue = bool(queue_data.get("enabled", True))
            self.queue_age_threshold = int(queue_data.get("age_threshold", 3600))
            self.queue_lookups = int(queue_data.get("lookups_per_run", 20))
            self.class_cache_file = Path(queue_data.get("class_cache_file",
                                                        "/var/lib/sendfleet/monitor/domain-classes.json"))
            volumes = data.get("alert_min_volume") or {}
            unknown = sorted(set(volumes) - set(MIN_VOLUME))
            if unknown:
                raise ValueError(f"alert_min_volume: unknown rate {unknown[0]!r} (one of {', '.join(MIN_VOLUME)})")
            self.min_volume = {k: int(volumes.get(k, v)) for k, v in MIN_VOLUME.items()}
            if self.queue_age_threshold < 1 or self.queue_lookups < 0:
                raise ValueError("queue: age_threshold must be >= 1 and lookups_per_run >= 0")
        except (KeyError, TypeError, ValueError) as err:
            raise UsageError(f"{source}: bad monitor config: {err}") from None

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(m["ip"], m["pool"]) for m in self.members]

    @property
    def transports(self) -> dict[str, str]:
        return {m["transport"]: m["ip"] for m in self.members}


def load_config(path: Path) -> Config:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: cannot read the monitor config: {err}") from None
    return Config(data, str(path))


def load_zones(path: Path) -> ZonesConfig:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"{path}: cannot read the zones file: {err}") from None
    return parse_zones(data, str(path))


# ------------------------------------------------------------------------------------------ the check


def vet(cfg: Config, zones: ZonesConfig) -> tuple[dict[str, drain.Verdict], list[dict[str, Any]], dict[str, Any]]:
    """The `sendfleet vet` engine on this host's sending IPs. Never raises for DNS trouble: every IP is
    then `unknown` (an unknown never drains and never restores)."""
    from sendfleet.core.targets import parse_targets
    from sendfleet.dns.vetting import VetOptions, run_vet, system_resolvers

    ips = [ip for ip, _ in cfg.pairs]
    resolvers: Sequence[Resolver] = cfg.resolvers or system_resolvers()
    extra: dict[str, Any] = {"resolvers": [str(r) for r in resolvers]}
    if not ips:
        return {}, [], extra
    try:
        if not resolvers:
            raise CannotCheckError("no resolver configured and none in /etc/resolv.conf")
        run = run_vet(
            parse_targets(ips),
            zones,
            # timeout/retries of the config bound each question: its deadline is their product
            VetOptions(resolvers, timeout=cfg.timeout * (cfg.retries + 1), ptr=False, asn=False),
        )
    except (CannotCheckError, OSError) as err:
        detail = f"check failed: {err}"
        zstat = [{"zone": z.name, "status": ZoneStatus.UNREACHABLE.value, "detail": detail} for z in zones.enabled]
        unknown = {"zone": "*", "outcome": "unknown", "detail": detail}
        extra["error"] = detail
        return {ip: drain.Verdict(ip, drain.UNKNOWN, (unknown,)) for ip in ips}, zstat, extra
    zstat = [{"zone": h.zone, "status": h.status.value, "detail": h.detail} for h in run.health]
    verdicts: dict[str, drain.Verdict] = {}
    for report in run.book.reports():
        if report.kind != "ip":
            continue
        evidence = tuple(
            {
                "zone": a.zone,
                "outcome": a.outcome.label,
                "codes": list(a.codes),
                "meanings": list(a.meanings),
                "reason": a.reason,
                "detail": a.detail,
            }
            for a in report.answers
        )
        label = report.verdict.label if report.verdict is not Outcome.PENDING else drain.UNKNOWN
        verdicts[report.ip] = drain.Verdict(report.ip, label, evidence)
    extra["networks"] = [
        {"cidr": n.cidr, "listed": n.listed, "unknown": n.unknown, "total": n.total} for n in run.book.networks()
    ]
    extra["scan"] = run.scan
    return verdicts, zstat, extra


# ------------------------------------------------------------------------------------- Postfix (apply)


def postconf_n(cfg: Config) -> dict[str, str]:
    proc = subprocess.run(
        ["postconf", "-c", str(cfg.postfix_config_dir), "-n"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise CannotCheckError(f"postconf -n failed: {proc.stderr.strip()}")
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            out[name.strip()] = value.strip()
        elif line.endswith(" ="):
            out[line[:-2].strip()] = ""
    return out


def master_services(cfg: Config) -> set[str]:
    """The service names of master.cf (the transports that exist)."""
    proc = subprocess.run(
        ["postconf", "-c", str(cfg.postfix_config_dir), "-M"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise CannotCheckError(f"postconf -M failed: {proc.stderr.strip()}")
    return {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}


def throttled(cfg: Config) -> dict[str, int]:
    """"ip class" -> connections, for the shaper's throttles in force (its state file)."""
    if not cfg.class_data:
        return {}
    try:
        classes = shaping.parse_classes(cfg.class_data)
    except shaping.ShapingError:
        return {}
    paths = read_json(cfg.shaping_state_file, {}).get("paths") or []
    return shaping.throttled_connections(paths, classes, time.time())


def suspended(cfg: Config) -> list[str]:
    """The IPs the shaper suspended for class other (its state file)."""
    if not cfg.class_data:
        return []
    return shaping.suspended_other(read_json(cfg.shaping_state_file, {}).get("paths") or [], time.time())


def selection_plan(
    cfg: Config,
    drained: set[str],
    record: Mapping[str, Any],
    current: Mapping[str, str],
    services: set[str] | None = None,
) -> tuple[dict[str, str | None], dict[str, dict[str, str | None]]]:
    """main.cf changes (parameter -> value, None = remove) that make the pools' selection match the plan
    weights with drained IPs at 0, and the transport limits of the plan; plus the new override record.
    `services`: the transports master.cf has (None: not checked); a member without one is never selected
    (the postfix role left it out, e.g. it failed the FCrDNS gate since the monitor's config was written)."""
    out = set(drained) | {m["ip"] for m in cfg.members if services is not None and m["transport"] not in services}
    desired: dict[str, str] = {}
    for m in cfg.members:
        if m["ip"] not in out:
            # the IP's own transport and its per-provider-class ones (a warming IP is warming for every class)
            for t in [m["transport"], *(poolmap.class_transport_of(m["transport"], c) for c in cfg.classes)]:
                desired.update(poolmap.transport_limit_params(t, m["limits"]))
    # the shaper's throttles in force that lower a path's connections (per destination)
    for path, conns in throttled(cfg).items():
        ip, _, klass = path.partition(" ")
        member = next((m for m in cfg.members if m["ip"] == ip), None)
        if member is None or ip in out:
            continue
        param = f"{poolmap.class_transport_of(member['transport'], klass)}_destination_concurrency_limit"
        desired[param] = str(min(conns, int(desired.get(param, conns))))
    # class other's mail takes the pools' randmaps: an IP suspended for class other leaves them
    pools = poolmap.pool_weights(poolmap.drain(cfg.members, out | set(suspended(cfg))))
    changes: dict[str, str | None] = {}
    maps = current.get("sender_dependent_default_transport_maps")
    if maps is not None:
        new_maps = poolmap.rewrite_pool_maps(maps, pools)
        if new_maps != maps:
            changes["sender_dependent_default_transport_maps"] = new_maps
    names = set(desired) | set(record)
    plan = poolmap.plan_params({n: current.get(n) for n in names}, record, desired)
    changes.update(plan.changes)
    return changes, plan.record


def apply_postfix(cfg: Config, changes: Mapping[str, str | None]) -> None:
    """Write the changes with postconf, validate with `postfix check`, reload. On a failed check the
    previous main.cf is put back and the error raised."""
    main_cf = cfg.postfix_config_dir / "main.cf"
    backup = main_cf.with_name(".main.cf.sendfleet-monitor")
    shutil.copy2(main_cf, backup)
    try:
        sets = [f"{k}={v}" for k, v in changes.items() if v is not None]
        unsets = [k for k, v in changes.items() if v is None]
        if sets:
            _run(["postconf", "-c", str(cfg.postfix_config_dir), "-e", *sets])
        if unsets:
            _run(["postconf", "-c", str(cfg.postfix_config_dir), "-X", *unsets])
        check = subprocess.run(["postfix", "-c", str(cfg.postfix_config_dir), "check"], capture_output=True,
                               text=True, check=False)
        if check.returncode != 0 or "fatal" in check.stderr:
            raise CannotCheckError(f"postfix check failed after the change: {check.stderr.strip()}")
    except BaseException:
        shutil.copy2(backup, main_cf)
        raise
    finally:
        with contextlib.suppress(OSError):
            backup.unlink()
    status = subprocess.run(["postfix", "-c", str(cfg.postfix_config_dir), "status"], capture_output=True,
                            check=False)
    if status.returncode == 0:
        _run(["postfix", "-c", str(cfg.postfix_config_dir), "reload"])


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CannotCheckError(f"{' '.join(argv[:3])}... failed: {proc.stderr.strip()}")


def sync_selection(cfg: Config, state: dict[str, Any], *, dry_run: bool = False) -> dict[str, str | None]:
    """Make Postfix match the plan and the drained IPs of `state`. Returns the changes (made or due)."""
    if not cfg.apply_postfix:
        return {}
    drained = {ip for ip, s in (state.get("ips") or {}).items() if s.get("status") == drain.DRAINED}
    current = postconf_n(cfg)
    services = master_services(cfg)
    missing = sorted(m["transport"] for m in cfg.members if m["transport"] not in services)
    if missing:
        log(f"postfix: no master.cf service for {', '.join(missing)}: left out of the selection", 4)
    changes, record = selection_plan(cfg, drained, state.get("overrides") or {}, current, services)
    if changes and not dry_run:
        apply_postfix(cfg, changes)
        for name, value in sorted(changes.items()):
            log(f"postfix: {name} = {value if value is not None else '(removed)'}")
    if not dry_run:
        state["overrides"] = record
    return changes


# ------------------------------------------------------------------------------------------- metrics


def monitor_metrics(cfg: Config, state: Mapping[str, Any]) -> str:
    listed = Family("sendfleet_ip_listed", "1 listed, 0 clean, -1 unknown: this IP in this zone at the last check")
    verdict = Family("sendfleet_ip_verdict", "The IP's verdict at the last check (1 for the current one)")
    zone_status = Family("sendfleet_zone_status", "Zone health at the last check (1 for the current status)")
    drained = Family("sendfleet_ip_drained", "1 if the IP is drained (out of its pool's transport selection)")
    blocked = Family("sendfleet_ip_drain_blocked", "1 if the IP is listed but kept: last in-service IP of its pool")
    streak = Family("sendfleet_ip_clean_streak", "Consecutive clean checks of a drained IP")
    weight = Family("sendfleet_ip_weight", "Entries of the IP's transport in its pool's randmap (0: drained)")
    warm_day = Family("sendfleet_ip_warmup_day", "Warm-up day of the IP (absent when warm)")
    network = Family("sendfleet_network_listed_ratio", "Share of the /24 listed at the last check")
    last_run = Family("sendfleet_monitor_last_run_timestamp_seconds", "End of the last monitor check")
    last_ok = Family("sendfleet_monitor_last_success_timestamp_seconds", "End of the last check with a usable zone")
    check_ok = Family("sendfleet_monitor_check_ok", "1 if the last check reached at least one healthy zone")
    interval = Family("sendfleet_monitor_interval_seconds", "Configured time between two monitor checks")
    ips = state.get("ips") or {}
    verdicts = state.get("verdicts") or {}
    for m in cfg.members:
        ip, pool = m["ip"], m["pool"]
        s = ips.get(ip) or {}
        v = verdicts.get(ip) or {}
        for e in v.get("evidence") or []:
            value = {"listed": 1, "clean": 0}.get(str(e.get("outcome")), -1)
            listed.add(value, ip=ip, pool=pool, zone=str(e.get("zone")))
        for name in drain.VERDICTS:
            verdict.add(1 if v.get("verdict", drain.UNKNOWN) == name else 0, ip=ip, pool=pool, verdict=name)
        is_drained = s.get("status") == drain.DRAINED
        drained.add(1 if is_drained else 0, ip=ip, pool=pool)
        blocked.add(1 if s.get("drain_blocked") else 0, ip=ip, pool=pool)
        streak.add(int(s.get("clean_streak", 0)), ip=ip, pool=pool)
        weight.add(0 if is_drained else m["weight"], ip=ip, pool=pool)
        day = (m.get("warmup") or {}).get("day")
        if day is not None and not (m.get("warmup") or {}).get("warm"):
            warm_day.add(int(day), ip=ip, pool=pool)
    for z in state.get("zones") or []:
        for st in ZoneStatus:
            zone_status.add(1 if z.get("status") == st.value else 0, zone=str(z.get("zone")), status=st.value)
    for n in state.get("networks") or []:
        network.add(n["listed"] / n["total"] if n.get("total") else 0.0, cidr=str(n["cidr"]))
    last_run.add(float(state.get("last_run_ts", 0)))
    last_ok.add(float(state.get("last_success_ts", 0)))
    check_ok.add(1 if state.get("check_ok") else 0)
    interval.add(cfg.interval_seconds)
    fams = [listed, verdict, zone_status, drained, blocked, streak, weight, warm_day, network, last_run, last_ok,
            check_ok, interval]
    return render(fams)


def delivery_metrics(book: maillog.DeliveryBook, cfg: Config, last_run: float) -> str:
    total = Family(
        "sendfleet_delivery_total", "Delivery attempts per sending IP, provider class and status", "counter"
    )
    reasons = Family(
        "sendfleet_delivery_reason_total", "Top deferral/bounce reasons per IP, provider class and status", "counter"
    )
    last_sent = Family("sendfleet_delivery_last_sent_timestamp_seconds", "Last successful delivery through the IP")
    run = Family("sendfleet_delivery_last_run_timestamp_seconds", "End of the last log scan")
    by_domain = Family("sendfleet_delivery_sender_domain_total",
                       "Delivery attempts per sender domain (of the envelope sender) and status", "counter")
    refusals = Family("sendfleet_suppression_refusals_total",
                      "Recipients refused at submission because the suppression list holds them", "counter")
    min_volume = Family("sendfleet_alert_min_volume", "Volume below which a rate alert stays quiet (per rate)")
    ips = list(dict.fromkeys([m["ip"] for m in cfg.members] + sorted({k[0] for k in book.totals})))
    # every (IP, class, status) of the config, zeros included (a rate needs the series before its first
    # count): IPs x classes x statuses series, whatever the recipients
    providers = sorted({*cfg.classes, poolmap.OTHER_CLASS})  # the book labels every count with one of them
    for ip in ips:
        for prov in providers:
            for st in maillog.STATUSES:
                total.add(book.totals.get((ip, prov, st), 0), ip=ip, provider=prov, status=st)
    for (ip, prov, st, reason), n in book.top_reasons(cfg.reasons_top):
        reasons.add(n, ip=ip, provider=prov, status=st, reason=reason)
    for ip, ts in sorted(book.last_sent.items()):
        last_sent.add(ts, ip=ip)
    # every configured sender domain and other, zeros included: sender domains x statuses series
    domains = [*sorted(cfg.sender_domains), poolmap.OTHER_CLASS]
    for domain in domains:
        for st in maillog.STATUSES:
            by_domain.add(book.domain_totals.get((domain, st), 0), sender_domain=domain, status=st)
        refusals.add(book.refusals.get(domain, 0), sender_domain=domain)
    for rate, n in cfg.min_volume.items():
        min_volume.add(n, rate=rate)
    run.add(last_run)
    return render([total, reasons, last_sent, by_domain, refusals, min_volume, run])


def queue_metrics(summary: mailqueue.QueueSummary | None, cfg: Config, now: float) -> str:
    """The queue's metrics; `summary` None: postqueue could not be read (only the ok gauge, at 0)."""
    messages = Family("sendfleet_queue_messages", "Messages in Postfix's queue")
    oldest = Family("sendfleet_queue_oldest_seconds", "Age of the oldest message of the queue (0 when empty)")
    deferred = Family("sendfleet_queue_deferred_messages",
                      "Deferred messages with a recipient of the provider class (by the domain's MX)")
    threshold = Family("sendfleet_queue_age_threshold_seconds", "Oldest-message age the queue alert fires above")
    ok = Family("sendfleet_queue_check_ok", "1 if postqueue -j could be read at the last run")
    run = Family("sendfleet_queue_last_run_timestamp_seconds", "End of the last queue reading")
    if summary is not None:
        for q in mailqueue.QUEUES:
            messages.add(summary.messages[q], queue=q)
            oldest.add(round(summary.oldest_seconds[q], 3), queue=q)
        for klass, n in sorted(summary.deferred_by_provider.items()):
            deferred.add(n, provider=klass)
    threshold.add(cfg.queue_age_threshold)
    ok.add(1 if summary is not None else 0)
    run.add(now)
    return render([messages, oldest, deferred, threshold, ok, run])


# ---------------------------------------------------------------------------------------- commands


def cmd_check(cfg: Config) -> int:
    with locked(cfg.lock_file):
        state: dict[str, Any] = read_json(cfg.state_file, {})
        previous = {ip: drain.IpState.from_dict(s) for ip, s in (state.get("ips") or {}).items()}
        zones = load_zones(cfg.zones_file)
        verdicts, zstat, extra = vet(cfg, zones)
        now = now_iso()
        result = drain.step(previous, cfg.pairs, verdicts, cfg.settings, now)
        state.update(
            {
                "version": STATE_VERSION,
                "host": cfg.host,
                "updated": now,
                "ips": {ip: s.as_dict() for ip, s in result.states.items()},
                "verdicts": {
                    ip: {"verdict": v.verdict, "evidence": [dict(e) for e in v.evidence]} for ip, v in verdicts.items()
                },
                "zones": zstat,
                "networks": extra.get("networks", []),
                "resolvers": extra.get("resolvers", []),
                "settings": {
                    "auto_drain": cfg.settings.auto_drain,
                    "restore_after": cfg.settings.restore_after,
                    "drain_last": cfg.settings.drain_last,
                },
            }
        )
        check_ok = "error" not in extra and any(z["status"] == ZoneStatus.OK.value for z in zstat)
        state["check_ok"] = check_ok
        if "error" in extra:
            log(f"check could not reach the blocklists: {extra['error']}; nothing drained or restored", 4)
        for z in zstat:
            if z["status"] != ZoneStatus.OK.value and "error" not in extra:
                log(f"zone {z['zone']} {z['status']}: {z['detail']} (its answers count as unknown)", 4)
        error = record_and_sync(cfg, state, result.actions, now)
        end = time.time()
        state["last_run_ts"] = end
        if check_ok:
            state["last_success_ts"] = end
        write_atomic(cfg.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")
        write_atomic(cfg.textfile_dir / "sendfleet_monitor.prom", monitor_metrics(cfg, state))
        write_fact(cfg, state)
        summary = ", ".join(
            f"{ip} {s['status']}/{(state['verdicts'].get(ip) or {}).get('verdict', '?')}"
            for ip, s in state["ips"].items()
        )
        log(f"checked {len(cfg.members)} IPs: {summary or 'none'}")
        if error is not None:
            raise error
    return 0


def resync(cfg: Config) -> None:
    """Make Postfix match the plan, the drained IPs and the shaper's throttles now (the shaper calls this when a
    throttle starts or ends), and rewrite the local fact."""
    with locked(cfg.lock_file):
        state: dict[str, Any] = read_json(cfg.state_file, {})
        sync_selection(cfg, state)
        state.setdefault("version", STATE_VERSION)
        write_atomic(cfg.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")
        write_fact(cfg, state)


def drain_on_reply(cfg: Config, ip: str, evidence: Mapping[str, Any]) -> None:
    """Drain `ip` because a receiver's reply quoted a blocklist (the shaper calls this): the check's rules apply
    (auto_drain, never the last in-service IP of its pool unless drain_last), and its restore rule brings the IP
    back after `restore_after` clean checks."""
    with locked(cfg.lock_file):
        state: dict[str, Any] = read_json(cfg.state_file, {})
        previous = {i: drain.IpState.from_dict(s) for i, s in (state.get("ips") or {}).items()}
        now = now_iso()
        result = drain.listed_by(previous, cfg.pairs, ip, [evidence], cfg.settings, now)
        state["ips"] = {i: s.as_dict() for i, s in result.states.items()}
        state.setdefault("version", STATE_VERSION)
        error = record_and_sync(cfg, state, result.actions, now)
        write_atomic(cfg.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")
        write_atomic(cfg.textfile_dir / "sendfleet_monitor.prom", monitor_metrics(cfg, state))
        write_fact(cfg, state)
        if error is not None:
            raise error


def record_and_sync(
    cfg: Config, state: dict[str, Any], actions: Sequence[drain.Action], now: str
) -> SendfleetError | None:
    """Journal and record the drain machinery's actions in `state`, then make Postfix match it; the error that
    kept Postfix unchanged, if any (the state is written all the same)."""
    events: list[dict[str, Any]] = list(state.get("events") or [])
    for action in actions:
        level = {"drain": 4, "blocked": 3, "listed_no_drain": 4, "restore": 5}.get(action.kind, 6)
        log(action.message() + " evidence=" + json.dumps([dict(e) for e in action.evidence], sort_keys=True), level)
        events.append({"time": now, **action.as_dict()})
    state["events"] = events[-MAX_EVENTS:]
    try:
        sync_selection(cfg, state)
    except SendfleetError as err:
        log(f"postfix not changed: {err}", 3)
        return err
    return None


def write_fact(cfg: Config, state: Mapping[str, Any]) -> None:
    """Ansible local fact (ansible_local.sendfleet_monitor): the drained IPs and the warm-up restarts, for the
    postfix role (sf_apply_drained, sf_warmup_plan)."""
    if cfg.fact_file is None:
        return
    ips = state.get("ips") or {}
    delivery = read_json(cfg.delivery_file, {})
    last_sent = delivery.get("last_sent") if isinstance(delivery, dict) else None
    fact = {
        "drained": sorted(ip for ip, s in ips.items() if s.get("status") == drain.DRAINED),
        "last_sent": dict(sorted((last_sent or {}).items())),  # ip -> Unix time of its last delivery
        "restarts": dict(sorted(cfg.warmup_restarts.items())),  # warm-up restarts after idle periods
        "throttled": throttled(cfg),  # "ip class" -> connections of a throttle in force (the shaper's)
        "suspended_other": suspended(cfg),  # IPs suspended for class other: out of the pools' randmaps
        "updated": state.get("updated"),
    }
    write_atomic(cfg.fact_file, json.dumps(fact, sort_keys=True) + "\n")


def cmd_apply(cfg: Config, dry_run: bool) -> int:
    """Exit 0: Postfix already matched; 1: it did not (and was changed unless --dry-run)."""
    with locked(cfg.lock_file):
        state: dict[str, Any] = read_json(cfg.state_file, {})
        known = {m["ip"] for m in cfg.members}
        state["ips"] = {ip: s for ip, s in (state.get("ips") or {}).items() if ip in known}
        changes = sync_selection(cfg, state, dry_run=dry_run)
        for name, value in sorted(changes.items()):
            print(f"{'would set' if dry_run else 'set'} {name} = {value if value is not None else '(removed)'}")
        if not dry_run:
            state.setdefault("version", STATE_VERSION)
            write_atomic(cfg.state_file, json.dumps(state, indent=2, sort_keys=True) + "\n")
            write_atomic(cfg.textfile_dir / "sendfleet_monitor.prom", monitor_metrics(cfg, state))
            write_fact(cfg, state)
        return 1 if changes else 0


# -------------------------------------------------------------------------------------------- delivery


def log_source(cfg: Config) -> str:
    if cfg.log_source != "auto":
        return cfg.log_source
    proc = subprocess.run(["postconf", "-c", str(cfg.postfix_config_dir), "-h", "maillog_file"],
                          capture_output=True, text=True, check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip()
    if shutil.which("journalctl"):
        return "journal"
    return "/var/log/mail.log"


def cmd_delivery(cfg: Config) -> int:
    data: dict[str, Any] = read_json(cfg.delivery_file, {})
    book = maillog.DeliveryBook(cfg.transports, cfg.classes, cfg.sender_domains)
    book.load(data)
    position: dict[str, Any] = dict(data.get("position") or {})
    source = log_source(cfg)
    now = time.time()
    count = 0
    follower = follow.Follower(source, position, since=now - cfg.keep_hours * 3600, follow=False)
    for ts, ident, msg in follower.lines():
        if book.feed(ident, msg, ts):
            count += 1
    position = follower.position
    book.prune(cfg.keep_hours, now)
    read_until = time.time()  # every log line written before this was read
    out = book.as_dict(reasons_limit=max(cfg.reasons_top * 5, 50))
    out["position"] = position
    out["host"] = cfg.host
    out["updated"] = now_iso(read_until)
    out["last_run_ts"] = read_until
    write_atomic(cfg.delivery_file, json.dumps(out, indent=1, sort_keys=True) + "\n")
    write_atomic(cfg.textfile_dir / "sendfleet_delivery.prom", delivery_metrics(book, cfg, read_until))
    if count:
        log(f"delivery: {count} new delivery lines from {source}")
    if cfg.queue:
        read_queue(cfg)
    return 0


# ----------------------------------------------------------------------------------------------- queue


def postqueue_json(cfg: Config) -> str:
    proc = subprocess.run(["postqueue", "-c", str(cfg.postfix_config_dir), "-j"], capture_output=True, text=True,
                          check=False, timeout=60)
    if proc.returncode != 0:
        raise CannotCheckError(f"postqueue -j failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


Lookup = Callable[[str], tuple[str | None, float]]


def classify_domains(cfg: Config, domains: Sequence[str], now: float, lookup: Lookup | None = None) -> dict[str, str]:
    """Recipient domain -> provider class for `domains`, from the cache file; at most `queue_lookups` domains
    missing from it (or expired) are looked up now (their MX hosts through sendfleet.core.shaping.classify), the
    rest count as `other` this run and are looked up on later runs. The cache is bounded and rewritten."""
    cache: dict[str, list[Any]] = {}
    raw = read_json(cfg.class_cache_file, {})
    if isinstance(raw, dict):
        cache = {str(d): v for d, v in raw.items() if isinstance(v, list) and len(v) == 2}
    out: dict[str, str] = {}
    missing = [d for d in domains if d not in cache or float(cache[d][1]) <= now]
    if missing and cfg.queue_lookups and cfg.class_data:
        if lookup is None:
            lookup = _mx_lookup(cfg)
        for domain in missing[: cfg.queue_lookups]:
            klass, ttl = lookup(domain)
            if klass is not None:
                cache[domain] = [klass, now + ttl]
    for d in domains:
        hit = cache.get(d)
        out[d] = str(hit[0]) if hit is not None else poolmap.OTHER_CLASS
    if len(cache) > CLASS_CACHE_MAX:  # keep the entries that hold longest
        cache = dict(sorted(cache.items(), key=lambda kv: -float(kv[1][1]))[:CLASS_CACHE_MAX])
    write_atomic(cfg.class_cache_file, json.dumps(cache, sort_keys=True) + "\n")
    return out


def _mx_lookup(cfg: Config) -> Lookup:
    from sendfleet.dns.mx import MxLookup
    from sendfleet.monitor.shaper import lookup_class

    classes = shaping.parse_classes(cfg.class_data)
    mx = MxLookup([r.address for r in cfg.resolvers], port=cfg.resolvers[0].port if cfg.resolvers else 53,
                  timeout=cfg.timeout)

    def lookup(domain: str) -> tuple[str | None, float]:
        return lookup_class(mx, domain, classes)

    return lookup


def read_queue(cfg: Config) -> mailqueue.QueueSummary | None:
    """Read the queue with postqueue -j and write sendfleet_queue.prom; None when it could not be read (the file
    then says so: sendfleet_queue_check_ok 0)."""
    now = time.time()
    summary: mailqueue.QueueSummary | None = None
    try:
        messages, bad = mailqueue.parse(postqueue_json(cfg).splitlines())
        classes = classify_domains(cfg, mailqueue.deferred_domains(messages), now)
        summary = mailqueue.summarise(messages, now, classes, cfg.classes, bad)
        if bad:
            log(f"queue: {bad} lines of postqueue -j were not queue entries", 4)
    except (CannotCheckError, OSError, subprocess.TimeoutExpired) as err:
        log(f"queue: not read: {err}", 4)
    write_atomic(cfg.textfile_dir / "sendfleet_queue.prom", queue_metrics(summary, cfg, time.time()))
    return summary


def cmd_status(cfg: Config) -> int:
    state = read_json(cfg.state_file, {})
    print(json.dumps(state, indent=2, sort_keys=True))
    return 0


# ---------------------------------------------------------------------------------------------- main


def cmd_shaping(args: argparse.Namespace) -> int:
    """Ask the running shaper (its control socket): status, or an operator's suspend/resume/throttle."""
    from sendfleet.monitor import shaper

    data = json.loads(args.config.read_text(encoding="utf-8"))
    sock = Path((data.get("shaping") or {}).get("control_socket", "/run/sendfleet/shaper.sock"))
    action = args.action or "status"
    request: dict[str, Any] = {"command": action}
    if action != "status":
        if not args.ip or not args.klass:
            raise UsageError(f"shaping {action}: --ip and --class are required")
        request.update({"ip": args.ip, "class": args.klass, "seconds": args.seconds})
    try:
        out = shaper.control(sock, request)
    except OSError as err:
        raise CannotCheckError(f"the shaper is not answering on {sock}: {err} (systemctl status sendfleet-shaper)") \
            from None
    print(json.dumps(out, sort_keys=True))
    if not out.get("ok"):
        raise UsageError(str(out.get("error")))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dnsdrift"]:  # the monitoring host's check, with options of its own
        from sendfleet.monitor import dnsdrift

        return dnsdrift.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m sendfleet.monitor", description=__doc__,
                                     epilog="python -m sendfleet.monitor dnsdrift --help: the DNS drift check")
    parser.add_argument("command", choices=("check", "apply", "delivery", "status", "shaper", "shaping"))
    parser.add_argument("action", nargs="?", choices=("status", "suspend", "resume", "throttle"),
                        help="shaping: what to ask the running shaper")
    parser.add_argument("--config", type=Path, default=Path("/etc/sendfleet/monitor/config.json"))
    parser.add_argument("--dry-run", action="store_true", help="apply: only say what would change")
    parser.add_argument("--ip", help="shaping suspend|resume|throttle: the sending IP")
    parser.add_argument("--class", dest="klass", help="shaping suspend|resume|throttle: the provider class")
    parser.add_argument("--seconds", type=float, help="shaping suspend|throttle: for how long (default: until resumed)")
    args = parser.parse_args(argv)
    try:
        if args.command == "shaper":
            from sendfleet.monitor import shaper

            return shaper.serve(args.config)
        if args.command == "shaping":
            return cmd_shaping(args)
        cfg = load_config(args.config)
        if args.command == "check":
            return cmd_check(cfg)
        if args.command == "apply":
            return cmd_apply(cfg, args.dry_run)
        if args.command == "delivery":
            return cmd_delivery(cfg)
        return cmd_status(cfg)
    except SendfleetError as err:
        log(f"{args.command}: {err}", 3)
        return err.exit_code
