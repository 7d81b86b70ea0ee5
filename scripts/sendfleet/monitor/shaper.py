"""`python -m sendfleet.monitor shaper --config /etc/sendfleet/monitor/config.json`: the shaper of one sender, a
long-running service (sendfleet-shaper.service) that makes Postfix hear the receivers.

- **Policy service** (Postfix `check_policy_service`, at RCPT): classifies the recipient domain by its MX hosts
  (cached with the record's TTL), takes the pool of the sender domain and answers `FILTER <the (IP, class)
  transport>:` for an IP of the pool usable for that class (sendfleet.core.shaping.choose: not drained, not
  suspended, under its rate and its warm-up cap), `DUNNO` for class other (the pool's per-IP transports), a 4xx when
  every IP of the pool is held for the class (the client keeps the mail and retries) and a 452 for a recipient of a
  second class in one transaction (one class per message: FILTER applies to the whole message; the client sends the
  rest in a new transaction).
- **Log follower**: reads Postfix's log continuously (sendfleet.monitor.follow), matches each deferral or bounce of
  a per-class transport against the class's rules (then `other`'s generic rules) and applies the action: throttle or
  suspend the (IP, class) path for the rule's duration, or drain the IP from every pool through the DNSBL monitor's
  drain (sendfleet.monitor.agent.drain_on_reply). Paths resume by themselves when their duration ends.
- **Control socket** (root only): `sendfleet shaping status|suspend|resume` over SSH.
- **State** (a JSON file, written atomically on every change): the paths in force with the reply that caused each,
  today's routed counts (the warm-up caps), the log position and the last events; so actions survive a restart of
  the shaper or of the host. Every action is also a journal line and a metric (textfile for node_exporter).
"""

from __future__ import annotations

import json
import os
import queue
import random
import socket
import socketserver
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sendfleet.atomicfile import write_atomic
from sendfleet.core import drain, maillog, poolmap, shaping
from sendfleet.core.metrics import Family, render
from sendfleet.dns import mx
from sendfleet.errors import UsageError

MAX_EVENTS = 500
INSTANCES = 5000  # transactions remembered for the one-class-per-message rule
MIN_TTL, MAX_TTL = 60, 86400  # bounds of how long a class from an MX answer is cached
STALE_DRAIN = 3600  # a blocklist reply older than this (a log read again after a restart) drains nothing
POSITION_SAVE = 5.0  # seconds between saves of the log position alone


def log(message: str, level: int = 6) -> None:
    import sys

    sys.stdout.write(f"<{level}>sendfleet-shaper: {message}\n")
    sys.stdout.flush()


class ShaperConfig:
    """The `shaping` part of the monitor's config.json (written by the dnsbl_monitor role)."""

    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        try:
            sh = data.get("shaping") or {}
            self.host = str(data.get("host", os.uname().nodename))
            self.classes = shaping.parse_classes(sh["classes"], f"{source}: shaping.classes")
            self.sender_pools = {str(k).lower(): str(v) for k, v in (sh.get("sender_pools") or {}).items()}
            self.prefix = str(sh.get("prefix", "sf"))
            self.listen = str(sh.get("listen", "127.0.0.1:10031"))
            self.control_socket = Path(sh.get("control_socket", "/run/sendfleet/shaper.sock"))
            self.state_file = Path(sh.get("state_file", "/var/lib/sendfleet/monitor/shaping.json"))
            self.monitor_state_file = Path(data.get("state_file", "/var/lib/sendfleet/monitor/state.json"))
            self.textfile_dir = Path(data.get("textfile_dir", "/var/lib/prometheus/node-exporter"))
            self.suspend_last = bool(sh.get("suspend_last", False))
            self.nameservers = [str(n) for n in sh.get("nameservers") or []]
            self.dns_port = int(sh.get("dns_port", 53))
            self.log_source = str(sh.get("log_source") or data.get("log_source", "auto"))
            self.members: list[dict[str, Any]] = []
            for m in data.get("members") or []:
                warm = m.get("warmup") or {}
                hourly = None if warm.get("warm", True) or warm.get("hourly") is None else float(warm["hourly"])
                self.members.append({"ip": str(m["ip"]), "pool": str(m["pool"]), "weight": int(m.get("weight", 1)),
                                     "hourly": hourly})
        except (KeyError, TypeError, ValueError) as err:
            raise UsageError(f"{source}: bad shaping config: {err}") from None

    def pool_ips(self, pool: str) -> list[str]:
        return [m["ip"] for m in self.members if m["pool"] == pool]


