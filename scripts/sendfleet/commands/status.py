"""`sendfleet status -i INVENTORY [--format table|json]`: the fleet now, per sender and sending IP: pool, state (in
service, warming day N, drained, suspended or throttled per provider class), the last hour's deliveries per
provider class (sent / deferred / bounced), the queue (messages and oldest age), and the firing alerts.

Source: the Prometheus HTTP API (`/api/v1/query`, `/api/v1/alerts`) when the inventory names one (the variable
`prometheus_url`, else the first host of group `monitoring` on port 9090; `--prometheus URL` overrides); otherwise,
or when it does not answer, every sender over SSH as `sendfleet report` does (the monitor's state, delivery,
shaping and config files, and `postqueue -j`; no alerts then). `--from-dir DIR` reads DIR/<host>/{state,delivery,
shaping,config}.json and DIR/<host>/postqueue.json instead of SSH.

Over SSH the last hour is the current and the previous clock hour of the monitor's hourly counts; from Prometheus
it is `increase(...[1h])`. Exit 0, or 3 when nothing could be reached.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sendfleet.core import maillog, poolmap
from sendfleet.core import queue as mailqueue
from sendfleet.errors import EXIT_OK, CannotCheckError, UsageError
from sendfleet.inventory_io import add_inventory_options

if TYPE_CHECKING:
    from sendfleet.core.inventory import Inventory

STATE_DIR = "/var/lib/sendfleet/monitor"
CONFIG_FILE = "/etc/sendfleet/monitor/config.json"
PROMETHEUS_PORT = 9090
FILES = ("state", "delivery", "shaping", "config")
SHOWN_QUEUES = ("active", "deferred", "hold", "incoming")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "status", help="the fleet now: per host and IP the state, last hour, queue and firing alerts",
        description="Per sender and sending IP: pool, state (in service / warming day N / drained / suspended or "
        "throttled per provider class), the last hour's deliveries per provider class, the queue, and the firing "
        "alerts; from Prometheus when the inventory names one, else from the senders over SSH.",
        epilog="example: sendfleet status -i inventories/prod --format json")
    add_inventory_options(parser)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument("--group", default="senders", help="inventory group of the senders (default senders)")
    parser.add_argument("--source", choices=("auto", "prometheus", "ssh"), default="auto",
                        help="auto (default): Prometheus when the inventory names one and it answers, else SSH")
    parser.add_argument("--prometheus", metavar="URL", help="the Prometheus server (default: inventory prometheus_url, "
                        f"else the first host of group monitoring, port {PROMETHEUS_PORT})")
    parser.add_argument("--from-dir", type=Path, help="read DIR/<host>/{state,delivery,shaping,config}.json and "
                        "postqueue.json instead of asking the hosts by SSH")
    parser.add_argument("--state-dir", default=STATE_DIR, help=f"monitor state directory on the hosts ({STATE_DIR})")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per Prometheus request (default 10)")
    parser.set_defaults(func=_run)


# ------------------------------------------------------------------------------------------ one host's view


def empty_host(host: str, error: str | None = None) -> dict[str, Any]:
    return {"host": host, "error": error, "ips": {}, "queue": None}


def ip_entry(view: dict[str, Any], ip: str, pool: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = view["ips"].setdefault(
        ip, {"pool": None, "drained": False, "warmup_day": None, "paths": {}, "last_hour": {}})
    if pool and not entry["pool"]:
        entry["pool"] = pool
    return entry


def state_label(entry: Mapping[str, Any]) -> str:
    """'drained', 'in service', 'warming day 3', with '; suspended: gmail' / '; throttled: yahoo, outlook'."""
    if entry.get("drained"):
        return "drained"
    day = entry.get("warmup_day")
    parts = [f"warming day {day}" if day is not None else "in service"]
    paths: Mapping[str, str] = entry.get("paths") or {}
    for status in ("suspended", "throttled"):
        classes = sorted(c for c, s in paths.items() if s == status)
        if classes:
            parts.append(f"{status}: {', '.join(classes)}")
    return "; ".join(parts)


def from_files(host: str, files: Mapping[str, Any], postqueue: str | None, now: float,
               classes: Sequence[str]) -> dict[str, Any]:
    """A host's view from the monitor's files (state, delivery, shaping, config; any may be None) and the output of
    `postqueue -j` (None: not read)."""
    view = empty_host(host)
    config = files.get("config") or {}
    for m in config.get("members") or []:
        entry = ip_entry(view, str(m.get("ip")), m.get("pool"))
        warmup = m.get("warmup") or {}
        if warmup.get("day") is not None and not warmup.get("warm"):
            entry["warmup_day"] = int(warmup["day"])
    for ip, s in ((files.get("state") or {}).get("ips") or {}).items():
        entry = ip_entry(view, str(ip), s.get("pool"))
        entry["drained"] = s.get("status") == "drained"
    from sendfleet.core import shaping

    for raw in (files.get("shaping") or {}).get("paths") or []:
        try:
            path = shaping.PathState.from_dict(raw)
        except (KeyError, TypeError, ValueError):
            continue
        if path.active(now):
            ip_entry(view, path.ip)["paths"][path.klass] = path.status
    delivery = files.get("delivery") or {}
    since = maillog.hour_key(now - 3600)
    hours = {h: rows for h, rows in (delivery.get("hours") or {}).items() if h >= since}
    for row in maillog.summarise(hours, since, [], classes).rows:
        counts = {st: int(row[st]) for st in maillog.STATUSES}
        ip_entry(view, str(row["ip"]))["last_hour"][row["provider"]] = counts
    if postqueue is not None:
        messages, bad = mailqueue.parse(postqueue.splitlines())
        summary = mailqueue.summarise(messages, now, {}, classes, bad)  # counts and ages only
        view["queue"] = {"messages": dict(summary.messages), "oldest_seconds": dict(summary.oldest_seconds)}
    return view


def _host_of(labels: Mapping[str, str]) -> str:
    return labels.get("host") or labels.get("instance", "?").rsplit(":", 1)[0]


def from_prometheus(results: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Host views from the results of QUERIES (name -> the `result` list of an instant vector query)."""
    views: dict[str, dict[str, Any]] = {}

    def view_of(labels: Mapping[str, str]) -> dict[str, Any]:
        host = _host_of(labels)
        return views.setdefault(host, empty_host(host))

    def samples(name: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(r.get("metric") or {}), float(r["value"][1])) for r in results.get(name) or []]

    for labels, value in samples("drained"):
        ip_entry(view_of(labels), labels["ip"], labels.get("pool"))["drained"] = value == 1
    for labels, value in samples("warmup_day"):
        ip_entry(view_of(labels), labels["ip"], labels.get("pool"))["warmup_day"] = int(value)
    for labels, _ in samples("paths"):
        ip_entry(view_of(labels), labels["ip"], labels.get("pool"))["paths"][labels["provider"]] = labels["state"]
    for labels, value in samples("last_hour"):
        if labels.get("status") not in maillog.STATUSES:
            continue
        cell = ip_entry(view_of(labels), labels["ip"])["last_hour"].setdefault(
            labels.get("provider", poolmap.OTHER_CLASS), dict.fromkeys(maillog.STATUSES, 0))
        cell[labels["status"]] += round(value)
    for key, name in (("messages", "queue_messages"), ("oldest_seconds", "queue_oldest")):
        for labels, value in samples(name):
            view = view_of(labels)
            queue = view["queue"] or {"messages": {}, "oldest_seconds": {}}
            queue[key][labels.get("queue", "?")] = round(value) if key == "messages" else value
            view["queue"] = queue
    return views


