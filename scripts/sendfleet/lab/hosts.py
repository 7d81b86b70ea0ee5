"""Lab hosts: Debian 12 with systemd as PID 1 under systemd-nspawn, each in its own network namespace,
booted from an overlay on a cached image. A small supervisor restarts nspawn when the host reboots
(nspawn exits 133), so `systemctl reboot` inside a host works as on a real machine."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

from sendfleet.lab import alertrecorder, cgroups, sinkpolicy, zonedata
from sendfleet.lab.config import HOST_DOMAIN, LabConfig, LabHost
from sendfleet.lab.system import LabError, pid_alive, read_pid, run, start_daemon, stop_pid

# CAP_NET_ADMIN: like a real machine, a host manages its own interface addresses and firewall (nftables);
# it acts only inside the host's own network namespace.
SUPERVISOR = """#!/bin/bash
# written by `sendfleet lab up`: boots {name}; boots it again when it reboots (nspawn exit 133)
{cgroup_prologue}
while :; do
  [ -e "{dir}/stop" ] && exit 0
  {nspawn_prefix}systemd-nspawn --boot --register=no --keep-unit --machine={name} \\
    --network-namespace-path=/run/netns/{netns} --directory="{root}" \\
    --capability=CAP_NET_ADMIN --resolv-conf=off --timezone=off --link-journal=no --console=read-only &
  echo $! > "{dir}/nspawn.pid"
  wait $!
  rc=$?
  [ "$rc" -eq 133 ] || exit "$rc"
done
"""


def is_mounted(path: Path) -> bool:
    return os.path.ismount(path)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def prepare_host(cfg: LabConfig, host: LabHost, image: Path, authorized_key: str) -> None:
    """Mount the host's overlay and write what makes it this host (once per lab)."""
    hdir = cfg.host_dir(host)
    upper, work, root = hdir / "upper", hdir / "work", cfg.host_root(host)
    for d in (upper, work, root):
        d.mkdir(parents=True, exist_ok=True)
    if not is_mounted(root):
        run(["mount", "-t", "overlay", f"sfl-{host.name}", "-o",
             f"lowerdir={image},upperdir={upper},workdir={work}", str(root)])
    marker = upper / ".sendfleet-host"
    if marker.exists():
        return
    _write(root / "etc/hostname", f"{host.name}\n")
    _write(root / "etc/mailname", f"{host.fqdn}\n")
    _write(root / "etc/hosts", f"127.0.0.1 localhost\n::1 localhost\n{host.ipv4} {host.fqdn} {host.name}\n")
    _write(root / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    _write(root / "etc/resolv.conf", f"nameserver {cfg.resolver}\nsearch {HOST_DOMAIN}\n")
    _write(root / "etc/apt/apt.conf.d/01sendfleet-lab-proxy",
           f'Acquire::http::Proxy "http://{cfg.apt_cache}:3142";\n')
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(ssh_dir / "authorized_keys", authorized_key + "\n", 0o600)
    run(["ssh-keygen", "-A", "-f", str(root)])
    if host.role == "sink":
        _prepare_sink(cfg, root)
    marker.write_text(host.name + "\n")


def _prepare_sink(cfg: LabConfig, root: Path) -> None:
    _write(root / "etc/postfix/main.cf", zonedata.sink_main_cf(cfg))
    master = root / "etc/postfix/master.cf"
    text = master.read_text()
    if "sinkstore" not in text:
        master.write_text(text + zonedata.SINK_MASTER_CF_EXTRA)
    _write(root / "etc/postfix/sink_transport", zonedata.sink_transport(cfg))
    _write(root / sinkpolicy.REPLY_TABLE.lstrip("/"), sinkpolicy.render_table({}))
    _write(root / zonedata.SINK_STORE.lstrip("/"), zonedata.SINK_STORE_SCRIPT, 0o755)
    # the policy service runs this very module (standard library only), ordered before Postfix
    _write(root / zonedata.SINK_POLICY_SCRIPT.lstrip("/"), Path(sinkpolicy.__file__).read_text(), 0o755)
    _write(root / "etc/systemd/system/sink-policy.service", zonedata.SINK_POLICY_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants/sink-policy.service"
    wants.parent.mkdir(parents=True, exist_ok=True)
    wants.unlink(missing_ok=True)
    wants.symlink_to("/etc/systemd/system/sink-policy.service")
    # the lab's Alertmanager receiver (webhook), also this very module (standard library only)
    _write(root / zonedata.ALERT_RECORDER_SCRIPT.lstrip("/"), Path(alertrecorder.__file__).read_text(), 0o755)
    _write(root / "etc/systemd/system/alert-recorder.service", zonedata.ALERT_RECORDER_UNIT)
    wants = wants.with_name("alert-recorder.service")
    wants.unlink(missing_ok=True)
    wants.symlink_to("/etc/systemd/system/alert-recorder.service")


def supervisor_pid(cfg: LabConfig, host: LabHost) -> int | None:
    pid = read_pid(cfg.host_dir(host) / "supervisor.pid")
    return pid if pid is not None and pid_alive(pid) else None


def boot_host(cfg: LabConfig, host: LabHost) -> bool:
    """Start the host's supervisor unless it runs. Returns True if it was started."""
    if supervisor_pid(cfg, host) is not None:
        return False
    hdir = cfg.host_dir(host)
    (hdir / "stop").unlink(missing_ok=True)
    script = hdir / "supervisor.sh"
    # each host in a cgroup of its own (see lab/cgroups.py); recorded so that `lab down` removes them
    own_cgroups = cgroups.host_cgroup_dirs(host.name)
    if own_cgroups:
        _write(hdir / "cgroups", "".join(f"{d}\n" for d in own_cgroups))
    _write(script, SUPERVISOR.format(name=host.name, dir=hdir, netns=host.netns, root=cfg.host_root(host),
                                     cgroup_prologue=cgroups.supervisor_prologue(own_cgroups),
                                     nspawn_prefix=cgroups.nspawn_prefix(host.name)), 0o755)
    start_daemon(["/bin/bash", str(script)], hdir / "supervisor.pid", hdir / "console.log")
    return True


def ssh_port_open(host: LabHost, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host.ipv4, 22), timeout=timeout) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def ssh_command(cfg: LabConfig, host: LabHost, key: Path, *remote: str) -> list[str]:
    return ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", f"root@{host.ipv4}",
            *remote]


