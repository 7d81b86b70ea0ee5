"""site.yml under ansible-runner, the engine AWX runs jobs with (docs/awx.md): a private data dir in a temporary
directory (env/settings, env/envvars; the project is the repository, the inventory the lab's), `ansible-runner run
... -p site.yml` twice on the converged lab, and the verdict read from the artifacts AWX reads too: `status`, `rc`
and the stats of the `playbook_on_stats` job event. The second run changes nothing on any host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.conftest import REPO, LabHandle
from tests.lab.helpers import load_yaml

pytestmark = pytest.mark.lab

BIN = Path(sys.executable).parent
STATS = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored", "processed")


def private_data_dir(root: Path) -> Path:
    """env/settings and env/envvars as AWX writes them for a job; no project/ and inventory/ (given on the command
    line: the repository and the lab inventory, so inventory_dir is the real one with its DKIM keys)."""
    private = root / "runner"
    (private / "env").mkdir(parents=True)
    (private / "env/settings").write_text(yaml.safe_dump({"job_timeout": 3000, "idle_timeout": 1200,
                                                          "suppress_ansible_output": True}))
    (private / "env/envvars").write_text(yaml.safe_dump({"ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}))
    return private


def runner_site(private: Path, inventory: Path, ident: str) -> tuple[Path, dict[str, dict[str, int]]]:
    """`ansible-runner run PRIVATE -p site.yml`; the run's artifact directory and its playbook_on_stats."""
    # ansible-runner starts the ansible-playbook it finds on PATH: the venv's, whose Python has the sendfleet package
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(BIN / "ansible-runner"), "run", str(private), "-p", "site.yml", "--project-dir",
                           str(REPO), "--inventory", str(inventory), "--ident", ident],
                          capture_output=True, text=True, env=env, timeout=3600, check=False)
    artifacts = private / "artifacts" / ident
    assert artifacts.is_dir(), f"ansible-runner wrote no artifacts ({proc.returncode}): {proc.stderr[-3000:]}"
    events = [json.loads(p.read_text()) for p in sorted((artifacts / "job_events").glob("*.json"))]
    stats = [e for e in events if e.get("event") == "playbook_on_stats"]
    assert len(stats) == 1, f"{ident}: {len(stats)} playbook_on_stats events of {len(events)}"
    data: dict[str, Any] = stats[0]["event_data"]
    return artifacts, {key: dict(data.get(key) or {}) for key in STATS}


def stdout_tail(artifacts: Path) -> str:
    path = artifacts / "stdout"
    return path.read_text()[-6000:] if path.exists() else "(no stdout artifact)"


def test_site_under_ansible_runner_is_idempotent(converged: LabHandle, tmp_path: Path) -> None:
    inventory = converged.inventory_dir
    senders = set((load_yaml(inventory / "hosts.yml") or {})["all"]["children"]["senders"]["hosts"])
    private = private_data_dir(tmp_path)

    for ident in ("first", "second"):
        artifacts, stats = runner_site(private, inventory, ident)
        assert (artifacts / "status").read_text().strip() == "successful", stdout_tail(artifacts)
        assert (artifacts / "rc").read_text().strip() == "0", stdout_tail(artifacts)
        assert stats["failures"] == {} and stats["dark"] == {}, stats
        # every sender was converged (and localhost published DNS)
        assert senders <= set(stats["processed"]), stats["processed"]
        assert all(stats["ok"].get(host, 0) > 0 for host in senders), stats["ok"]

    changed = {host: n for host, n in stats["changed"].items() if n}
    assert changed == {}, f"second ansible-runner run of site.yml changed: {changed}\n{stdout_tail(artifacts)}"
