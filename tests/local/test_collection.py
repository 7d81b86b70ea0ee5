"""The repository builds as the Ansible collection sendfleet_io.sendfleet (galaxy.yml), and the built collection
works on its own: installed into a temporary collections path, used from a playbook in a temporary directory with an
ansible.cfg that names nothing of the repository (no roles_path, no filter_plugins).

Needs ansible-galaxy/ansible-playbook (the venv) and the sendfleet package installed for their Python (the
collection's requirement), no lab and no network: the example inventory's hosts are never contacted (the plays
validate on the controller and generate DKIM keys on the controller).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NAMESPACE, NAME = "sendfleet_io", "sendfleet"
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks/main.yml").is_file())
#: top-level paths that are repository tooling, not collection content
NOT_CONTENT = ("tests/", "bench/", "inventories/", "scripts/", ".venv/", ".git/", "collections", ".ci/",
               "playbooks/collections", "pyproject.toml", "ansible.cfg", "site.yml", "execution-environment.yml",
               "bindep.txt")


def clean_env(config: Path) -> dict[str, str]:
    """The environment of an Ansible run that sees only ``config`` (no ANSIBLE_* of the caller)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return {**env, "ANSIBLE_CONFIG": str(config), "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(config.parent / "tmp"), "ANSIBLE_HOME": str(config.parent / "home")}


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def build_collection(out: Path) -> Path:
    """`ansible-galaxy collection build` of the repository into ``out``: the tarball."""
    proc = run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out)], cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob(f"{NAMESPACE}-{NAME}-*.tar.gz")
    return built


def install_collection(home: Path, tarball: Path, defaults: str = "", sections: str = "") -> Path:
    """A user's directory outside the repository: ``home/ansible.cfg`` naming only ``home/collections`` (plus the
    given [defaults] lines and further sections), and the collection installed there by ansible-galaxy. The
    ansible.cfg."""
    assert not home.is_relative_to(REPO)
    config = home / "ansible.cfg"
    config.write_text(f"[defaults]\ncollections_path = {home / 'collections'}\nretry_files_enabled = False\n"
                      f"{defaults}\n{sections}")
    text = config.read_text()
    assert not re.search(r"roles_path|_plugins\s*=", text), text
    assert not any(str(REPO / d) in text for d in ("roles", "plugins", "collections", "playbooks")), text
    proc = run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", "-p", str(home / "collections"),
                str(tarball)], cwd=home, env=clean_env(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (home / f"collections/ansible_collections/{NAMESPACE}/{NAME}/roles/postfix/tasks/main.yml").is_file()
    return config


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_collection(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory, tarball: Path) -> Path:
    """A user's directory with the collection installed and a copy of the example inventory."""
    home = tmp_path_factory.mktemp("user")
    install_collection(home, tarball, f"host_key_checking = False\ninterpreter_python = {sys.executable}\n")
    inventory = home / "inventory"
    for src in (REPO / "inventories/example").rglob("*.yml"):
        dest = inventory / src.relative_to(REPO / "inventories/example")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(src.read_text())
    return home


def playbook(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "ansible-playbook"), "-i", str(home / "inventory"), *args], cwd=home,
               env=clean_env(home / "ansible.cfg"))


