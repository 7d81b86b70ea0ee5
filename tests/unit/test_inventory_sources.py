"""The same fleet, described as Ansible allows (a YAML folder, an INI file, an inventory script, ansible-vault
encrypted values and DKIM key files, Jinja values), gives the same `sendfleet dns plan`, `pool list` and
`warmup plan`, and the same refusal of a bad variable, each naming where it is. Writes go to YAML files Ansible
reads, or are refused in one line with nothing written.

Runs ansible-core (the venv's) in-process and `ansible-vault` to encrypt; no network.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sendfleet.cli import main
from sendfleet.errors import InventoryError, UsageError
from sendfleet.inventory_io import (
    admission_file,
    load_inventory,
    read_dkim_keys,
    read_inventory_vars,
    writable_vars_file,
)

BIN = Path(sys.executable).parent
TSIG = base64.b64encode(b"a shared TSIG secret, 32 bytes!!").decode()
TODAY = "2026-12-01"

GLOBAL: dict[str, Any] = {
    "host_domain": "fleet.test",
    "pools": {"transactional": {}, "marketing": {"spf_domain": "_spf-m.fleet.test"}},
    "sender_domains": {
        "shop.test": {"pool": "transactional", "selectors": ["s2026a"]},
        "news.test": {"pool": "marketing", "selectors": ["s2026a"], "dmarc": {"p": "quarantine"}},
    },
    "app_networks": ["198.51.100.32/29"],
    "admin_networks": ["198.51.100.0/28"],
    "dns_zones": ["fleet.test", "shop.test", "news.test"],
    "dns_update_server": "127.0.0.1",
    "dns_tsig_key_name": "sendfleet",
    "vetted_ips": {
        "transactional": [{"ip": "198.51.100.70"}, {"ip": "198.51.100.71"}, {"ip": "198.51.100.72"}],
        "marketing": [{"ip": "198.51.100.80"}, {"ip": "198.51.100.81"}],
    },
}
JINJA = {"dns_ttl": "{{ 300 * 2 }}"}  # rendered by Ansible: 600
HOSTS: dict[str, dict[str, Any]] = {
    "mta1": {"ansible_host": "198.51.100.250", "sending_ips": [
        {"ip": "198.51.100.70", "pool": "transactional", "ptr": "o70.mta1.fleet.test", "warmup_start": "2026-11-20"},
        {"ip": "198.51.100.80", "pool": "marketing", "ptr": "o80.mta1.fleet.test", "weight": 2},
    ]},
    "mta2": {"ansible_host": "198.51.100.251", "sending_ips": [
        {"ip": "198.51.100.71", "pool": "transactional", "ptr": "o71.mta2.fleet.test", "warmup_start": "2026-11-25"},
    ]},
}


def _key(path: Path) -> bytes:
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    return pem


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("keys")
    return {d: _key(folder / f"{d}.pem") for d in ("shop.test", "news.test")}


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def _dkim(root: Path, keys: dict[str, bytes]) -> list[Path]:
    paths = []
    for domain, pem in keys.items():
        path = root / "dkim" / domain / "s2026a.pem"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pem)
        paths.append(path)
    return paths


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def yaml_fleet(root: Path, keys: dict[str, bytes], hosts: dict[str, dict[str, Any]] = HOSTS) -> Path:
    _write(root / "hosts.yml", _yaml({"all": {"vars": JINJA, "children": {"senders": {"hosts": {
        h: {"ansible_host": v["ansible_host"]} for h, v in hosts.items()}}}}}))
    _write(root / "group_vars/all/fleet.yml", _yaml({k: v for k, v in GLOBAL.items() if k != "vetted_ips"}))
    _write(root / "group_vars/all/dns_update.yml", _yaml({"dns_tsig_secret": TSIG}))
    _write(root / "group_vars/all/vetted_ips.yml", _yaml({"vetted_ips": GLOBAL["vetted_ips"]}))
    for host, hv in hosts.items():
        _write(root / f"host_vars/{host}.yml", _yaml({"sending_ips": hv["sending_ips"]}))
    _dkim(root, keys)
    return root


def ini_fleet(root: Path, keys: dict[str, bytes], hosts: dict[str, dict[str, Any]] = HOSTS) -> Path:
    """Hosts, their sending IPs (inline: Python literals) and the plain settings in hosts.ini; the structured
    settings in group_vars/all.yml beside it (Ansible reads group_vars next to any inventory file)."""
    lines = ["[senders]"]
    for host, hv in hosts.items():
        ips = json.dumps(hv["sending_ips"], separators=(",", ":"))
        lines.append(f"{host} ansible_host={hv['ansible_host']} sending_ips='{ips}'")
    lines += ["", "[all:vars]", f"dns_tsig_secret={TSIG}", *(f"{k}={v}" for k, v in JINJA.items())]
    lines += [f"{k}={GLOBAL[k]}" for k in ("host_domain", "dns_update_server", "dns_tsig_key_name")]
    _write(root / "hosts.ini", "\n".join(lines) + "\n")
    structured = {k: v for k, v in GLOBAL.items() if not isinstance(v, str)}
    _write(root / "group_vars/all.yml", _yaml(structured))
    _dkim(root, keys)
    return root / "hosts.ini"


SCRIPT = """#!{python}
import json, sys
DATA = {data}
if sys.argv[1:] == ["--list"]:
    print(json.dumps(DATA))