# -------------------------------------------------------------------------------------------- the MX cache


class Classifier:
    """Recipient domain -> provider class, from its MX hosts, cached for the record's TTL (bounded)."""

    def __init__(self, cfg: ShaperConfig) -> None:
        self.classes = cfg.classes
        self.mx = mx.MxLookup(cfg.nameservers, port=cfg.dns_port, timeout=5.0)
        self.cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.lock = threading.Lock()

    def classify(self, domain: str, now: float) -> str | None:
        """The class, or None when DNS cannot say now (the caller answers 4xx)."""
        with self.lock:
            hit = self.cache.get(domain)
            if hit is not None and hit[1] > now:
                self.cache.move_to_end(domain)
                return hit[0]
        klass, ttl = self._lookup(domain)
        if klass is None:
            return None
        with self.lock:
            self.cache[domain] = (klass, now + ttl)
            self.cache.move_to_end(domain)
            while len(self.cache) > 100_000:
                self.cache.popitem(last=False)
        return klass

    def _lookup(self, domain: str) -> tuple[str | None, float]:
        return lookup_class(self.mx, domain, self.classes)


def lookup_class(lookup: Callable[[str], mx.MxAnswer], domain: str,
                 classes: Mapping[str, shaping.ProviderClass]) -> tuple[str | None, float]:
    """The provider class of `domain` from its MX hosts (sendfleet.dns.mx: a domain without MX is its own host),
    and how long the answer holds (its TTL, within MIN_TTL..MAX_TTL); (None, 0) when DNS cannot say now."""
    answer = lookup(domain)
    klass = mx.provider_class(answer, classes)
    if klass is None:
        return None, 0
    return klass, min(MAX_TTL, max(MIN_TTL, answer.ttl))


# ------------------------------------------------------------------------------------------------ the state


