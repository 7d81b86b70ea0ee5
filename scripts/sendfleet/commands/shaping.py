"""`sendfleet shaping status|suspend|resume -i INVENTORY`: what the shaper on every sender holds per (sending IP,
provider class) path, and the operator's own suspend/resume of one path.

- `status [--host H] [--all] [--format table|json]`: per host, IP and class, the limits in force, whether the path
  is throttled or suspended and until when, and the reply that caused it (read from the shaper's state file on
  each sender over SSH). Without `--all`, only the paths that are not normal, plus one line per host.
- `suspend --ip IP --class CLASS [--for DURATION]`: no new mail of that class through that IP (the pool's other IPs
  take it) for DURATION (15m, 2h, 1d), or until resumed.
- `resume --ip IP --class CLASS`: end a throttle or suspension now, whoever set it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from sendfleet.core import shaping
from sendfleet.errors import EXIT_OK, CannotCheckError, UsageError
from sendfleet.inventory_io import add_inventory_options

STATE_FILE = "/var/lib/sendfleet/monitor/shaping.json"
PYTHON = "/opt/sendfleet/venv/bin/python"
CONFIG = "/etc/sendfleet/monitor/config.json"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "shaping", help="per (IP, provider class): limits, throttles and suspensions; suspend or resume a path",
        description="What the shaper on every sender holds per (sending IP, provider class) path, and the "
        "operator's suspend/resume of one path.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    status = verbs.add_parser(
        "status", help="limits in force, throttles and suspensions per host, IP and class",
        description="Per host, IP and provider class: the limits in force, throttled or suspended until when, and "
        "the reply that caused it.",
        epilog="example: sendfleet shaping status -i inventories/prod --host mta1 --format json")
    add_inventory_options(status)
    status.add_argument("--host", help="only this sender")
    status.add_argument("--all", action="store_true", help="every (IP, class) path, not only the held ones")
    status.add_argument("--group", default="senders", help="inventory group of the senders (default senders)")
    status.add_argument("--format", choices=("table", "json"), default="table")
    status.set_defaults(func=_status)
    for verb, text in (("suspend", "stop sending one provider class's mail through one IP"),
                       ("resume", "end a throttle or suspension of one (IP, class) path now")):
        p = verbs.add_parser(
            verb, help=text, description=text[0].upper() + text[1:] + ".",
            epilog=f"example: sendfleet shaping {verb} -i inventories/prod --ip 198.51.100.70 --class gmail"
            + (" --for 2h" if verb == "suspend" else ""))
        add_inventory_options(p)
        p.add_argument("--ip", required=True, help="the sending IP")
        p.add_argument("--class", dest="klass", required=True, help="the provider class (e.g. gmail)")
        if verb == "suspend":
            p.add_argument("--for", dest="duration", help="how long (15m, 2h, 1d; default: until resumed)")
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.set_defaults(func=_operator, verb=verb)


def _ssh(host: Any, remote: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    from sendfleet.monitor import remote as rmt

    argv = rmt.ssh_argv(host.name, host.vars, remote)
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CannotCheckError(f"{host.name}: cannot reach it by SSH: {err}") from None


def rows_of(host: str, state: dict[str, Any] | None, classes: dict[str, shaping.ProviderClass], now: float,
            every: bool) -> list[dict[str, Any]]:
    """The (IP, class) rows of one host's shaper state."""
    if not state:
        return []
    paths = {shaping.key(p["ip"], p["class"]): shaping.PathState.from_dict(p) for p in state.get("paths") or []}
    drained = set(state.get("drained") or [])
    today = state.get("today") or {}
    out = []
    for m in state.get("members") or []:
        for name, pclass in classes.items():
            s = paths.get(shaping.key(m["ip"], name))
            active = s is not None and s.active(now)
            status = s.status if active and s is not None else shaping.NORMAL
            if m["ip"] in drained:
                status = "drained"
            blocked = bool(s is not None and s.blocked)
            if not every and status == shaping.NORMAL and not blocked:
                continue
            out.append({
                "host": host, "ip": m["ip"], "pool": m["pool"], "class": name, "state": status,
                "until": _iso(s.until) if active and s is not None and s.until else None,
                "by": s.by if s is not None and (active or blocked) else None,
                "rule": s.rule if s is not None and (active or blocked) else None,
                "reply": s.reply if s is not None and (active or blocked) else None,
                "suspend_blocked": blocked,
                "limits": shaping.effective_limits(pclass, s, now),
                "today": int(today.get(shaping.key(m["ip"], name), 0)),
            })
    return out


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _status(args: argparse.Namespace) -> int:
    from sendfleet.inventory_io import inventory_from_args
    from sendfleet.monitor import remote

    inv = inventory_from_args(args)
    hosts = [h for h in inv.group(args.group) if args.host in (None, h.name)]
    if not hosts:
        raise UsageError(f"{inv.path}: no host {args.host!r} in group {args.group!r}" if args.host
                         else f"{inv.path}: no host in group {args.group!r}")
    now = time.time()
    report: dict[str, Any] = {"hosts": {}, "paths": []}
    classes = dict(inv.classes)
    for host in hosts:
        try:
            state = remote.read_json(host.name, host.vars, STATE_FILE)
        except CannotCheckError as err:
            report["hosts"][host.name] = {"error": str(err)}
            continue
        if state is None:
            report["hosts"][host.name] = {"error": f"no shaper state ({STATE_FILE}): is sendfleet-shaper running?"}
            continue
        report["hosts"][host.name] = {"updated": state.get("updated"), "last_log_line": _iso(state.get("last_line_ts")),
                                      "events": (state.get("events") or [])[-5:]}
        report["paths"] += rows_of(host.name, state, classes, now, args.all)
    if all("error" in h for h in report["hosts"].values()):
        raise CannotCheckError("no sender could be read: " + "; ".join(h["error"] for h in report["hosts"].values()))
    if args.format == "json":
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return EXIT_OK
    for name, h in report["hosts"].items():
        if "error" in h:
            print(f"{name}: {h['error']}")
        else:
            held = sum(1 for p in report["paths"] if p["host"] == name and p["state"] != shaping.NORMAL)
            print(f"{name}: {held} path(s) held; state of {h['updated']}, log read up to {h['last_log_line']}")
    if report["paths"]:
        print()
        head = ("HOST", "IP", "CLASS", "STATE", "UNTIL", "CONN", "MSG/CONN", "MSG/MIN", "TODAY", "BECAUSE")
        lines = []
        for p in report["paths"]:
            lim = p["limits"]
            because = p["reply"] or (f"by the {p['by']}" if p["by"] == "operator" else "")
            if p["suspend_blocked"]:
                because = "SUSPEND REFUSED (last usable IP of its pool): " + because
            lines.append((p["host"], p["ip"], p["class"], p["state"], (p["until"] or "-").replace("+00:00", "Z"),
                          str(lim["connections"]), str(lim["messages_per_connection"]),
                          str(lim["messages_per_minute"] or "-"), str(p["today"]), because[:80]))
        widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
        for r in [head, *lines]:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return EXIT_OK