QUERIES = {
    "drained": "sendfleet_ip_drained",
    "warmup_day": "sendfleet_ip_warmup_day",
    "paths": 'sendfleet_path_state{state=~"throttled|suspended"} == 1',
    "last_hour": "sum by (host, instance, ip, provider, status) (round(increase(sendfleet_delivery_total[1h])))",
    "queue_messages": "sendfleet_queue_messages",
    "queue_oldest": "sendfleet_queue_oldest_seconds",
}


# ---------------------------------------------------------------------------------------------- sources


def prometheus_url(args: argparse.Namespace, inv: Inventory) -> str | None:
    if args.prometheus:
        return str(args.prometheus).rstrip("/")
    url = inv.vars.get("prometheus_url")
    if url:
        return str(url).rstrip("/")
    hosts = inv.group("monitoring")
    if hosts:
        address = str(hosts[0].vars.get("ansible_host") or hosts[0].name)
        return f"http://{f'[{address}]' if ':' in address else address}:{PROMETHEUS_PORT}"
    return None


def _get(url: str, timeout: float) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = json.loads(resp.read().decode("utf-8"))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise CannotCheckError(f"Prometheus at {url.split('/api/')[0]} did not answer: {err}") from None
    if not isinstance(data, dict) or data.get("status") != "success":
        raise CannotCheckError(f"Prometheus: {url}: {data.get('error') if isinstance(data, dict) else data!r}")
    return data["data"]