class Shaper:
    """Everything the three threads share, behind one lock."""

    def __init__(self, cfg: ShaperConfig, classifier: Classifier | None = None, rng: random.Random | None = None):
        self.cfg = cfg
        self.classifier = classifier or Classifier(cfg)
        self.rng = rng or random.Random()
        self.lock = threading.RLock()
        self.write_lock = threading.Lock()
        self.window = shaping.Window()
        self.instances: OrderedDict[str, str] = OrderedDict()
        self.refused: dict[tuple[str, str], int] = {}
        self.routed: dict[str, int] = {}
        self.actions: dict[tuple[str, str, str], int] = {}
        self.drained: set[str] = set()
        self._drained_mtime = -1.0
        data = _read_json(cfg.state_file)
        self.paths: dict[str, shaping.PathState] = {}
        for p in data.get("paths") or []:
            try:
                s = shaping.PathState.from_dict(p)
            except (KeyError, TypeError, ValueError):
                continue
            self.paths[shaping.key(s.ip, s.klass)] = s
        self.day = str(data.get("day") or "")
        self.today: dict[str, int] = {str(k): int(v) for k, v in (data.get("today") or {}).items()}
        self.events: list[dict[str, Any]] = list(data.get("events") or [])
        self.position: dict[str, Any] | None = data.get("position")
        self.last_line_ts = float(data.get("last_line_ts") or 0)
        self.dirty = True
        self.resync_failed = False
        self.saved_paths: list[dict[str, Any]] = list(data.get("paths") or [])
        self.draining: set[str] = set()  # IPs handed to the worker for a drain

    # -- helpers

    def _today(self, now: float) -> None:
        day = datetime.fromtimestamp(now, UTC).date().isoformat()
        if day != self.day:
            self.day, self.today = day, {}
            self.dirty = True

    def refresh_drained(self) -> None:
        try:
            mtime = self.cfg.monitor_state_file.stat().st_mtime
        except OSError:
            return
        if mtime == self._drained_mtime:
            return
        self._drained_mtime = mtime
        state = _read_json(self.cfg.monitor_state_file)
        self.drained = {ip for ip, s in (state.get("ips") or {}).items()
                        if isinstance(s, Mapping) and s.get("status") == drain.DRAINED}

    def members(self, pool: str, klass: str) -> list[shaping.Member]:
        pclass = self.cfg.classes[klass]
        out = []
        for m in self.cfg.members:
            if m["pool"] != pool:
                continue
            caps = shaping.daily_caps(m["hourly"], {klass: pclass})
            out.append(shaping.Member(m["ip"], 0 if m["ip"] in self.drained else m["weight"], caps))
        return out

    def usable(self, pool: str, klass: str, now: float) -> dict[str, bool]:
        out = {}
        for m in self.cfg.members:
            if m["pool"] == pool:
                s = self.paths.get(shaping.key(m["ip"], klass))
                suspended = s is not None and s.active(now) and s.status == shaping.SUSPENDED
                out[m["ip"]] = m["ip"] not in self.drained and m["weight"] > 0 and not suspended
        return out

    def record(self, event: shaping.Event, now: float, level: int, log_ts: float | None = None) -> None:
        """Journal, state and metrics of one event; `log_ts`: when Postfix logged the reply that caused it."""
        log(event.message(), level)
        self.events.append({"time": _iso(now), "ts": round(now, 3), "log_ts": log_ts, **event.as_dict()})
        self.events = self.events[-MAX_EVENTS:]
        k = (event.ip, event.klass, event.kind)
        self.actions[k] = self.actions.get(k, 0) + 1
        self.dirty = True

    # -- policy

    def decide(self, attrs: Mapping[str, str], now: float) -> str:
        """One policy request -> the action line's value."""
        if attrs.get("protocol_state", "RCPT").upper() != "RCPT":
            return "DUNNO"
        sender = attrs.get("sender", "").lower()
        recipient = attrs.get("recipient", "").lower()
        instance = attrs.get("instance", "")
        pool = self.cfg.sender_pools.get(sender.rpartition("@")[2]) if "@" in sender else None
        rdomain = recipient.rpartition("@")[2].rstrip(".")
        if pool is None or not rdomain:
            return "DUNNO"  # not a sender domain of the fleet (smtpd's own restrictions judge it) or no domain
        klass = self.classifier.classify(rdomain, now)
        if klass is None:
            self._refuse("dns", "?")
            return f"451 4.4.3 cannot look up the MX of {rdomain} now, try again later"
        with self.lock:
            first = self.instances.get(instance) if instance else None
            if first is not None and first.split(" ", 1)[0] != klass:
                self._refuse("mixed", klass)
                return (f"452 4.5.3 one provider class per message: send recipients of class {klass} in a new "
                        f"transaction (this one is for class {first.split(' ', 1)[0]})")
            if first is not None:
                return "DUNNO" if klass == shaping.OTHER else f"FILTER {first.split(' ', 1)[1]}:"
            if klass == shaping.OTHER:
                self._remember(instance, f"{klass} -")
                return "DUNNO"
            self.refresh_drained()
            self._today(now)
            pclass = self.cfg.classes[klass]
            choice = shaping.choose(self.members(pool, klass), pclass, self.paths, self.window, self.today, now,
                                    self.rng)
            if choice.ip is None:
                self._refuse("held", klass)
                return f"451 4.7.0 {choice.reason} (pool {pool}); try again later"
            k = shaping.key(choice.ip, klass)
            self.window.add(k, now)
            self.today[k] = self.today.get(k, 0) + 1
            self.routed[k] = self.routed.get(k, 0) + 1
            self.dirty = True
            transport = poolmap.class_transport_name(choice.ip, klass, self.cfg.prefix)
            self._remember(instance, f"{klass} {transport}")
            return f"FILTER {transport}:"

    def _remember(self, instance: str, value: str) -> None:
        if not instance:
            return
        self.instances[instance] = value
        while len(self.instances) > INSTANCES:
            self.instances.popitem(last=False)

    def _refuse(self, reason: str, klass: str) -> None:
        with self.lock:
            self.refused[(klass, reason)] = self.refused.get((klass, reason), 0) + 1

    # -- replies

    def on_reply(self, reply: maillog.Reply, now: float) -> shaping.Event | None:
        """React to one logged reply of a per-class transport (or of an IP's own transport: class other)."""
        if reply.status not in ("deferred", "bounced") or reply.klass not in self.cfg.classes:
            return None
        rules = shaping.rules_for(self.cfg.classes, reply.klass)
        rule = shaping.match_rule(rules, reply.code, reply.enhanced, reply.text)
        if rule is None:
            return None
        pool = next((m["pool"] for m in self.cfg.members if m["ip"] == reply.ip), None)
        if pool is None:
            return None
        if now - reply.time > (rule.duration or STALE_DRAIN):
            return None  # a reply read again after a restart whose action would already be over
        with self.lock:
            self.refresh_drained()
            if rule.action == "drain" and (reply.ip in self.drained or reply.ip in self.draining):
                return shaping.Event("hold", reply.ip, reply.klass, "already drained", rule.name, reply.text[:300])
            if rule.action == "drain":
                self.draining.add(reply.ip)
            self.paths, event = shaping.react(self.paths, reply.ip, reply.klass, rule, reply.text, now,
                                              self.cfg.pool_ips(pool), self.usable(pool, reply.klass, now),
                                              self.cfg.suspend_last)
            if event.kind != "hold":
                level = {"blocked": 3, "drain": 4, "suspend": 4, "throttle": 5}.get(event.kind, 6)
                self.record(event, now, level, reply.time)
        return event

    def expire(self, now: float) -> list[shaping.Event]:
        with self.lock:
            self.paths, events = shaping.expire(self.paths, now)
            for e in events:
                self.record(e, now, 5)
            return events

    def operator(self, ip: str, klass: str, action: str, seconds: float | None, now: float) -> shaping.Event:
        if klass not in self.cfg.classes:
            raise UsageError(f"--class {klass}: unknown provider class (known: {', '.join(self.cfg.classes)})")
        if ip not in {m["ip"] for m in self.cfg.members}:
            raise UsageError(f"--ip {ip}: not a sending IP of {self.cfg.host}")
        status = {"suspend": shaping.SUSPENDED, "throttle": shaping.THROTTLED, "resume": shaping.NORMAL}[action]
        limits = None
        if action == "throttle":
            limits = {"connections": 1, "messages_per_minute": 10}
        with self.lock:
            self.paths, event = shaping.operator_set(self.paths, ip, klass, status, now, seconds, limits)
            self.record(event, now, 4)
        return event

    # -- persistence and metrics

    def snapshot(self, now: float) -> dict[str, Any]:
        with self.lock:
            return {
                "host": self.cfg.host,
                "updated": _iso(now),
                "updated_ts": now,
                "day": self.day,
                "today": dict(sorted(self.today.items())),
                "paths": [s.as_dict() for _, s in sorted(self.paths.items())],
                "events": list(self.events),
                "position": self.position,
                "last_line_ts": self.last_line_ts,
                "limits": {name: c.limits.as_dict() for name, c in self.cfg.classes.items()},
                "members": [dict(m) for m in self.cfg.members],
                "drained": sorted(self.drained),
            }

    def save(self, now: float, force: bool = False) -> dict[str, Any] | None:
        """Write the state file and the metrics when something changed; the snapshot written (None: nothing to
        write). Writes are serialised, each of a snapshot taken after the previous one's, so the file on disk is
        never older than one already written."""
        with self.write_lock:
            with self.lock:
                if not (self.dirty or force):
                    return None
                snap = self.snapshot(now)
                self.dirty = False
            write_atomic(self.cfg.state_file, json.dumps(snap, indent=1, sort_keys=True) + "\n")
            write_atomic(self.cfg.textfile_dir / "sendfleet_shaping.prom", self.metrics(now))
            self.saved_paths = list(snap["paths"])  # what the agent reads from the file now, whoever saved
            return snap

    def metrics(self, now: float) -> str:
        state = Family("sendfleet_path_state", "1 for the (IP, provider class) path's current state")
        until = Family("sendfleet_path_until_timestamp_seconds", "When the path's throttle or suspension ends")
        blocked = Family("sendfleet_path_suspend_blocked", "1: a rule asked to suspend the last usable IP of its pool")
        actions = Family("sendfleet_shaping_actions_total", "Shaping events per IP, class and kind", "counter")
        routed = Family("sendfleet_shaping_routed_total", "Messages routed per IP and class since start", "counter")
        refused = Family("sendfleet_shaping_refused_total", "Recipients deferred at submission per class and reason",
                         "counter")
        lag = Family("sendfleet_shaper_log_timestamp_seconds", "Time of the last log line the shaper read")
        with self.lock:
            for m in self.cfg.members:
                for klass in self.cfg.classes:
                    s = self.paths.get(shaping.key(m["ip"], klass))
                    current = s.status if s is not None and s.active(now) else shaping.NORMAL
                    for st in (shaping.NORMAL, shaping.THROTTLED, shaping.SUSPENDED):
                        state.add(1 if current == st else 0, ip=m["ip"], pool=m["pool"], provider=klass, state=st)
                    if s is not None and s.active(now) and s.until is not None:
                        until.add(s.until, ip=m["ip"], pool=m["pool"], provider=klass)
                    if s is not None and s.blocked:
                        blocked.add(1, ip=m["ip"], pool=m["pool"], provider=klass)
            for (ip, klass, kind), n in sorted(self.actions.items()):
                actions.add(n, ip=ip, provider=klass, action=kind)
            for k, n in sorted(self.routed.items()):
                ip, _, klass = k.partition(" ")
                routed.add(n, ip=ip, provider=klass)
            for (klass, reason), n in sorted(self.refused.items()):
                refused.add(n, provider=klass, reason=reason)
            lag.add(self.last_line_ts)
        return render([state, until, blocked, actions, routed, refused, lag])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# -------------------------------------------------------------------------------------------- the servers


