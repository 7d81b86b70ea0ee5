"""Each lab host gets cgroups of its own: the parsing of /proc/self/cgroup and /proc/self/mounts."""

from __future__ import annotations

from pathlib import Path

from sendfleet.lab.cgroups import hierarchy_dirs

HYBRID_MOUNTS = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""


def test_hybrid_layout_uses_the_named_systemd_hierarchy_and_cgroup2_not_the_controllers() -> None:
    own = "9:name=systemd:/\n4:memory:/process_api/e18a\n1:cpu:/\n0::/\n"
    assert hierarchy_dirs(own, HYBRID_MOUNTS) == [Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified")]


def test_a_nested_caller_gets_its_own_path_in_each_hierarchy() -> None:
    own = "9:name=systemd:/ci/job7\n0::/ci/job7-v2\n"
    assert hierarchy_dirs(own, HYBRID_MOUNTS) == [Path("/sys/fs/cgroup/systemd/ci/job7"),
                                                  Path("/sys/fs/cgroup/unified/ci/job7-v2")]


def test_unified_only_layout() -> None:
    mounts = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n"
    assert hierarchy_dirs("0::/user.slice/session-3.scope\n", mounts) == [
        Path("/sys/fs/cgroup/user.slice/session-3.scope")]


def test_no_cgroup_filesystem_means_nothing_to_enter() -> None:
    assert hierarchy_dirs("0::/\n", "proc /proc proc rw 0 0\n") == []
