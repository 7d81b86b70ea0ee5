"""Thin I/O helpers for the lab: commands, processes we started (by PID), the machine's addresses."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from sendfleet.errors import CannotCheckError, UsageError


class LabError(CannotCheckError):
    """A lab step failed; the message says which and what the command printed."""


def run(cmd: Sequence[str], *, check: bool = True, input_text: str | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, input=input_text, timeout=timeout)
    except FileNotFoundError:
        raise LabError(f"{cmd[0]} is not installed (run scripts/setup.sh)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(cmd)}: no answer in {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): {last[0]}")
    return proc


def require_root_linux() -> None:
    if os.uname().sysname != "Linux":
        raise UsageError("the lab needs Linux (systemd-nspawn and network namespaces)")
    if os.geteuid() != 0:
        raise UsageError("the lab needs root: run 'sudo sendfleet lab ...'")


def machine_networks(exclude_dev: str | None = None) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """(device, network) for every address and route of the machine, except on `exclude_dev`."""
    found: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    for entry in json.loads(run(["ip", "-j", "addr", "show"]).stdout or "[]"):
        dev = entry.get("ifname", "?")
        if dev == exclude_dev:
            continue
        for addr in entry.get("addr_info", []):
            net = ipaddress.ip_network(f"{addr['local']}/{addr['prefixlen']}", strict=False)
            if not net.is_link_local and not net.is_loopback:
                found.append((dev, net))
    for family in ("-4", "-6"):
        for route in json.loads(run(["ip", "-j", family, "route", "show"]).stdout or "[]"):
            dst, dev = route.get("dst", ""), route.get("dev", "?")
            if dst in ("default", "") or dev == exclude_dev:
                continue
            try:
                net = ipaddress.ip_network(dst if "/" in dst else dst + ("/32" if family == "-4" else "/128"),
                                           strict=False)
            except ValueError:
                continue
            if not net.is_link_local and not net.is_multicast:
                found.append((dev, net))
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still answers kill(0): reap it if it is ours
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        stat = Path(f"/proc/{pid}/stat")
        try:
            return stat.read_text().split(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def start_daemon(cmd: Sequence[str], pidfile: Path, logfile: Path, cwd: Path | None = None) -> int:
    """Start a foreground daemon in its own session; record its PID in pidfile."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, start_new_session=True)
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def stop_pid(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 20) -> bool:
    """Signal exactly this PID and wait for it to end; SIGKILL it after timeout. True if it ended."""
    if not pid_alive(pid):
        return True
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    time.sleep(0.2)
    return not pid_alive(pid)