def wait_reachable(cfg: LabConfig, host: LabHost, key: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervisor_pid(cfg, host) is None:
            tail = (cfg.host_dir(host) / "console.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise LabError(f"{host.name} stopped while booting: {' | '.join(tail) or 'no output'}")
        if ssh_port_open(host):
            proc = subprocess.run(ssh_command(cfg, host, key, "true"), capture_output=True, timeout=30)
            if proc.returncode == 0:
                return
        time.sleep(0.3)
    raise LabError(f"{host.name} ({host.ipv4}) not reachable by SSH after {timeout:.0f} s "
                   f"(console: {cfg.host_dir(host) / 'console.log'})")


def stop_host(cfg: LabConfig, host: LabHost, timeout: float = 60) -> None:
    """Power the host off cleanly (SIGTERM to nspawn = orderly shutdown), then end its supervisor."""
    hdir = cfg.host_dir(host)
    if hdir.exists():
        (hdir / "stop").touch()
    nspawn = read_pid(hdir / "nspawn.pid")
    if nspawn is not None and pid_alive(nspawn):
        stop_pid(nspawn, timeout=timeout)
    sup = read_pid(hdir / "supervisor.pid")
    if sup is not None:
        stop_pid(sup, timeout=10)


def remove_host_files(cfg: LabConfig, host: LabHost) -> None:
    """Unmount the host's tree, remove its cgroups (its processes have ended) and its files."""
    recorded = cfg.host_dir(host) / "cgroups"
    if recorded.exists():
        dirs = [Path(line) for line in recorded.read_text().splitlines() if line]
        for _ in range(25):  # the host's last processes may still be exiting
            if not cgroups.remove_cgroup_dirs(dirs):
                break
            time.sleep(0.2)
    root = cfg.host_root(host)
    for _ in range(20):
        if not is_mounted(root):
            break
        if run(["umount", str(root)], check=False).returncode != 0:
            time.sleep(0.5)
    if is_mounted(root):
        run(["umount", "--lazy", str(root)], check=False)
    shutil.rmtree(cfg.host_dir(host), ignore_errors=True)
