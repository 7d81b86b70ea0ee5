"""Run after `sendfleet lab down` (scripts/test.sh): the lab left nothing behind on the machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

LAB_COMMANDS = ("systemd-nspawn", "knotd", "rbldnsd", "unbound", "apt-cacher-ng")


def test_no_bridge_veth_or_namespace_left() -> None:
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    names = [link["ifname"] for link in links]
    assert not [n for n in names if n == "sfl0" or n.startswith("veth-")], names
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "sfl-" not in netns


def test_no_lab_process_or_mount_left() -> None:
    left = []
    own_pid_ns = Path("/proc/self/ns/pid").stat().st_ino
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
            state = (proc / "stat").read_text().split(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        # a process in another PID namespace is a lab host's (systemd-nspawn gives each host its own)
        try:
            foreign = (proc / "ns" / "pid").stat().st_ino != own_pid_ns
        except OSError:
            foreign = False
        if state != "Z" and (Path(cmd).name in LAB_COMMANDS or foreign):
            left.append((proc.name, cmd))
    assert not left
    assert "sendfleet-lab" not in Path("/proc/mounts").read_text()
    assert not Path("/var/lib/sendfleet-lab").exists()


def test_no_lab_cgroup_left() -> None:
    from sendfleet.lab.cgroups import leftover_cgroups

    assert not leftover_cgroups()
