"""The lab sink's policy service: SMTP replies per client IP and recipient, and concurrency records.

This file runs on the sink as it is (`python3 sinkpolicy.py`, standard library only, installed by `lab up` as
the `sink-policy` systemd unit, ordered before Postfix); the controller on this machine imports its pure parts
(the reply table format and precedence).

Postfix asks it through `check_policy_service` at MAIL (`smtpd_delay_reject = no`), at RCPT and at
END-OF-MESSAGE:

- RCPT: the answer is the reply table's action for (client IP, recipient), or DUNNO. The table is a JSON file
  the controller replaces atomically; it is re-read when its inode, size or mtime changes, checked on every
  request, so a change is in force for the next RCPT (no reload, no race with running smtpd processes).
  Precedence: (client IP, address) > (client IP, domain) > address > domain.
- Concurrency: a session counts for (client IP, recipient domain) from its first accepted RCPT for that domain
  until its transaction ends: END-OF-MESSAGE, the session's next MAIL, or the TCP connection leaving
  ESTABLISHED (QUIT, a hang-up, a 421), seen by sampling /proc/net/tcp{,6} every 50 ms. A transaction whose end
  was never seen (RSET followed by an idle connection) expires 60 s after its last event. The same sampling
  records the peak of open connections to port 25 per client IP.
- Control (TCP, one JSON line each way, on the sink's port 10041): {"op": "concurrency", "reset": bool} and
  {"op": "connections", "reset": bool} answer the peaks since the last reset (a reset restarts each peak from
  what is open at that moment).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

POLICY_PORT = 10040  # on the sink's loopback: Postfix's smtpd (chrooted) reaches it over TCP
CONTROL_PORT = 10041  # on every sink IPv4 address: the controller on this machine
REPLY_TABLE = "/etc/postfix/sink_replies.json"
STALE_AFTER = 60.0
SAMPLE_INTERVAL = 0.05
ACCEPTING = ("DUNNO", "OK", "PERMIT")

#: (client IP or None, domain or address) -> SMTP reply / access(5) action
ReplyTable = dict[tuple[str | None, str], str]


# ---- the reply table ----------------------------------------------------------------------------
def normalise_target(target: str) -> str:
    """A recipient domain or address as the table keys it; ValueError names what is wrong."""
    key = target.strip().lower().rstrip(".")
    local, at, domain = key.rpartition("@")
    if not domain or " " in key or (at and not local) or "." not in domain:
        raise ValueError(f"{target!r}: expected a recipient domain or address")
    return key


def normalise_ip(client_ip: str) -> str:
    try:
        return ipaddress.ip_address(client_ip.strip()).compressed
    except ValueError:
        raise ValueError(f"{client_ip!r}: expected a client IP address") from None


def check_action(action: str) -> str:
    """An action Postfix takes from a policy service: a 4xx/5xx reply with text, or an access(5) word."""
    words = action.split()
    if not words:
        raise ValueError("empty action")
    if words[0].isdecimal() and not (len(words[0]) == 3 and words[0][0] in "45"):
        raise ValueError(f"{action!r}: a reply code must be 4xx or 5xx (accept with OK or DUNNO)")
    return " ".join(words)


def parse_table(text: str) -> ReplyTable:
    """The table file: {"replies": [{"target": ..., "client_ip": ... or null, "action": ...}, ...]}."""
    table: ReplyTable = {}
    for row in json.loads(text or "{}").get("replies", []):
        ip = row.get("client_ip")
        key = (None if ip is None else normalise_ip(ip), normalise_target(row["target"]))
        table[key] = check_action(str(row["action"]))
    return table


def render_table(table: Mapping[tuple[str | None, str], str]) -> str:
    rows = [{"target": t, "client_ip": ip, "action": a} for (ip, t), a in sorted(table.items(), key=str)]
    return json.dumps({"replies": rows}, indent=1) + "\n"


def pick_reply(table: Mapping[tuple[str | None, str], str], client_ip: str, recipient: str) -> str | None:
    """The action for this client and recipient, by precedence; None if no key matches."""
    address = recipient.strip().lower()
    domain = address.rpartition("@")[2].rstrip(".")
    try:
        ip: str | None = normalise_ip(client_ip)
    except ValueError:
        ip = None
    keys = [(ip, address), (ip, domain)] if ip is not None else []
    for key in [*keys, (None, address), (None, domain)]:
        if key in table:
            return table[key]
    return None


def accepts(action: str | None) -> bool:
    """Whether an answer lets the recipient through (so that it counts towards concurrency)."""
    if action is None:
        return True
    first = action.split(maxsplit=1)[0].upper() if action.strip() else "DUNNO"
    return first in ACCEPTING


# ---- concurrency bookkeeping --------------------------------------------------------------------
@dataclass(frozen=True)
class Transaction:
    session: str
    client_ip: str
    domains: frozenset[str]
    last_seen: float
    groups: frozenset[str] = frozenset()


class Concurrency:
    """Open transactions per (client IP, recipient domain) and their peaks since the last reset.

    Not thread-safe by itself: the server holds one lock around every call."""

    def __init__(self, stale_after: float = STALE_AFTER) -> None:
        self.stale_after = stale_after
        self._txns: dict[str, Transaction] = {}  # instance -> transaction
        self._by_session: dict[str, str] = {}  # session -> its open instance
        self._open: dict[tuple[str, str], int] = {}
        self._peak: dict[tuple[str, str], int] = {}
        # domain -> group (a provider class: gmail.test and acme.test are both Gmail's); a transaction counts once
        # per (client IP, group) however many of the group's domains it has
        self.groups: dict[str, str] = {}
        self._gopen: dict[tuple[str, str], int] = {}
        self._gpeak: dict[tuple[str, str], int] = {}

    def recipient(self, now: float, instance: str, session: str, client_ip: str, domain: str) -> None:
        """An accepted RCPT: the transaction counts for (client IP, domain) from now on."""
        previous = self._by_session.get(session)
        if previous is not None and previous != instance:  # a new MAIL we did not hear about
            self.end(previous)
        txn = self._txns.get(instance) or Transaction(session, client_ip, frozenset(), now)
        domain = domain.lower().rstrip(".")
        if domain not in txn.domains:
            key = (client_ip, domain)
            self._open[key] = self._open.get(key, 0) + 1
            self._peak[key] = max(self._peak.get(key, 0), self._open[key])
            txn = replace(txn, domains=txn.domains | {domain})
        group = self.groups.get(domain)
        if group is not None and group not in txn.groups:
            gkey = (client_ip, group)
            self._gopen[gkey] = self._gopen.get(gkey, 0) + 1
            self._gpeak[gkey] = max(self._gpeak.get(gkey, 0), self._gopen[gkey])
            txn = replace(txn, groups=txn.groups | {group})
        self._txns[instance] = replace(txn, last_seen=now)
        self._by_session[session] = instance

    def end(self, instance: str) -> None:
        """The transaction ended (END-OF-MESSAGE, next MAIL, connection closed, expiry); unknown ids are ignored."""
        txn = self._txns.pop(instance, None)
        if txn is None:
            return
        if self._by_session.get(txn.session) == instance:
            del self._by_session[txn.session]
        for domain in txn.domains:
            key = (txn.client_ip, domain)
            self._open[key] -= 1
            if not self._open[key]:
                del self._open[key]
        for group in txn.groups:
            gkey = (txn.client_ip, group)
            self._gopen[gkey] -= 1
            if not self._gopen[gkey]:
                del self._gopen[gkey]

    def end_session(self, session: str) -> None:
        instance = self._by_session.get(session)
        if instance is not None:
            self.end(instance)

    def end_closed(self, alive: set[str], snapshot_at: float) -> list[str]:
        """End the transactions of sessions whose connection is not in `alive`, a snapshot of the ESTABLISHED
        connections taken at `snapshot_at`: a transaction with an event after the snapshot is kept (its
        connection may be younger than the snapshot). Sessions known by smtpd process only are not checked."""
        gone = [i for s, i in self._by_session.items()
                if s not in alive and not s.startswith("pid ") and self._txns[i].last_seen < snapshot_at]
        for instance in gone:
            self.end(instance)
        return gone

    def expire(self, now: float) -> list[str]:
        """End every transaction with no event for `stale_after` seconds; returns their ids."""
        stale = [i for i, t in self._txns.items() if now - t.last_seen > self.stale_after]
        for instance in stale:
            self.end(instance)
        return stale

    def open_counts(self) -> dict[tuple[str, str], int]:
        return dict(self._open)

    def peaks(self, reset: bool = False) -> dict[tuple[str, str], int]:
        """Peak per (client IP, domain) since the last reset; a reset restarts each from what is open now."""
        out = dict(self._peak)
        if reset:
            self._peak = dict(self._open)
        return out

    def set_groups(self, groups: Mapping[str, str]) -> None:
        """Count from now on per (client IP, group) too; the group peaks restart (open transactions keep the
        groups they had)."""
        self.groups = {d.lower().rstrip("."): str(g) for d, g in groups.items()}
        self._gpeak = dict(self._gopen)

    def group_peaks(self, reset: bool = False) -> dict[tuple[str, str], int]:
        """Peak per (client IP, group) since the last reset or set_groups."""
        out = dict(self._gpeak)
        if reset:
            self._gpeak = dict(self._gopen)
        return out


class PeakCounter:
    """Peak of a sampled count per key (open connections per client IP)."""

    def __init__(self) -> None:
        self._current: dict[str, int] = {}
        self._peak: dict[str, int] = {}

    def sample(self, counts: Mapping[str, int]) -> None:
        self._current = dict(counts)
        for key, n in counts.items():
            self._peak[key] = max(self._peak.get(key, 0), n)

    def peaks(self, reset: bool = False) -> dict[str, int]:
        out = dict(self._peak)
        if reset:
            self._peak = {k: n for k, n in self._current.items() if n}
        return out


def session_key(request: Mapping[str, str]) -> str:
    """One SMTP session: the client's address and port (Postfix 3.x sends client_port), else the smtpd process."""
    port = request.get("client_port", "")
    if port and port != "unknown":
        return f"{request.get('client_address', '')} {port}"
    return "pid " + request.get("instance", "").split(".", 1)[0]


