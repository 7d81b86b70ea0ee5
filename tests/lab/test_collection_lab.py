"""The built collection converges a real sender exactly as the repository does: on the converged lab, a user's
playbook outside the repository applies the roles of sendfleet_io.sendfleet (installed from the tarball into a
temporary collections path, with an ansible.cfg that names nothing of the repository) to one sender, in the order
of playbooks/senders.yml and then the monitor, and changes nothing: the collection's roles, filters (by their full
names) and controller commands (the sendfleet package, not the repository's scripts/) produce byte for byte the
configuration that site.yml wrote.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.lab.conftest import LabHandle
from tests.lab.helpers import changed_tasks, recap
from tests.local.test_collection import NAME, NAMESPACE, build_collection, clean_env, install_collection, run

pytestmark = pytest.mark.lab

ROLES = ["base", "sending_ips", "opendkim", "postfix"]
#: what the lab needs from a controller's ansible.cfg, none of it naming the repository
DEFAULTS = """host_key_checking = False
interpreter_python = python3
inject_facts_as_vars = False
forks = 10
"""
SECTIONS = """[ssh_connection]
pipelining = True

[inventory]
ignore_patterns = dkim, .ssh, .sendfleet
ignore_extensions = .pem, .png, .svg, .html, .json, .csv, .pub, .key, .md, ~, .orig, .bak, .cfg, .retry
"""


def test_roles_from_the_collection_leave_a_converged_sender_unchanged(converged: LabHandle, tmp_path: Path) -> None:
    inventory = converged.inventory_dir
    senders = yaml.safe_load((inventory / "hosts.yml").read_text())["all"]["children"]["senders"]["hosts"]
    host = sorted(senders)[0]
    home = tmp_path / "user"
    home.mkdir()
    config = install_collection(home, build_collection(tmp_path / "dist"), DEFAULTS, SECTIONS)
    (home / "sender.yml").write_text(yaml.safe_dump([
        {"name": "A sender from the collection's roles", "hosts": host,
         "gather_subset": ["min", "network", "virtual"],
         "roles": [{"role": f"{NAMESPACE}.{NAME}.{role}"} for role in ROLES]},
        {"name": "Its monitor", "hosts": host, "gather_subset": ["min", "network", "virtual"],
         "roles": [{"role": f"{NAMESPACE}.{NAME}.dnsbl_monitor"}]},
    ], sort_keys=False))
    # ansible-playbook of the machine's venv: its Python has the sendfleet package, the collection's requirement
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    env = {**clean_env(config), "PATH": path, "ANSIBLE_NOCOLOR": "1"}
    proc = run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), "sender.yml"],
               cwd=home, env=env)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    stats = recap(proc.stdout)
    assert set(stats) == {host}, stats
    assert stats[host]["ok"] > 20 and stats[host]["failed"] == 0 and stats[host]["unreachable"] == 0, stats
    # the roles can only come from the installed collection: the ansible.cfg names no roles path, the run is outside
    # the repository, and Ansible's home is the temporary one
    assert stats[host]["changed"] == 0, f"the collection's roles changed {host}: {changed_tasks(proc.stdout)}"