def fetch_prometheus(url: str, timeout: float) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """The QUERIES' results and the firing alerts."""
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--prometheus {url}: expected an http:// or https:// URL")
    results = {}
    for name, query in QUERIES.items():
        data = _get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}", timeout)
        results[name] = list(data.get("result") or [])
    alerts = [a for a in _get(f"{url}/api/v1/alerts", timeout).get("alerts") or [] if a.get("state") == "firing"]
    return results, alerts


def fetch_hosts(args: argparse.Namespace, inv: Inventory, now: float) -> dict[str, dict[str, Any]]:
    """Every sender's view over SSH (or from --from-dir); an unreachable host's view carries its error."""
    from sendfleet.monitor import remote

    classes = sorted(inv.classes)
    views: dict[str, dict[str, Any]] = {}
    for host in inv.group(args.group):
        files: dict[str, Any] = {}
        postqueue: str | None = None
        try:
            if args.from_dir is not None:
                for name in FILES:
                    path = args.from_dir / host.name / f"{name}.json"
                    files[name] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
                queue_file = args.from_dir / host.name / "postqueue.json"
                postqueue = queue_file.read_text(encoding="utf-8") if queue_file.exists() else None
                if not any(files.values()) and postqueue is None:
                    raise CannotCheckError(f"{host.name}: nothing in {args.from_dir / host.name}")
            else:
                for name in FILES:
                    where = CONFIG_FILE if name == "config" else f"{args.state_dir}/{name}.json"
                    files[name] = remote.read_json(host.name, host.vars, where)
                postqueue = _postqueue(host.name, host.vars)
        except (CannotCheckError, ValueError, OSError) as err:
            views[host.name] = empty_host(host.name, str(err))
            continue
        views[host.name] = from_files(host.name, files, postqueue, now, classes)
    return views