def parse_proc_net_tcp(text: str, local_port: int = 25) -> list[tuple[str, int]]:
    """(remote address, remote port) of every ESTABLISHED connection to `local_port` in /proc/net/tcp{,6}."""
    out: list[tuple[str, int]] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "01":
            continue
        local, remote = fields[1], fields[2]
        if int(local.rsplit(":", 1)[1], 16) != local_port:
            continue
        addr_hex, port_hex = remote.rsplit(":", 1)
        raw = bytes.fromhex(addr_hex)
        # the kernel prints each 32-bit word in host (little-endian) order
        packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
        addr = ipaddress.ip_address(packed)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        out.append((addr.compressed, int(port_hex, 16)))
    return out


def count_by_ip(connections: Iterable[tuple[str, int]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ip, _ in connections:
        counts[ip] = counts.get(ip, 0) + 1
    return counts


# ---- the service (runs on the sink) -------------------------------------------------------------
class _State:
    def __init__(self, table_path: str) -> None:
        self.lock = threading.Lock()
        self.table_path = table_path
        self.table: ReplyTable = {}
        self.table_sig: tuple[int, int, int] | None = None
        self.concurrency = Concurrency()
        self.connections = PeakCounter()

    def current_table(self) -> ReplyTable:
        try:
            st = os.stat(self.table_path)
            sig: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            sig = None
        if sig != self.table_sig:
            try:
                with open(self.table_path) as fh:
                    self.table = parse_table(fh.read())
            except FileNotFoundError:
                self.table = {}
            except (ValueError, KeyError, TypeError, AttributeError) as err:  # keep the last good table
                print(f"sink-policy: {self.table_path}: {err}", file=sys.stderr, flush=True)
            self.table_sig = sig
        return self.table

    def answer(self, request: Mapping[str, str]) -> str:
        state = request.get("protocol_state", "")
        instance = request.get("instance", "")
        now = time.monotonic()
        with self.lock:
            if state == "MAIL":
                self.concurrency.end_session(session_key(request))
            elif state == "END-OF-MESSAGE":
                self.concurrency.end(instance)
            elif state == "RCPT":
                client_ip = request.get("client_address", "")
                recipient = request.get("recipient", "")
                action = pick_reply(self.current_table(), client_ip, recipient)
                if accepts(action) and recipient:
                    self.concurrency.recipient(now, instance, session_key(request), client_ip,
                                               recipient.rpartition("@")[2])
                if action is not None:
                    return action
        return "DUNNO"

    def sample(self) -> None:
        snapshot_at = time.monotonic()
        conns: list[tuple[str, int]] = []
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(name) as fh:
                    conns += parse_proc_net_tcp(fh.read())
            except FileNotFoundError:
                pass
        alive = {f"{ip} {port}" for ip, port in conns}
        with self.lock:
            self.connections.sample(count_by_ip(conns))
            self.concurrency.end_closed(alive, snapshot_at)
            self.concurrency.expire(time.monotonic())


def _policy_handler(state: _State) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request: dict[str, str] = {}
            for raw in self.rfile:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line:
                    name, _, value = line.partition("=")
                    request[name] = value
                    continue
                self.wfile.write(f"action={state.answer(request)}\n\n".encode())
                self.wfile.flush()
                request = {}

    return Handler


def _control_handler(state: _State) -> type[socketserver.StreamRequestHandler]:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for raw in self.rfile:
                try:
                    req = json.loads(raw)
                    with state.lock:
                        if req["op"] == "concurrency":
                            peaks = state.concurrency.peaks(bool(req.get("reset")))
                            body: object = [[ip, d, n] for (ip, d), n in sorted(peaks.items())]
                        elif req["op"] == "groups":
                            if "set" in req:
                                state.concurrency.set_groups(req["set"])
                            gpeaks = state.concurrency.group_peaks(bool(req.get("reset")))
                            body = [[ip, g, n] for (ip, g), n in sorted(gpeaks.items())]
                        elif req["op"] == "connections":
                            body = state.connections.peaks(bool(req.get("reset")))
                        else:
                            raise ValueError(f"unknown op {req['op']!r}")
                    reply = {"ok": True, "result": body}
                except (ValueError, KeyError, TypeError) as err:
                    reply = {"ok": False, "error": str(err)}
                self.wfile.write(json.dumps(reply).encode() + b"\n")
                self.wfile.flush()

    return Handler


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # one connection per smtpd process (up to default_process_limit)


def _notify_ready() -> None:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", "\0" + addr[1:] if addr.startswith("@") else addr)


def serve(table_path: str = REPLY_TABLE) -> None:
    state = _State(table_path)
    servers = [_Server(("127.0.0.1", POLICY_PORT), _policy_handler(state)),
               _Server(("0.0.0.0", CONTROL_PORT), _control_handler(state))]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    _notify_ready()
    while True:
        state.sample()
        time.sleep(SAMPLE_INTERVAL)


if __name__ == "__main__":
    serve(*sys.argv[1:2])