def recap(output: str) -> dict[str, dict[str, int]]:
    stats = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        stats[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return stats


def test_version_is_the_package_version(tarball: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert (galaxy["namespace"], galaxy["name"]) == (NAMESPACE, NAME)
    assert galaxy["version"] == project["version"]
    with tarfile.open(tarball) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    assert manifest["collection_info"]["version"] == project["version"]


def test_tarball_holds_the_collection_and_nothing_else(tarball: Path) -> None:
    with tarfile.open(tarball) as tar:
        names = {m.name + ("/" if m.isdir() else "") for m in tar.getmembers()}
    stray = sorted(n for n in names if n.startswith(NOT_CONTENT) or "__pycache__" in n or n.endswith(".pyc"))
    assert not stray, f"not collection content in the tarball: {stray}"
    expected = {"meta/runtime.yml", "playbooks/site.yml", "playbooks/files/dkim_published.py",
                *(f"roles/{role}/tasks/main.yml" for role in ROLES),
                *(f"plugins/filter/{p.name}" for p in (REPO / "plugins/filter").glob("*.py")),
                *(f"plugins/strategy/{p.name}" for p in (REPO / "plugins/strategy").glob("*.py")),
                *(f"playbooks/{p.name}" for p in (REPO / "playbooks").glob("*.yml"))}
    assert expected <= names, f"missing from the tarball: {sorted(expected - names)}"


def test_roles_reach_nowhere_outside_themselves_and_call_filters_by_full_name(tarball: Path) -> None:
    """A role from the collection has no repository around it: no role_path/.. (code or zones of the
    repository), and the sf_* filters only resolve by their full names (in roles and playbooks alike)."""
    with tarfile.open(tarball) as tar:
        texts = {m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                 for m in tar.getmembers() if m.isfile() and m.name.startswith(("roles/", "playbooks/"))
                 and m.name.endswith((".yml", ".j2"))}
    outside = [n for n, t in texts.items() if "role_path" in t or "/../" in t]
    assert not outside, f"roles reaching outside themselves: {outside}"
    names = _filter_names()
    short = [(n, m) for n, t in texts.items() for m in re.findall(r"(?<![\w.])(sf_\w+)", t) if m in names]
    assert not short, f"filters called by their short names (unresolvable from the collection): {short}"


def _filter_names() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "plugins/filter").glob("*.py"):
        names |= set(re.findall(r'"(sf_\w+)":', path.read_text()))
    assert names
    return names


def test_user_playbook_uses_roles_from_the_collection(user: Path) -> None:
    """Every role's validate entry point, the opendkim role's controller keys and the postfix role's
    filter-computed transports, from a playbook that knows the roles only by their collection names."""
    validating = [r for r in ROLES if (REPO / "roles" / r / "tasks/validate.yml").is_file()]
    assert validating
    keys = user / "dkim"
    (user / "play.yml").write_text(yaml.safe_dump([
        {"name": "Validate with every role of the collection", "hosts": "senders", "gather_facts": False,
         "tasks": [{"name": "Validate", "ansible.builtin.include_role": {
             "name": f"{NAMESPACE}.{NAME}.{{{{ sendfleet_role }}}}", "tasks_from": "validate"},
             "loop": validating, "loop_control": {"loop_var": "sendfleet_role"}}]},
        {"name": "DKIM keys on the controller", "hosts": "senders", "gather_facts": False,
         "tasks": [{"name": "Keys", "ansible.builtin.include_role": {
             "name": f"{NAMESPACE}.{NAME}.opendkim", "tasks_from": "keys"}, "vars": {"dkim_keys_dir": str(keys)}}]},
        {"name": "Postfix transports", "hosts": "mta1.example.net", "gather_facts": False,
         "vars": {"sending_ips_in_service": "{{ sending_ips }}"},
         "tasks": [
             {"name": "Postfix vars", "ansible.builtin.include_role": {
                 "name": f"{NAMESPACE}.{NAME}.postfix", "tasks_from": "validate", "public": True}},
             {"name": "Write what the filters computed", "ansible.builtin.copy": {
                 "content": "{{ {'transports': postfix_transports, 'maps': postfix_sender_dependent_maps,"
                            " 'mynetworks': postfix_main_cf_computed.mynetworks} | to_json }}",
                 "dest": str(user / "postfix.json"), "mode": "0644"}, "delegate_to": "localhost"}]},
    ], sort_keys=False))
    first = playbook(user, "play.yml")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    assert set(recap(first.stdout)) == {"mta1.example.net", "mta2.example.net"}
    pems = sorted(str(p.relative_to(keys)) for p in keys.rglob("*.pem"))
    assert pems == ["example.com/e2026a.pem", "example.com/s2026a.pem", "news.example.com/s2026a.pem"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in keys.rglob("*.pem"))
    assert "PRIVATE KEY" in (keys / "example.com/s2026a.pem").read_text()
    computed = json.loads((user / "postfix.json").read_text())
    assert computed["transports"] == ["sf_198_51_100_70", "sf_198_51_100_72", "sf_198_51_100_80"]
    assert any("sf_198_51_100_80" in m and "marketing" in m for m in computed["maps"]), computed["maps"]
    assert computed["mynetworks"] == ["127.0.0.0/8", "[::1]/128", "198.51.100.32/29"]
    # the keys exist now: a second run generates none and changes nothing
    before = {p: p.read_bytes() for p in keys.rglob("*.pem")}
    second = playbook(user, "play.yml")
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert all(s["changed"] == 0 for s in recap(second.stdout).values()), second.stdout[-4000:]
    assert {p: p.read_bytes() for p in keys.rglob("*.pem")} == before


def test_collection_playbooks_run_by_their_collection_names(user: Path) -> None:
    """`ansible-playbook sendfleet_io.sendfleet.validate` checks the inventory with the collection's own roles
    (every role's validate entry point) and the sendfleet package; every playbook parses by its collection name."""
    proc = playbook(user, f"{NAMESPACE}.{NAME}.validate")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    stats = recap(proc.stdout)
    assert set(stats) == {"mta1.example.net", "mta2.example.net"}
    assert all(s["failed"] == 0 and s["ok"] > 0 for s in stats.values())
    assert "collections/ansible_collections/sendfleet_io/sendfleet/roles/" in playbook(
        user, f"{NAMESPACE}.{NAME}.validate", "-vv").stdout
    # every playbook by its collection name (a hyphen cannot be addressed: rotate-dkim is rotate_dkim there)
    names = sorted({p.stem.replace("-", "_") for p in (REPO / "playbooks").glob("*.yml")})
    assert {"site", "dns", "senders", "monitor", "validate", "rotate_dkim"} <= set(names)
    for name in names:
        syntax = playbook(user, f"{NAMESPACE}.{NAME}.{name}", "--syntax-check")
        assert syntax.returncode == 0, name + syntax.stdout + syntax.stderr


def test_a_bad_inventory_is_refused_by_the_collection_playbook(user: Path, tmp_path: Path) -> None:
    """The collection's validate playbook is the real check, not a pass-through: a sender domain naming an unknown
    pool stops it with the problem named."""
    pools = user / "inventory/group_vars/all/pools.yml"
    bad = tmp_path / "inventory"
    for src in (user / "inventory").rglob("*.yml"):
        dest = bad / src.relative_to(user / "inventory")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(src.read_text())
    text = pools.read_text()
    assert "pool: marketing" in text
    (bad / "group_vars/all/pools.yml").write_text(text.replace("pool: marketing", "pool: nosuchpool"))
    proc = run([str(BIN / "ansible-playbook"), "-i", str(bad), f"{NAMESPACE}.{NAME}.validate"], cwd=user,
               env=clean_env(user / "ansible.cfg"))
    assert proc.returncode != 0
    assert "nosuchpool" in proc.stdout


def test_dnsbl_monitor_controller_commands_need_only_the_installed_package(user: Path, tmp_path: Path) -> None:
    """The dnsbl_monitor role's two controller commands (the wheel for the senders, the zones files shipped in the
    package), as the installed collection has them, run from outside the repository with no PYTHONPATH: the wheel
    carries the package's zones, and the `lab`/`public` names resolve to the package's files."""
    role = user / f"collections/ansible_collections/{NAMESPACE}/{NAME}/roles/dnsbl_monitor"
    tasks = {t["name"]: t for t in yaml.safe_load((role / "tasks/main.yml").read_text())}
    argvs = {name: t["ansible.builtin.command"]["argv"] for name, t in tasks.items()
             if "ansible.builtin.command" in t and "delegate_to" in t}
    assert len(argvs) == 2, sorted(argvs)
    assert not any("environment" in tasks[name] for name in argvs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def controller(argv: list[str], *extra: str) -> str:
        """The task's argv with ansible-playbook's Python, its templated last argument (if any) replaced by extra."""
        real = [sys.executable if a == "{{ ansible_playbook_python }}" else a for a in argv]
        if "{{" in real[-1]:
            real = real[:-1]
        assert not any("{{" in a for a in real), real
        proc = run([*real, *extra], cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    wheel_task = next(n for n in argvs if "wheel" in n)
    wheel = Path(controller(argvs[wheel_task], str(tmp_path / "build")))
    zones_dir = Path(controller(argvs[next(n for n in argvs if n != wheel_task)]))
    assert sorted(p.name for p in zones_dir.glob("*.yml")) == ["lab.yml", "public.yml"]
    assert not zones_dir.is_relative_to(user)
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("sendfleet/zones/public.yml") == (zones_dir / "public.yml").read_bytes()


def test_repository_playbooks_find_the_collection_names_without_ansible_cfg(tmp_path: Path) -> None:
    """In the repository the roles' full filter names resolve through playbooks/collections (and collections/ beside
    site.yml), links to the repository, even when the environment replaces ansible.cfg's collections_path (as AWX
    does with ANSIBLE_COLLECTIONS_PATH). validate.yml contacts no host: every role's validate entry point."""
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "elsewhere"), "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")}
    proc = run([str(BIN / "ansible-playbook"), "-i", str(REPO / "inventories/example"), "playbooks/validate.yml"],
               cwd=REPO, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    stats = recap(proc.stdout)
    assert set(stats) == {"mta1.example.net", "mta2.example.net"}
    assert all(s["failed"] == 0 and s["unreachable"] == 0 and s["ok"] > 5 for s in stats.values()), stats
    for link in ("collections", "playbooks/collections"):
        assert (REPO / link / "ansible_collections" / NAMESPACE / NAME).resolve() == REPO, link