def _postqueue(name: str, hostvars: Mapping[str, Any]) -> str | None:
    from sendfleet.monitor import remote

    try:
        proc = subprocess.run(remote.ssh_argv(name, hostvars, "postqueue -j"), capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


# ------------------------------------------------------------------------------------------------ report


def build_status(views: Mapping[str, dict[str, Any]], alerts: list[dict[str, Any]] | None, source: str,
                 now: float, expected: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON document: hosts (each with its IPs, their state label and the alerts naming them) and alerts.
    `expected`: the inventory's senders (one missing from the source is listed with an error)."""
    hosts = []
    firing = [
        {"name": a.get("labels", {}).get("alertname"), "severity": a.get("labels", {}).get("severity"),
         "host": _host_of(a["labels"]) if ("host" in a.get("labels", {}) or "instance" in a.get("labels", {}))
         else None, "ip": a.get("labels", {}).get("ip"), "labels": dict(a.get("labels") or {}),
         "summary": (a.get("annotations") or {}).get("summary"), "active_at": a.get("activeAt")}
        for a in alerts or []
    ]
    firing.sort(key=lambda a: (a["severity"] != "critical", str(a["name"]), str(a["host"]), str(a["ip"])))
    names = list(dict.fromkeys([*expected, *sorted(views)]))
    for name in names:
        view = views.get(name) or empty_host(name, f"{name}: no data from {source}")
        ips = []
        for ip, e in sorted(view["ips"].items()):
            ips.append({
                "ip": ip, "pool": e["pool"], "state": state_label(e), "drained": e["drained"],
                "warmup_day": e["warmup_day"], "paths": dict(sorted(e["paths"].items())),
                "last_hour": dict(sorted(e["last_hour"].items())),
                "alerts": [a["name"] for a in firing if a["host"] == name and a["ip"] == ip],
            })
        hosts.append({
            "host": name, "error": view["error"], "ips": ips, "queue": view["queue"],
            "alerts": [a["name"] for a in firing if a["host"] == name and a["ip"] is None],
        })
    return {
        "source": source,
        "generated": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "hosts": hosts,
        "alerts": firing if alerts is not None else None,
    }


def _age(seconds: float) -> str:
    s = round(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _run(args: argparse.Namespace) -> int:
    from sendfleet.inventory_io import inventory_from_args

    inv = inventory_from_args(args)
    now = time.time()
    senders = [h.name for h in inv.group(args.group)]
    url = prometheus_url(args, inv) if args.source != "ssh" else None
    if args.source == "prometheus" and url is None:
        raise UsageError(f"{inv.path}: --source prometheus: no prometheus_url and no host in group monitoring")
    report: dict[str, Any] | None = None
    problems: list[str] = []
    if url is not None:
        try:
            results, alerts = fetch_prometheus(url, args.timeout)
            report = build_status(from_prometheus(results), alerts, f"prometheus {url}", now, senders)
        except CannotCheckError as err:
            if args.source == "prometheus":
                raise
            problems.append(f"{err}; reading the senders over SSH instead")
    if report is None:
        if not senders:
            raise UsageError(f"{inv.path}: no host in group {args.group!r}")
        views = fetch_hosts(args, inv, now)
        source = f"files in {args.from_dir}" if args.from_dir is not None else "ssh"
        report = build_status(views, None, source, now, senders)
        if all(views[h]["error"] for h in senders):
            for p in problems:
                sys.stderr.write(f"sendfleet: status: {p}\n")
            raise CannotCheckError("no sender could be read: " + "; ".join(str(views[h]["error"]) for h in senders))
    report["problems"] = problems
    for p in problems:
        sys.stderr.write(f"sendfleet: status: {p}\n")
    if args.format == "json":
        sys.stdout.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
        return EXIT_OK
    _print_tables(report, sorted({*inv.classes, poolmap.OTHER_CLASS}))
    return EXIT_OK


def _print_tables(report: Mapping[str, Any], classes: Sequence[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=200)
    table = Table(title=f"sendfleet status ({report['source']}, {report['generated']})")
    for col in ("host", "ip", "pool", "state", "last hour sent/deferred/bounced per class", "alerts"):
        table.add_column(col)
    for h in report["hosts"]:
        if h["error"]:
            table.add_row(h["host"], "-", "-", f"[red]not read: {h['error']}[/red]", "", "")
            continue
        for i in h["ips"]:
            hour = ", ".join(f"{c} {v['sent']}/{v['deferred']}/{v['bounced']}"
                             for c, v in i["last_hour"].items() if c in classes and any(v.values())) or "-"
            table.add_row(h["host"], i["ip"], str(i["pool"] or "-"), i["state"], hour, ", ".join(i["alerts"]))
    console.print(table)
    qt = Table(title="queue per host (messages, oldest)")
    qt.add_column("host")
    for q in SHOWN_QUEUES:
        qt.add_column(q, justify="right")
    qt.add_column("host alerts")
    for h in report["hosts"]:
        queue = h["queue"]
        cells = [f"{queue['messages'].get(q, 0)} ({_age(queue['oldest_seconds'].get(q, 0))})"
                 if queue is not None and queue["messages"].get(q) else "0" if queue is not None else "?"
                 for q in SHOWN_QUEUES]
        qt.add_row(h["host"], *cells, ", ".join(h["alerts"]))
    console.print(qt)
    if report["alerts"] is None:
        console.print("alerts: unknown (no Prometheus read)")
    elif report["alerts"]:
        at = Table(title="firing alerts")
        for col in ("severity", "alert", "host", "summary"):
            at.add_column(col)
        for a in report["alerts"]:
            colour = "red" if a["severity"] == "critical" else "yellow"
            at.add_row(f"[{colour}]{a['severity']}[/{colour}]", str(a["name"]), str(a["host"] or "-"),
                       str(a["summary"] or ""))
        console.print(at)
    else:
        console.print("no alert firing")
    for p in report.get("problems") or []:
        console.print(f"[yellow]{p}[/yellow]")
