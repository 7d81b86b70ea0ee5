"""`sendfleet lab up | down | status`: bring the whole lab up (idempotently), take it down cleanly,
and report the health of each part."""

from __future__ import annotations

import base64
import dataclasses
import secrets
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sendfleet.errors import UsageError
from sendfleet.lab import hosts, inventory, network, services
from sendfleet.lab.config import LabConfig
from sendfleet.lab.image import ensure_images
from sendfleet.lab.system import LabError, require_root_linux

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def running_config(state_dir: Path) -> LabConfig | None:
    """The config of the lab that is up (from its state file), or None."""
    state = state_dir / "lab.json"
    if not state.exists():
        return None
    return LabConfig.from_json(state.read_text())


def lab_key(cfg: LabConfig) -> Path:
    """The SSH key every lab host trusts (a copy sits in the lab inventory)."""
    return cfg.state_dir / "ssh" / "lab_ed25519"


def is_alive(cfg: LabConfig) -> bool:
    """True if any process of the recorded lab still runs (else its state is stale: e.g. the machine's
    processes were ended under it, leaving bridge, namespaces and mounts behind)."""
    return any(services.service_pid(cfg, svc) is not None for svc in services.SERVICES) or any(
        hosts.supervisor_pid(cfg, host) is not None for host in cfg.hosts)


def _same_shape(a: LabConfig, b: LabConfig) -> bool:
    return dataclasses.replace(a, inventory_dir=b.inventory_dir) == b


def _tsig_secret(cfg: LabConfig) -> str:
    path = cfg.state_dir / "tsig.secret"
    if path.exists():
        return path.read_text().strip()
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def up(cfg: LabConfig, log: Log = _quiet) -> bool:
    """Bring the lab up; a no-op when it already is. Returns True if anything changed."""
    require_root_linux()
    current = running_config(cfg.state_dir)
    if current is not None and not is_alive(current):
        log("found a stale lab (its processes are gone): cleaning it up first")
        down(cfg.state_dir, log)
        current = None
    if current is not None and not _same_shape(current, cfg):
        raise UsageError(
            f"a lab of another shape is up ({current.senders} senders on {current.network}); "
            "run 'sendfleet lab down' first"
        )
    started = time.monotonic()
    images = ensure_images(cfg.images_dir, log)
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.state_file.write_text(cfg.to_json())
    changed = network.ensure_bridge(cfg)
    secret = _tsig_secret(cfg)
    for svc in services.SERVICES:
        if services.ensure_service(cfg, svc, secret):
            log(f"started {svc.name} ({svc.what})")
            changed = True
    key = inventory.ensure_ssh_key(cfg.state_dir)
    pubkey = key.with_suffix(".pub").read_text().strip()
    booted = []
    for host in cfg.hosts:
        changed |= network.ensure_host_network(cfg, host)
        hosts.prepare_host(cfg, host, images["sink" if host.role == "sink" else "base"], pubkey)
        if hosts.boot_host(cfg, host):
            booted.append(host)
    with ThreadPoolExecutor(max_workers=len(cfg.hosts)) as pool:
        list(pool.map(lambda h: hosts.wait_reachable(cfg, h, key), cfg.hosts))
    sink = cfg.host("sink")
    deadline = time.monotonic() + 90
    while services.tcp_probe(sink.ipv4, 25) is not None:  # the sink's Postfix starts after sshd
        if time.monotonic() > deadline:
            raise LabError(f"the sink ({sink.ipv4}) does not accept SMTP on port 25 after 90 s")
        time.sleep(0.3)
    if booted:
        log(f"booted {', '.join(h.name for h in booted)}")
        changed = True
    inventory.write_inventory(cfg, key, secret)
    if changed:
        log(f"lab up in {time.monotonic() - started:.1f} s; inventory: {cfg.inventory_dir}")
    else:
        log("lab already up: nothing to do")
    return changed


def down(state_dir: Path, log: Log = _quiet, purge_inventory: bool = False) -> bool:
    """Power hosts off, end the lab's own processes by PID, remove namespaces, veths and the bridge.
    Keeps the cached images and apt cache. Returns False if no lab was up."""
    require_root_linux()
    cfg = running_config(state_dir)
    if cfg is None:
        return False
    with ThreadPoolExecutor(max_workers=len(cfg.hosts)) as pool:
        list(pool.map(lambda h: hosts.stop_host(cfg, h), cfg.hosts))
    for host in cfg.hosts:
        if network.kill_netns_processes(host):  # a container whose nspawn was killed (stale lab)
            time.sleep(0.5)
        hosts.remove_host_files(cfg, host)
        network.remove_host_network(host)
    for svc in reversed(services.SERVICES):
        services.stop_service(cfg, svc)
    network.remove_bridge(cfg)
    shutil.rmtree(cfg.state_dir, ignore_errors=True)
    if purge_inventory:
        for child in cfg.inventory_dir.iterdir() if cfg.inventory_dir.exists() else []:
            if child.name != "README.md":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    log("lab down")
    return True


@dataclass(frozen=True)
class PartStatus:
    part: str
    kind: str
    healthy: bool
    detail: str


def status(state_dir: Path) -> list[PartStatus] | None:
    """Health of every part, or None when no lab is up."""
    cfg = running_config(state_dir)
    if cfg is None:
        return None
    parts: list[PartStatus] = []
    present = network.bridge_addresses_present(cfg)
    parts.append(PartStatus(cfg.bridge, "bridge", cfg.bridge_ip in present,
                            f"{cfg.network} {cfg.network6}" if present else "missing"))
    for svc in services.SERVICES:
        pid = services.service_pid(cfg, svc)
        problem = "not running" if pid is None else svc.probe(cfg)
        parts.append(PartStatus(svc.name, svc.what, problem is None, problem or f"pid {pid}"))
    for host in cfg.hosts:
        sup = hosts.supervisor_pid(cfg, host)
        if sup is None:
            parts.append(PartStatus(host.name, host.role, False, "not running"))
            continue
        ok = hosts.ssh_port_open(host, timeout=1.0)
        extra = ""
        if host.role == "sink" and ok:
            problem = services.tcp_probe(host.ipv4, 25)
            ok, extra = problem is None, f", smtp {'ok' if problem is None else 'down'}"
        parts.append(PartStatus(host.name, host.role, ok,
                                f"{host.ipv4} ssh {'ok' if ok else 'down'}{extra}"))
    return parts
