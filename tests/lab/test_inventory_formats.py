"""The lab described as an INI inventory with its TSIG secret in ansible-vault is the same fleet to Ansible and to
sendfleet: `ansible-playbook site.yml -i hosts.ini` finds the converged lab converged (changed=0), and sendfleet
plans, gates and checks readiness exactly as from the lab's YAML inventory.

Needs the lab (the `converged` fixture). The vault password reaches the sendfleet commands that site.yml runs
(validate.yml, dns.yml, the sending_ips gate) through ANSIBLE_VAULT_PASSWORD_FILE, as documented in README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab.conftest import SENDFLEET, LabHandle
from tests.lab.helpers import REPO, recap, run_playbook

BIN = Path(sys.executable).parent


def _vault_string(password: Path, name: str, value: str) -> str:
    # the password file given once: with ANSIBLE_VAULT_PASSWORD_FILE set too, ansible-vault sees two "default"
    # vault ids and refuses to choose one to encrypt with
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_VAULT_PASSWORD_FILE"}
    proc = subprocess.run([str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file", str(password),
                           "--name", name, value], capture_output=True, text=True, check=True, timeout=120, env=env)
    return proc.stdout


def to_ini(lab_dir: Path, target: Path, password: Path) -> Path:
    """hosts.yml -> hosts.ini (groups, hosts, their inline variables); group_vars, host_vars, DKIM keys and DNS
    bookkeeping copied beside it (Ansible reads group_vars/host_vars next to an INI file); dns_tsig_secret vaulted."""
    hosts = yaml.safe_load((lab_dir / "hosts.yml").read_text())["all"]
    lines: list[str] = []
    if hosts.get("vars"):
        lines += ["[all:vars]", *(f"{k}={v}" for k, v in hosts["vars"].items()), ""]
    for group, spec in (hosts.get("children") or {}).items():
        lines.append(f"[{group}]")
        for host, host_vars in ((spec or {}).get("hosts") or {}).items():
            lines.append(" ".join([host, *(f"{k}={v}" for k, v in (host_vars or {}).items())]))
        lines.append("")
    target.mkdir(parents=True)
    ini = target / "hosts.ini"
    ini.write_text("\n".join(lines))
    for folder in ("group_vars", "host_vars", "dkim", ".sendfleet"):
        if (lab_dir / folder).exists():
            shutil.copytree(lab_dir / folder, target / folder)  # modes kept (keys 0600)
    dns_file = target / "group_vars/all/dns_update.yml"
    dns = yaml.safe_load(dns_file.read_text())
    secret = dns.pop("dns_tsig_secret")
    dns_file.write_text(yaml.safe_dump(dns, sort_keys=False) + _vault_string(password, "dns_tsig_secret", secret))
    assert secret not in dns_file.read_text()
    return ini


@pytest.fixture
def ini_lab(converged: LabHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(the lab's YAML inventory folder, the same lab as hosts.ini + vaulted secret); the vault password file is
    outside the inventory and named by ANSIBLE_VAULT_PASSWORD_FILE for every process started from here."""
    password = tmp_path / "vault-pass"
    password.write_text("lab vault password\n")
    password.chmod(0o600)
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(password))
    return converged.inventory_dir, to_ini(converged.inventory_dir, tmp_path / "ini", password)


def sendfleet_json(*args: str) -> tuple[int, Any]:
    proc = subprocess.run([*SENDFLEET, *args, "--format", "json"], capture_output=True, text=True, cwd=REPO,
                          timeout=1800, env=os.environ.copy())
    assert proc.stdout, f"sendfleet {' '.join(args)} ({proc.returncode}): {proc.stderr}"
    return proc.returncode, json.loads(proc.stdout)


def test_site_yml_finds_the_lab_converged_through_the_ini_inventory(ini_lab: tuple[Path, Path]) -> None:
    _, ini = ini_lab
    proc = run_playbook(ini, "site.yml")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    result = recap(proc.stdout)
    assert {"mta1", "mta2", "mta3"} <= set(result), result
    moved = {h: r for h, r in result.items() if r["changed"] or r["failed"] or r["unreachable"]}
    assert not moved, f"site.yml -i hosts.ini changed the converged lab: {moved}"


def _same(yaml_dir: Path, ini: Path, *command: str) -> Any:
    code_yaml, from_yaml = sendfleet_json(*command, "-i", str(yaml_dir))
    code_ini, from_ini = sendfleet_json(*command, "-i", str(ini))
    text = json.dumps(from_ini).replace(str(ini.parent), str(yaml_dir))
    assert (code_ini, json.loads(text)) == (code_yaml, from_yaml), command
    return from_yaml


def test_sendfleet_sees_the_same_fleet_in_both(ini_lab: tuple[Path, Path]) -> None:
    yaml_dir, ini = ini_lab
    plan = _same(yaml_dir, ini, "dns", "plan")
    assert any(r["purpose"] == "dkim" and r["error"] is None for r in plan["records"])
    gate = _same(yaml_dir, ini, "dns", "gate")
    assert gate and all(g["passed"] for g in gate)
    assert _same(yaml_dir, ini, "dns", "apply", "--dry-run")["changes"] == []  # the lab holds the plan
    _same(yaml_dir, ini, "pool", "list")


def _verdicts(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted((r["host"], r["ip"], r["pool"], r["domain"], r["verdict"],
                   tuple(sorted((name, None if c is None else c["ok"]) for name, c in r["checks"].items())))
                  for r in report["rows"])


def test_readiness_gives_the_same_verdicts_from_both(ini_lab: tuple[Path, Path]) -> None:
    yaml_dir, ini = ini_lab
    code_yaml, from_yaml = sendfleet_json("readiness", "-i", str(yaml_dir), "--host", "mta1")
    code_ini, from_ini = sendfleet_json("readiness", "-i", str(ini), "--host", "mta1")
    assert code_yaml == 0, from_yaml
    assert (code_ini, _verdicts(from_ini)) == (code_yaml, _verdicts(from_yaml))