else:
    print(json.dumps(DATA["_meta"]["hostvars"].get(sys.argv[-1], {{}})))
"""


def script_fleet(root: Path, keys: dict[str, bytes], hosts: dict[str, dict[str, Any]] = HOSTS) -> Path:
    """A dynamic inventory script (as NetBox or a cloud would give): everything comes from its JSON."""
    data = {"all": {"vars": {**GLOBAL, **JINJA, "dns_tsig_secret": TSIG}},
            "senders": {"hosts": list(hosts)},
            "_meta": {"hostvars": hosts}}
    script = _write(root / "hosts.py", SCRIPT.format(python=sys.executable, data=repr(data)), 0o755)
    _dkim(root, keys)
    return script


def _vault(password: Path, *args: str) -> str:
    proc = subprocess.run([str(BIN / "ansible-vault"), *args, "--vault-password-file", str(password)],
                          capture_output=True, text=True, check=True, env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    return proc.stdout


def vault_fleet(root: Path, keys: dict[str, bytes], password: Path) -> Path:
    """The YAML fleet with its secrets in ansible-vault: the TSIG secret inline (encrypt_string), vetted_ips.yml and
    the DKIM keys encrypted whole (ansible-vault encrypt)."""
    yaml_fleet(root, keys)
    secret = _vault(password, "encrypt_string", TSIG, "--name", "dns_tsig_secret")
    _write(root / "group_vars/all/dns_update.yml", secret)
    _vault(password, "encrypt", str(root / "group_vars/all/vetted_ips.yml"))
    for path in (root / "dkim").rglob("*.pem"):
        _vault(password, "encrypt", str(path))
    return root


@pytest.fixture(scope="module")
def password(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("vault") / "pass", "correct horse battery staple\n", 0o600)


@pytest.fixture(scope="module")
def fleets(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, bytes], password: Path) -> dict[str, list[str]]:
    """form -> sendfleet arguments naming that inventory."""
    root = tmp_path_factory.mktemp("fleets")
    return {
        "yaml": ["-i", str(yaml_fleet(root / "yaml", keys))],
        "ini": ["-i", str(ini_fleet(root / "ini", keys))],
        "script": ["-i", str(script_fleet(root / "script", keys))],
        "vault": ["-i", str(vault_fleet(root / "vault", keys, password)), "--vault-password-file", str(password)],
    }


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def normalized(text: str, inventory_args: list[str]) -> Any:
    source = Path(inventory_args[1])
    folder = source if source.is_dir() else source.parent
    return json.loads(text.replace(str(folder), "<inventory>"))


COMMANDS = [
    ("dns", "plan", "--format", "json"),
    ("pool", "list", "--format", "json"),
    ("warmup", "plan", "--format", "json", "--today", TODAY, "--days", "3"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_form_gives_the_same_result(capsys: pytest.CaptureFixture[str], fleets: dict[str, list[str]],
                                          command: tuple[str, ...]) -> None:
    results = {}
    for form, inventory in fleets.items():
        code, out, err = run(capsys, *command, *inventory)
        assert code == 0, f"{form}: {err}"
        results[form] = normalized(out, inventory)
    for form in ("ini", "script", "vault"):
        assert results[form] == results["yaml"], form
    if command[0] == "dns":  # the plan is a real one: Jinja rendered, vaulted keys read
        records = results["yaml"]["records"]
        assert {r["ttl"] for r in records} == {600}
        dkim = [r for r in records if r["purpose"] == "dkim"]
        assert len(dkim) == 2 and all(r["error"] is None and r["values"][0].startswith("v=DKIM1") for r in dkim)
    if command[0] == "pool":
        assert {(r["ip"], r["host"]) for r in results["yaml"]} >= {("198.51.100.80", "mta1"), ("198.51.100.72", None)}


def test_the_model_is_the_same_from_every_form(fleets: dict[str, list[str]], password: Path,
                                               keys: dict[str, bytes]) -> None:
    models = {}
    for form, args in fleets.items():
        inv = load_inventory(args[1], vault_password_files=[str(password)] if form == "vault" else ())
        assert inv.dns_ttl == 600 and inv.dns_update is not None and inv.dns_update.key is not None
        assert inv.dns_update.key.secret == TSIG  # decrypted from the vault in the vault form
        assert read_dkim_keys(inv) == {(d, "s2026a"): pem for d, pem in keys.items()}
        ips = [(s.ip, s.pool, s.ptr, s.host, s.helo, s.warmup_start, s.weight) for s in inv.sending_ips()]
        models[form] = (ips, inv.pools, inv.sender_domains, inv.vetted_ips, inv.admin_networks,
                        {h.name: h.groups for h in inv.hosts.values()})
    for form, model in models.items():
        assert model == models["yaml"], form


def test_vaulted_values_without_the_secret_are_refused(fleets: dict[str, list[str]], tmp_path: Path,
                                                      keys: dict[str, bytes], password: Path) -> None:
    inline_only = yaml_fleet(tmp_path / "inline", keys)
    _write(inline_only / "group_vars/all/dns_update.yml",
           _vault(password, "encrypt_string", TSIG, "--name", "dns_tsig_secret"))
    with pytest.raises(UsageError) as err:
        load_inventory(inline_only)
    assert str(err.value).startswith("group_vars/all/dns_update.yml: dns_tsig_secret: encrypted with ansible-vault")
    # a whole vaulted file cannot even be read: Ansible refuses it, naming it
    with pytest.raises(UsageError, match=r"group_vars/all/vetted_ips\.yml"):
        load_inventory(fleets["vault"][1])
    # a vaulted DKIM key without the secret: refused by name, never read as PEM
    plain_vars = yaml_fleet(tmp_path / "keys-only", keys)
    _vault(password, "encrypt", str(plain_vars / "dkim/shop.test/s2026a.pem"))
    with pytest.raises(UsageError, match=r"dkim/shop.test/s2026a.pem: encrypted with ansible-vault"):
        read_dkim_keys(load_inventory(plain_vars))


def _bad_pool(hosts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    bad = json.loads(json.dumps(hosts))
    bad["mta1"]["sending_ips"][0]["pool"] = "bulk"
    return bad


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_bad_variable_is_refused_alike_naming_its_source(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           keys: dict[str, bytes], command: tuple[str, ...]) -> None:
    bad = _bad_pool(HOSTS)
    sources = {
        "host_vars/mta1.yml": yaml_fleet(tmp_path / "yaml", keys, bad),
        "hosts.ini (host mta1)": ini_fleet(tmp_path / "ini", keys, bad),
        "inventory script hosts.py (host mta1)": script_fleet(tmp_path / "script", keys, bad),
    }
    refusals = set()
    for where, inventory in sources.items():
        code, out, err = run(capsys, *command, "-i", str(inventory))
        # one line of sendfleet's (Ansible may warn above it, e.g. of DKIM keys when no ansible.cfg ignores dkim/)
        ours = [line for line in err.splitlines() if line.startswith("sendfleet:")]
        assert code == 2 and out == "" and len(ours) == 1 and err.endswith(ours[0] + "\n"), (where, err)
        assert ours[0].startswith(f"sendfleet: {where}: sending_ips[0].pool: unknown pool 'bulk'"), err
        refusals.add(ours[0].removeprefix(f"sendfleet: {where}: "))
    assert len(refusals) == 1, refusals


def test_jinja_values_are_rendered_as_a_play_sees_them(tmp_path: Path, keys: dict[str, bytes]) -> None:
    root = yaml_fleet(tmp_path, keys)
    _write(root / "group_vars/all/jinja.yml", _yaml({
        "dns_ttl": "{{ base_ttl * 2 }}", "base_ttl": 450,
        "dns_zones": "{{ ['fleet.test'] + sender_domains | list }}",
    }))
    _write(root / "group_vars/senders.yml", _yaml({"sendfleet_role": "sender of {{ host_domain }}"}))
    inv = load_inventory(root)
    assert inv.dns_ttl == 900 and inv.dns_zones == ("fleet.test", "shop.test", "news.test")
    assert inv.hosts["mta1"].vars["sendfleet_role"] == "sender of fleet.test"
    # a value only a host can have (its name) is an error where sendfleet needs it globally, naming file and key
    _write(root / "group_vars/all/jinja.yml", _yaml({"dns_ttl": "{{ undefined_ttl }}"}))
    with pytest.raises(UsageError) as err:
        load_inventory(root)
    assert str(err.value).startswith("group_vars/all/jinja.yml: dns_ttl: Ansible cannot evaluate it")
    assert "undefined_ttl" in str(err.value)


def test_several_sources_and_the_default_inventory(tmp_path: Path, keys: dict[str, bytes],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`-i hosts.ini -i vars/` as for ansible-playbook; without -i, ANSIBLE_INVENTORY (ansible.cfg's `inventory`)."""
    ini = ini_fleet(tmp_path / "ini", keys)
    vars_dir = tmp_path / "vars"
    structured = (ini.parent / "group_vars/all.yml")
    _write(vars_dir / "group_vars/all.yml", structured.read_text())
    structured.unlink()
    code, out, err = run(capsys, "dns", "plan", "-i", str(ini), "--format", "json")
    assert code == 2 and "unknown pool 'transactional'" in err, err  # the pools are in vars/ only
    code, out, err = run(capsys, "dns", "plan", "-i", str(ini), "-i", str(vars_dir), "--format", "json")
    assert code == 0, err
    plan = json.loads(out)
    env = {**os.environ, "ANSIBLE_INVENTORY": f"{ini},{vars_dir}", "ANSIBLE_CONFIG": str(tmp_path / "none.cfg")}
    proc = subprocess.run([sys.executable, "-m", "sendfleet", "dns", "plan", "--format", "json"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == plan


# ------------------------------------------------------------------------------------------------ writes


def test_pool_assign_writes_host_vars_ansible_reads(tmp_path: Path, keys: dict[str, bytes],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    hosts = {**HOSTS, "mta3": {"ansible_host": "198.51.100.252", "sending_ips": []}}
    ini = ini_fleet(tmp_path, keys, hosts)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    # an INI file is no place for sendfleet's writes: one line, nothing written
    code, out, err = run(capsys, "pool", "assign", "-i", str(ini), "--hosts", "mta3", "--per-host", "1")
    assert code == 2 and err.startswith("sendfleet: ") and err.count("\n") == 1 and "sendfleet_vars_dir" in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    # wired: the INI file's own folder, whose host_vars Ansible reads
    ini.write_text(ini.read_text() + "sendfleet_vars_dir=.\n")
    code, out, err = run(capsys, "pool", "assign", "-i", str(ini), "--hosts", "mta3", "--per-host", "1")
    assert code == 2 and "hosts.ini (host mta3): sending_ips:" in err, err  # Ansible takes it from hosts.ini
    ini.write_text(ini.read_text().replace(" sending_ips='[]'", ""))
    code, out, err = run(capsys, "pool", "assign", "-i", str(ini), "--hosts", "mta3", "--per-host", "1")
    assert code == 0 and "mta3: 198.51.100.72 -> pool transactional" in out, err
    written = yaml.safe_load((tmp_path / "host_vars/mta3.yml").read_text())["sending_ips"]
    assert {e["pool"] for e in written} == {"transactional", "marketing"}
    inv = load_inventory(ini)
    assert [str(s.ip) for s in inv.hosts["mta3"].sending_ips] == [e["ip"] for e in written]
    assert inv.hosts["mta3"].sending_ips[0].source == "host_vars/mta3.yml"


def test_a_vars_dir_ansible_does_not_read_is_refused(tmp_path: Path, keys: dict[str, bytes],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    ini = ini_fleet(tmp_path / "inv", keys, {**HOSTS, "mta3": {"ansible_host": "198.51.100.252", "sending_ips": []}})
    ini.write_text(ini.read_text().replace(" sending_ips='[]'", "") + f"sendfleet_vars_dir={tmp_path / 'elsewhere'}\n")
    code, _, err = run(capsys, "pool", "assign", "-i", str(ini), "--hosts", "mta3")
    assert code == 2 and "sendfleet_vars_dir: Ansible does not read" in err, err
    assert not (tmp_path / "elsewhere").exists()
    # given as a second source, Ansible reads it: the write goes there and is seen
    (tmp_path / "elsewhere").mkdir()
    code, _, err = run(capsys, "pool", "assign", "-i", str(ini), "-i", str(tmp_path / "elsewhere"), "--hosts", "mta3")
    assert code == 0, err
    inv = load_inventory([ini, tmp_path / "elsewhere"])
    assert len(inv.hosts["mta3"].sending_ips) == 2
    assert (tmp_path / "elsewhere/host_vars/mta3.yml").is_file()


def test_the_vetted_ips_file_is_found_even_in_an_inventory_the_rules_refuse(tmp_path: Path,
                                                                          keys: dict[str, bytes]) -> None:
    """`vet --admit` writes where Ansible reads vetted_ips, also while a sending IP still waits for its vetting."""
    hosts = json.loads(json.dumps(HOSTS))
    hosts["mta2"]["sending_ips"].append({"ip": "198.51.100.90", "pool": "marketing", "ptr": "o90.mta2.fleet.test"})
    root = yaml_fleet(tmp_path / "yaml", keys, hosts)
    with pytest.raises(InventoryError, match=r"198\.51\.100\.90 is not in vetted_ips\[marketing\]"):
        load_inventory(root)
    target = writable_vars_file(read_inventory_vars(root), "vetted_ips")
    assert target.resolve() == (root / "group_vars/all/vetted_ips.yml").resolve()
    ini = ini_fleet(tmp_path / "ini", keys)
    with pytest.raises(UsageError, match="not an inventory folder: set sendfleet_vars_dir"):
        writable_vars_file(read_inventory_vars(ini), "vetted_ips")
    ini.write_text(ini.read_text() + "sendfleet_vars_dir=.\n")
    with pytest.raises(UsageError) as err:  # Ansible takes vetted_ips from group_vars/all.yml
        writable_vars_file(read_inventory_vars(ini), "vetted_ips")
    assert str(err.value).startswith("group_vars/all.yml: vetted_ips: sendfleet writes vetted_ips to ")



def test_admission_into_an_ini_inventory(tmp_path: Path, keys: dict[str, bytes]) -> None:
    """`vet --admit hosts.ini`: the pool must be one of the inventory's; vetted_ips goes to the variables folder."""
    ini = ini_fleet(tmp_path, keys)
    vetted = tmp_path / "group_vars/all.yml"
    vetted.write_text(_yaml({k: v for k, v in GLOBAL.items() if not isinstance(v, str) and k != "vetted_ips"}))
    ini.write_text(ini.read_text() + "sendfleet_vars_dir=.\n")
    with pytest.raises(UsageError, match=r"--pool bulk: not a pool of group_vars/all\.yml \(known: marketing, transac"):
        admission_file(ini, "bulk")
    assert admission_file(ini, "marketing").resolve() == (tmp_path / "group_vars/all/vetted_ips.yml").resolve()
