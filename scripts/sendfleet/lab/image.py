"""The lab's Debian 12 images: built once with debootstrap, cached outside the repo, rebuilt only when
their recipe changes. Hosts boot from an overlay on top of an image; no host ever writes to it."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from sendfleet.lab.system import LabError, run

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt", "iproute2",
    "ca-certificates", "procps", "less",
)
SINK_PACKAGES = ("postfix", "ssl-cert")

SOURCES_LIST = f"""deb {MIRROR} {SUITE} main
deb {MIRROR} {SUITE}-updates main
deb http://deb.debian.org/debian-security {SUITE}-security main
"""

# Bumping this string (or any package list) rebuilds the images.
RECIPE_VERSION = "2026-11-27.1"


def base_recipe() -> str:
    return f"{RECIPE_VERSION} debootstrap --variant=minbase {SUITE} {MIRROR} {','.join(BASE_PACKAGES)}"


def recipe_hash(recipe: str) -> str:
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def _chroot(root: Path, script: str, timeout: float = 900) -> None:
    env_script = "export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8\n" + script
    run(["chroot", str(root), "/bin/sh", "-ec", env_script], timeout=timeout)


def _finish_base(root: Path) -> None:
    (root / "etc/apt/sources.list").write_text(SOURCES_LIST)
    (root / "etc/default/locale").write_text("LANG=C.UTF-8\n")
    _chroot(root, """
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
systemctl enable ssh.service
systemctl mask systemd-networkd-wait-online.service getty@tty1.service
apt-get clean
rm -rf /var/lib/apt/lists/* /var/log/*.log
""")


def _finish_sink(root: Path) -> None:
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    try:
        _chroot(root, f"""
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends {' '.join(SINK_PACKAGES)}
useradd --system --home-dir /var/spool/sink --shell /usr/sbin/nologin sinkstore
install -d -o sinkstore -g sinkstore -m 0755 /var/spool/sink
systemctl enable postfix.service
apt-get clean
rm -rf /var/lib/apt/lists/*
""")
    finally:
        policy.unlink(missing_ok=True)
        resolv.unlink(missing_ok=True)


def _build(images_dir: Path, name: str, make: Callable[[Path], None]) -> Path:
    final = images_dir / name
    if (final / ".sendfleet-image").exists():
        return final
    tmp = images_dir / f".{name}.building"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        make(tmp)
        (tmp / ".sendfleet-image").write_text(name + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def ensure_images(images_dir: Path, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Return {"base": path, "sink": path}, building what is missing or out of date."""
    images_dir.mkdir(parents=True, exist_ok=True)
    base_id = recipe_hash(base_recipe())
    sink_id = recipe_hash(base_recipe() + " sink " + ",".join(SINK_PACKAGES))
    base_name, sink_name = f"base-{base_id}", f"sink-{sink_id}"

    def make_base(tmp: Path) -> None:
        log(f"building the lab's Debian 12 base image (debootstrap, about a minute): {base_name}")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(tmp),
             MIRROR], timeout=1800)
        _finish_base(tmp)

    base = _build(images_dir, base_name, make_base)

    def make_sink(tmp: Path) -> None:
        log(f"building the sink MX image (base + Postfix): {sink_name}")
        tmp.rmdir()
        proc = subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise LabError(f"copying the base image failed: {proc.stderr.strip()}")
        (tmp / ".sendfleet-image").unlink(missing_ok=True)
        _finish_sink(tmp)

    sink = _build(images_dir, sink_name, make_sink)
    for stale in images_dir.iterdir():
        if stale.name not in (base_name, sink_name) and not stale.name.startswith("."):
            shutil.rmtree(stale, ignore_errors=True)
    return {"base": base, "sink": sink}
