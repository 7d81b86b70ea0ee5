"""Changing the lab under running tests, as the world changes under a fleet: list or unlist an address in
the lab's blocklists (rbldnsd reloads its data within a second), or make the sink answer a recipient domain
with a given SMTP reply (e.g. `421 4.7.0 rate limited`), for every client or one client IP; read how many
transactions the sink had open at once per client IP and recipient domain."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Mapping
from pathlib import Path

from sendfleet.atomicfile import write_atomic
from sendfleet.errors import UsageError
from sendfleet.lab import sinkpolicy
from sendfleet.lab.config import DEFAULT_STATE_DIR, LabConfig
from sendfleet.lab.lab import running_config
from sendfleet.lab.system import LabError

# zone -> (dataset file for IPv4 entries, for IPv6 entries, for domain entries)
DATASETS: dict[str, dict[str, str]] = {
    "zen.lab.test": {"ipv4": "zen4", "ipv6": "zen6"},
    "l2.lab.test": {"ipv4": "l2"},
    "dbl.lab.test": {"domain": "dbl"},
}


def _lab(state_dir: Path) -> LabConfig:
    cfg = running_config(state_dir)
    if cfg is None:
        raise LabError("the lab is not up: run 'sendfleet lab up'")
    return cfg


def _dataset(cfg: LabConfig, zone: str, entry: str) -> tuple[Path, str]:
    if zone not in DATASETS:
        raise UsageError(f"--zone {zone}: the lab's editable blocklists are {', '.join(DATASETS)}")
    try:
        addr = ipaddress.ip_network(entry, strict=False)
        kind, key = ("ipv4" if addr.version == 4 else "ipv6"), str(addr if addr.num_addresses > 1 else addr[0])
        if kind == "ipv6" and addr.num_addresses == 1:
            key = f"{addr[0]}/128"
    except ValueError:
        kind, key = "domain", entry.lower().rstrip(".")
    name = DATASETS[zone].get(kind)
    if name is None:
        raise UsageError(f"{entry}: {zone} takes no {kind} entries")
    return cfg.state_dir / "services" / "rbldnsd" / "data" / name, key


def list_entry(zone: str, entry: str, code: str = "127.0.0.2", reason: str = "listed by a lab test",
               state_dir: Path = DEFAULT_STATE_DIR) -> None:
    path, key = _dataset(_lab(state_dir), zone, entry)
    lines = [ln for ln in path.read_text().splitlines() if ln.split(" ", 1)[0] != key]
    lines.append(f"{key} :{code}:{reason}")
    write_atomic(path, "\n".join(lines) + "\n")


def unlist_entry(zone: str, entry: str, state_dir: Path = DEFAULT_STATE_DIR) -> bool:
    path, key = _dataset(_lab(state_dir), zone, entry)
    lines = path.read_text().splitlines()
    kept = [ln for ln in lines if ln.split(" ", 1)[0] != key]
    if kept != lines:
        write_atomic(path, "\n".join(kept) + "\n")
    return kept != lines


def sink_reply(target: str, action: str | None, client_ip: str | None = None,
               state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Make the sink answer RCPT TO for `target` (a recipient domain or address) with `action`, an SMTP reply
    such as '421 4.7.28 unusual rate' or any access(5) action; None removes it. With `client_ip`, only
    connections from that address get it. Precedence: (client IP, address) > (client IP, domain) > address >
    domain. In force when this returns: the sink's policy service checks the table on every request."""
    try:
        key = (None if client_ip is None else sinkpolicy.normalise_ip(client_ip), sinkpolicy.normalise_target(target))
        action = None if action is None else sinkpolicy.check_action(action)
    except ValueError as err:
        raise UsageError(f"sink reply for {target}: {err}") from None
    path = _reply_table(_lab(state_dir))
    table = sinkpolicy.parse_table(path.read_text())
    if action is None:
        table.pop(key, None)
    else:
        table[key] = action
    write_atomic(path, sinkpolicy.render_table(table))


def sink_recipient_action(domain: str, action: str | None, state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Make the sink answer RCPT TO for `domain` (or one address) with `action`, for every client."""
    sink_reply(domain, action, state_dir=state_dir)


def sink_replies(state_dir: Path = DEFAULT_STATE_DIR) -> dict[tuple[str | None, str], str]:
    """The replies in force: (client IP or None, domain or address) -> action."""
    return sinkpolicy.parse_table(_reply_table(_lab(state_dir)).read_text())


def _reply_table(cfg: LabConfig) -> Path:
    return cfg.host_root(cfg.host("sink")) / sinkpolicy.REPLY_TABLE.lstrip("/")


def _sink_control(cfg: LabConfig, request: dict[str, object]) -> object:
    host = cfg.host("sink").ipv4
    try:
        with socket.create_connection((host, sinkpolicy.CONTROL_PORT), timeout=10) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            with sock.makefile("rb") as reader:
                line = reader.readline()
    except OSError as err:
        raise LabError(f"sink: policy service at {host}:{sinkpolicy.CONTROL_PORT}: {err}") from None
    if not line:
        raise LabError(f"sink: policy service at {host}:{sinkpolicy.CONTROL_PORT} closed without answering")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise LabError(f"sink: policy service: {reply.get('error')}")
    return reply["result"]


def sink_concurrency(reset: bool = False, state_dir: Path = DEFAULT_STATE_DIR) -> dict[tuple[str, str], int]:
    """Peak number of concurrent SMTP transactions per (client IP, recipient domain) the sink saw since the
    last reset (what counts: docs/lab.md). With `reset`, the peaks are returned and restarted."""
    rows = _sink_control(_lab(state_dir), {"op": "concurrency", "reset": reset})
    assert isinstance(rows, list)
    return {(str(ip), str(domain)): int(n) for ip, domain, n in rows}


def sink_class_concurrency(groups: Mapping[str, str] | None = None, reset: bool = False,
                           state_dir: Path = DEFAULT_STATE_DIR) -> dict[tuple[str, str], int]:
    """Peak number of concurrent SMTP transactions per (client IP, group of recipient domains): `groups` (domain ->
    group, e.g. a provider class) starts counting them anew; without it, the peaks since the last call that set or
    reset them. A transaction to two domains of a group counts once."""
    request: dict[str, object] = {"op": "groups", "reset": reset}
    if groups is not None:
        request["set"] = dict(groups)
    rows = _sink_control(_lab(state_dir), request)
    assert isinstance(rows, list)
    return {(str(ip), str(group)): int(n) for ip, group, n in rows}


def sink_connections(reset: bool = False, state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, int]:
    """Peak number of open SMTP connections per client IP since the last reset (sampled every 50 ms)."""
    peaks = _sink_control(_lab(state_dir), {"op": "connections", "reset": reset})
    assert isinstance(peaks, dict)
    return {str(ip): int(n) for ip, n in peaks.items()}
