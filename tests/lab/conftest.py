"""The lab, shared by every test in one run.

`lab`: brings the lab up once per run (a no-op if it is up already, e.g. when scripts/test.sh started it)
and takes it down at the end only if this run brought it up — even when tests fail.
`converged`: the main job on the lab (scripts/main-job.sh: vet + admit, pool assign, site.yml), once per run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SENDFLEET = [sys.executable, "-m", "sendfleet"]


@dataclass
class LabHandle:
    inventory_dir: Path
    resolver: str
    config: object  # sendfleet.lab.config.LabConfig

    def ssh(self, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell command on a lab host as root."""
        from sendfleet.lab.hosts import ssh_command

        cfg = self.config
        cmd = ssh_command(cfg, cfg.host(host), self.inventory_dir / ".ssh" / "lab_ed25519", command)  # type: ignore[attr-defined]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {command!r} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        return proc


def sendfleet(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*SENDFLEET, *args], capture_output=True, text=True, cwd=REPO, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"sendfleet {' '.join(args)} exited {proc.returncode}: {proc.stderr}{proc.stdout}")
    return proc


@pytest.fixture(scope="session")
def lab() -> Iterator[LabHandle]:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (they boot systemd-nspawn hosts)")
    from sendfleet.lab.config import DEFAULT_STATE_DIR
    from sendfleet.lab.lab import is_alive, running_config

    recorded = running_config(DEFAULT_STATE_DIR)
    already_up = recorded is not None and is_alive(recorded)
    try:
        sendfleet("lab", "up")
        cfg = running_config(DEFAULT_STATE_DIR)
        assert cfg is not None
        yield LabHandle(inventory_dir=cfg.inventory_dir, resolver=cfg.resolver, config=cfg)
    finally:
        if not already_up:
            sendfleet("lab", "down", check=False)


@pytest.fixture(scope="session")
def converged(lab: LabHandle) -> LabHandle:
    """The main job has run on the lab: vetted IPs admitted, assigned, site.yml converged."""
    proc = subprocess.run(["bash", str(REPO / "scripts/main-job.sh"), "--converge-only"], capture_output=True,
                          text=True, cwd=REPO, timeout=3000)
    if proc.returncode != 0:
        pytest.fail(f"main job failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    return lab
