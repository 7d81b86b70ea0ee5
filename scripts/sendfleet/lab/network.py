"""The lab's network on this machine: one bridge, one namespace and veth pair per host."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
from pathlib import Path

from sendfleet.errors import UsageError
from sendfleet.lab.config import LabConfig, LabHost
from sendfleet.lab.system import machine_networks, run


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


def check_no_overlap(cfg: LabConfig) -> None:
    """Refuse a lab range that overlaps any address or route of the machine (other than our bridge)."""
    ours = (cfg.net4, cfg.net6)
    for dev, net in machine_networks(exclude_dev=cfg.bridge):
        for lab_net in ours:
            if net.version == lab_net.version and net.overlaps(lab_net):
                raise UsageError(
                    f"lab range {lab_net} overlaps {net} on {dev}, which this machine already uses; "
                    "choose another with --network/--network6"
                )


def bridge_addresses_present(cfg: LabConfig) -> set[str]:
    out = run(["ip", "-j", "addr", "show", "dev", cfg.bridge], check=False)
    if out.returncode != 0:
        return set()
    present: set[str] = set()
    for entry in json.loads(out.stdout or "[]"):
        for addr in entry.get("addr_info", []):
            present.add(addr["local"])
    return present


def ensure_bridge(cfg: LabConfig) -> bool:
    """Create the bridge with the machine's lab addresses. Returns True if anything changed."""
    changed = False
    if not link_exists(cfg.bridge):
        check_no_overlap(cfg)
        run(["ip", "link", "add", cfg.bridge, "type", "bridge"])
        run(["sysctl", "-qw", f"net.ipv6.conf.{cfg.bridge}.accept_dad=0"], check=False)
        changed = True
    present = bridge_addresses_present(cfg)
    for addr, plen in cfg.bridge_addresses():
        if str(ipaddress.ip_address(addr)) in present:
            continue
        extra = ["nodad"] if ":" in addr else []
        run(["ip", "addr", "add", f"{addr}/{plen}", "dev", cfg.bridge, *extra])
        changed = True
    run(["ip", "link", "set", cfg.bridge, "up"])
    return changed


def ensure_host_network(cfg: LabConfig, host: LabHost) -> bool:
    """Namespace + veth pair (host side in the bridge, `eth0` inside) with the host's addresses."""
    if netns_exists(host.netns) and link_exists(host.veth):
        return False
    if netns_exists(host.netns):
        run(["ip", "netns", "del", host.netns])
    if link_exists(host.veth):
        run(["ip", "link", "del", host.veth])
    ns = host.netns
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", host.veth, "master", cfg.bridge, "up"])
    run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
         "net.ipv6.conf.default.accept_dad=0"], check=False)
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "addr", "add", f"{host.ipv4}/24", "dev", "eth0"])
    run(["ip", "-n", ns, "addr", "add", f"{host.ipv6}/64", "dev", "eth0", "nodad"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run(["ip", "-n", ns, "route", "add", "default", "via", cfg.bridge_ip])
    run(["ip", "-n", ns, "-6", "route", "add", "default", "via", cfg.v6(1)], check=False)
    return True


def kill_netns_processes(host: LabHost) -> int:
    """SIGKILL every process that lives in the host's network namespace (its container's processes, which
    outlive a killed systemd-nspawn). Returns how many were signalled."""
    path = Path(f"/run/netns/{host.netns}")
    try:
        inode = path.stat().st_ino
    except OSError:
        return 0
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "ns" / "net").stat().st_ino == inode:
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed


def remove_host_network(host: LabHost) -> None:
    if link_exists(host.veth):
        run(["ip", "link", "del", host.veth], check=False)
    if netns_exists(host.netns):
        run(["ip", "netns", "del", host.netns], check=False)


def remove_bridge(cfg: LabConfig) -> None:
    if link_exists(cfg.bridge):
        run(["ip", "link", "del", cfg.bridge], check=False)