def _operator(args: argparse.Namespace) -> int:
    from sendfleet.inventory_io import inventory_from_args

    inv = inventory_from_args(args)
    if args.klass not in inv.classes:
        raise UsageError(f"--class {args.klass}: unknown provider class (known: {', '.join(inv.classes)})")
    sip = inv.find_ip(args.ip)
    if sip is None:
        raise UsageError(f"--ip {args.ip}: not a sending IP of {inv.path}")
    seconds = None
    if getattr(args, "duration", None):
        try:
            seconds = shaping.parse_duration(args.duration, "--for")
        except shaping.ShapingError as err:
            raise UsageError(str(err)) from None
    host = inv.hosts[sip.host]
    remote = [PYTHON, "-m", "sendfleet.monitor", "shaping", args.verb, "--config", CONFIG, "--ip", str(sip.ip),
              "--class", args.klass] + (["--seconds", str(seconds)] if seconds else [])
    proc = _ssh(host, shlex.join(remote))
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    except ValueError:
        out = {}
    if proc.returncode != 0 or not out.get("ok"):
        detail = out.get("error") or proc.stderr.strip()[-300:] or f"exit {proc.returncode}"
        raise CannotCheckError(f"{host.name}: the shaper refused or did not answer: {detail}")
    if args.format == "json":
        json.dump({"host": host.name, **out}, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        e = out["event"]
        until = f" until {_iso(e['until'])}" if e.get("until") else ""
        print(f"{host.name}: {e['event']} {e['ip']} for class {e['class']}{until}")
    return EXIT_OK
