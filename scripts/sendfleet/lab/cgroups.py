"""A cgroup of its own for each lab host.

systemd-nspawn --keep-unit runs a container in the cgroup of whoever started it. Hosts started from one
cgroup share it: the systemd inside each host then takes the others' unit cgroups for its own, and one
host's unit ending removes the cgroup that another host is starting the same unit in
(`status=219/CGROUP`, "Failed to attach to cgroup /system.slice/X.service: No such file or directory"),
which leaves that host 'degraded' at random.

So each host's supervisor moves itself into `<own cgroup>/sendfleet-lab-<host>` of every hierarchy that
systemd uses (the named `name=systemd` hierarchy of the legacy/hybrid layout, and cgroup2) before it
starts nspawn. The other controllers (memory, cpu...) are left alone: whatever limits the caller runs
under still hold. On a machine whose PID 1 is systemd, the supervisor asks systemd for a delegated scope
instead (systemd must own its cgroup tree).

Parsing is pure (`hierarchy_dirs`); the functions that touch /proc and /sys are thin."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

PREFIX = "sendfleet-lab-"
SYSTEMD_RUNTIME = Path("/run/systemd/system")  # exists iff systemd is the machine's init


def hierarchy_dirs(proc_cgroup: str, proc_mounts: str) -> list[Path]:
    """The directories of the calling process's cgroup in the hierarchies systemd uses.

    proc_cgroup: the text of /proc/self/cgroup ("ID:CONTROLLERS:PATH" lines; cgroup2 is "0::PATH");
    proc_mounts: the text of /proc/self/mounts."""
    own: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            own[parts[1]] = parts[2]
    dirs: list[Path] = []
    for line in proc_mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mountpoint, fstype, options = fields[1], fields[2], fields[3].split(",")
        if fstype == "cgroup2":
            key = ""
        elif fstype == "cgroup" and "name=systemd" in options:
            key = "name=systemd"
        else:
            continue
        if key in own:
            dirs.append(Path(mountpoint) / own[key].lstrip("/"))
    return dirs


def own_hierarchy_dirs() -> list[Path]:
    """`hierarchy_dirs` of this process."""
    return hierarchy_dirs(Path("/proc/self/cgroup").read_text(), Path("/proc/self/mounts").read_text())


def host_cgroup_dirs(name: str) -> list[Path]:
    """Where the supervisor of host `name` puts itself, one directory per hierarchy; none when systemd is
    the machine's init (the supervisor then runs nspawn in a delegated scope: `nspawn_prefix`)."""
    if SYSTEMD_RUNTIME.is_dir():
        return []
    return [base / f"{PREFIX}{name}" for base in own_hierarchy_dirs()]


def supervisor_prologue(dirs: list[Path]) -> str:
    """Shell lines for the supervisor script: enter the host's own cgroups `dirs`."""
    lines = []
    for d in dirs:
        q = shlex.quote(str(d))
        lines.append(f'mkdir -p {q} && echo $$ > {q}/cgroup.procs || '
                     f'{{ echo "sendfleet lab: cannot enter cgroup {d}" >&2; exit 1; }}')
    return "\n".join(lines)


def nspawn_prefix(name: str) -> str:
    """Command prefix for nspawn: a delegated transient scope when systemd runs the machine."""
    if not SYSTEMD_RUNTIME.is_dir():
        return ""
    return (f"systemd-run --scope --quiet --collect --property=Delegate=yes "
            f"--unit={PREFIX}{name}-$(date +%s%N) ")


def remove_cgroup_dirs(tops: list[Path]) -> list[Path]:
    """Remove a host's cgroup directories (deepest first; a cgroup still holding a process stays).
    Returns the directories that could not be removed."""
    left: list[Path] = []
    for top in tops:
        if not top.is_dir():
            continue
        for current, subdirs, _files in os.walk(top, topdown=False):
            for sub in subdirs:
                try:
                    (Path(current) / sub).rmdir()
                except OSError:
                    left.append(Path(current) / sub)
        try:
            top.rmdir()
        except OSError:
            left.append(top)
    return left


def leftover_cgroups() -> list[Path]:
    """Lab cgroups still on the machine (for the after-down check)."""
    found: list[Path] = []
    for base in own_hierarchy_dirs():
        if base.is_dir():
            found += sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith(PREFIX))
    return found