def parse_request(lines: Sequence[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        name, sep, value = line.partition("=")
        if sep:
            out[name.strip()] = value
    return out


def _policy_handler(shaper: Shaper) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            lines: list[str] = []
            while True:
                raw = self.rfile.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line:
                    lines.append(line)
                    continue
                try:
                    answer = shaper.decide(parse_request(lines), time.time())
                except Exception as err:  # never leave smtpd without an answer
                    log(f"policy: {type(err).__name__}: {err}", 3)
                    answer = "451 4.3.0 sending policy error, try again later"
                self.wfile.write(f"action={answer}\n\n".encode())
                self.wfile.flush()
                lines = []

    return Handler


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _control_handler(shaper: Shaper) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            raw = self.rfile.readline()
            try:
                req = json.loads(raw or b"{}")
                now = time.time()
                cmd = req.get("command")
                if cmd == "status":
                    out: dict[str, Any] = {"ok": True, "state": shaper.snapshot(now)}
                elif cmd in ("suspend", "resume", "throttle"):
                    seconds = req.get("seconds")
                    event = shaper.operator(str(req["ip"]), str(req["class"]), cmd,
                                            None if seconds is None else float(seconds), now)
                    shaper.save(now, force=True)
                    out = {"ok": True, "event": event.as_dict()}
                else:
                    out = {"ok": False, "error": f"unknown command {cmd!r}"}
            except (UsageError, KeyError, TypeError, ValueError) as err:
                out = {"ok": False, "error": str(err)}
            self.wfile.write(json.dumps(out).encode() + b"\n")

    return Handler


def control(path: Path, request: Mapping[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One request to a running shaper's control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(dict(request)).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    out = json.loads(data or b"{}")
    return out if isinstance(out, dict) else {"ok": False, "error": "bad answer"}


def follow_log(shaper: Shaper, stop: threading.Event, work: queue.Queue[tuple[str, Any]]) -> None:
    """Read Postfix's log as it is written; react to each reply; hand drains to the worker (the drain waits for
    the monitor's lock, which a blocklist check holds for its whole run: the log is read on meanwhile)."""
    from sendfleet.monitor.follow import Follower

    follower = Follower(shaper.cfg.log_source, shaper.position, time.time() - 300)
    marked = 0.0
    for ts, ident, message in follower.lines(stop):
        reply = maillog.parse_reply(ident, message, ts)
        now = time.time()
        with shaper.lock:
            shaper.position = follower.position
            shaper.last_line_ts = max(shaper.last_line_ts, ts)
            if now - marked > POSITION_SAVE:  # the position reaches the state file every few seconds
                shaper.dirty, marked = True, now
        if reply is None:
            continue
        event = shaper.on_reply(reply, now)
        if event is not None and event.kind == "drain":
            work.put(("drain", (reply.ip, event)))


def worker(shaper: Shaper, work: queue.Queue[tuple[str, Any]], drain_hook: Any, resync_hook: Any) -> None:
    """Drains on replies and Postfix resyncs for the throttles, one at a time, off the log and policy threads."""
    while True:
        kind, item = work.get()
        try:
            if kind == "drain":
                ip, event = item
                try:
                    shaper.refresh_drained()
                    if ip not in shaper.drained:
                        drain_hook(ip, event)
                finally:
                    with shaper.lock:
                        shaper.draining.discard(ip)
            elif kind == "resync":
                resync_hook()
        except Exception as err:  # the shaper keeps running; the journal says why
            log(f"{kind} failed: {type(err).__name__}: {err}", 3)
            if kind == "resync":
                shaper.resync_failed = True
        finally:
            work.task_done()


def reload_config(shaper: Shaper, config_path: Path, mtime: float) -> float:
    """Take a rewritten config (the dnsbl_monitor role, or an operator) without a restart: members, weights,
    classes. A config that does not parse is logged and the running one kept."""
    try:
        now_mtime = config_path.stat().st_mtime
    except OSError:
        return mtime
    if now_mtime == mtime:
        return mtime
    try:
        cfg = ShaperConfig(json.loads(config_path.read_text(encoding="utf-8")), str(config_path))
    except (OSError, ValueError, UsageError) as err:
        log(f"{config_path}: not reloaded ({err}); the running configuration stays", 3)
        return now_mtime
    cfg.log_source = shaper.cfg.log_source
    with shaper.lock:
        shaper.cfg = cfg
        shaper.classifier.classes = cfg.classes
        shaper.dirty = True
    with shaper.classifier.lock:  # cached classes may name a class the new config does not have
        shaper.classifier.cache.clear()
    log(f"{config_path}: reloaded ({len(cfg.members)} IPs)")
    return now_mtime


def serve(config_path: Path) -> int:
    from sendfleet.monitor import agent

    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"{config_path}: cannot read the config: {err}") from None
    cfg = ShaperConfig(data, str(config_path))
    if cfg.log_source == "auto":
        cfg.log_source = agent.log_source(agent.Config(data, str(config_path)))
    monitor_cfg = agent.Config(data, str(config_path))
    shaper = Shaper(cfg)
    shaper.refresh_drained()
    stop = threading.Event()

    def drain_hook(ip: str, event: shaping.Event) -> None:
        agent.drain_on_reply(monitor_cfg, ip, {"zone": f"reply:{event.klass}", "outcome": "listed",
                                               "reason": f"rule {event.rule}", "detail": event.reply or ""})

    host, _, port = cfg.listen.rpartition(":")
    policy = _Server((host or "127.0.0.1", int(port)), _policy_handler(shaper))
    cfg.control_socket.parent.mkdir(parents=True, exist_ok=True)
    if cfg.control_socket.exists():
        cfg.control_socket.unlink()
    ctl = _UnixServer(str(cfg.control_socket), _control_handler(shaper))
    os.chmod(cfg.control_socket, 0o600)
    work: queue.Queue[tuple[str, Any]] = queue.Queue()
    threads = [
        threading.Thread(target=policy.serve_forever, name="policy", daemon=True),
        threading.Thread(target=ctl.serve_forever, name="control", daemon=True),
        threading.Thread(target=follow_log, args=(shaper, stop, work), name="log", daemon=True),
        threading.Thread(target=worker, args=(shaper, work, drain_hook, lambda: agent.resync(monitor_cfg)),
                         name="worker", daemon=True),
    ]
    for t in threads:
        t.start()
    active = sum(1 for s in shaper.paths.values() if s.active(time.time()))
    log(f"serving {cfg.listen}, {len(cfg.members)} IPs, classes {', '.join(cfg.classes)}; "
        f"{active} path(s) in force from the state file; log {cfg.log_source}")
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    config_mtime = config_path.stat().st_mtime
    applied: tuple[dict[str, int], list[str]] | None = None
    shaper.save(time.time(), force=True)
    try:
        while not stop.is_set():
            now = time.time()
            new_mtime = reload_config(shaper, config_path, config_mtime)
            if new_mtime != config_mtime:
                config_mtime = new_mtime
                try:  # the drain and resync use the same members and weights as the shaper
                    monitor_cfg = agent.load_config(config_path)
                except UsageError as err:
                    log(f"{config_path}: the monitor's part not reloaded ({err})", 3)
            shaper.expire(now)
            shaper.save(now)
            with shaper.write_lock:  # what the agent will read from the state file: the last snapshot written
                on_disk = shaper.saved_paths
            wanted = (shaping.throttled_connections(on_disk, shaper.cfg.classes, now),
                      shaping.suspended_other(on_disk, now))
            if (wanted != applied or shaper.resync_failed) and work.empty():
                shaper.resync_failed = False
                work.put(("resync", None))  # the throttles' connections into Postfix (and the local fact)
                applied = wanted
            if not threads[2].is_alive() or not threads[3].is_alive():
                log("the log follower stopped; exiting so that systemd restarts the shaper", 3)
                return 1
            stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        shaper.save(time.time(), force=True)
        policy.shutdown()
        ctl.shutdown()
    return 0
