"""Read an Ansible inventory through ansible-core itself into the `sendfleet.core.inventory.Inventory` model.

Every sendfleet command sees exactly the variables `ansible-playbook` sees: the inventory is parsed by Ansible's
`InventoryManager` (any source Ansible takes: a folder, a YAML or INI file, an inventory script, an inventory plugin
config such as `constructed` or a cloud/NetBox plugin, several `-i` at once), each host's variables are
`VariableManager.get_vars(host)` (group_vars/host_vars by Ansible's vars plugins, Ansible's precedence), Jinja
values are rendered by Ansible's templar and ansible-vault values are decrypted with the usual secrets
(`--vault-id`, `--vault-password-file`, `ANSIBLE_VAULT_PASSWORD_FILE`, `vault_identity_list` /
`vault_password_file` in ansible.cfg).

    from sendfleet.inventory_io import load_inventory
    inv = load_inventory()                                   # the inventory of ansible.cfg / ANSIBLE_INVENTORY
    inv = load_inventory([Path("hosts.ini"), Path("vars")], vault_password_files=["~/.vault-pass"])
    for sip in inv.sending_ips(): ...

Which inventory: the `-i` sources (repeatable, as for ansible-playbook), else Ansible's default (`inventory` in
ansible.cfg, `ANSIBLE_INVENTORY`). A source that Ansible cannot parse at all is refused (ansible-playbook warns and
goes on with an empty inventory); a file inside a folder source that no plugin takes is a warning, as in Ansible
(ansible.cfg's `[inventory] ignore_patterns` keeps DKIM keys and such out of the parsing: run sendfleet where
ansible-playbook finds the same ansible.cfg, or set ANSIBLE_CONFIG). `Inventory.path` is the folder of the
first source (the folder itself, or the folder of an inventory file): DKIM keys (`dkim_keys_dir`), DNS bookkeeping
and other relative paths are taken from there.

Global variables (`Inventory.vars`, what the pools, sender domains, DNS and vetting settings are read from) are the
variables of the group `all`: its inventory vars and its group_vars (`all:vars`, `group_vars/all...`), merged as
Ansible merges them and rendered with those variables and Ansible's magic variables (`groups`, `playbook_dir`...).
Every host sees them unless a group or host of its own overrides them; host rules (`sending_ips`, `host_domain`...)
are read from what each host sees. A value that cannot be evaluated on the controller (a Jinja expression naming
facts or host variables in `all`, a vault value without its secret) is an error only where sendfleet needs it.

Messages name the file and key: a key is attributed to the group_vars/host_vars file that defines the value Ansible
chose, or to the inventory source (`hosts.yml (all.vars)`, `hosts.ini (host mta1)`, `inventory script hosts.py
(host mta1)`, `inventory plugin constructed (fleet.yml) (senders.vars)`).

Writes (`sendfleet vet --admit` into `group_vars/all/vetted_ips.yml`, `sendfleet pool assign` into
`host_vars/<host>.yml`) go to YAML files in the variables folder (`vars_dir`): the inventory variable
`sendfleet_vars_dir` when set (relative to `Inventory.path`), else the first source when it is a folder. For an INI
file, a script or a plugin config, set `sendfleet_vars_dir` to a folder whose group_vars/host_vars Ansible reads:
the folder of the inventory file itself (Ansible reads `group_vars/` next to any inventory source) or a folder given
as another `-i` (e.g. `-i hosts.ini -i vars/`, ansible.cfg `inventory = hosts.ini,vars`). A folder Ansible would not
read, or a variable that Ansible takes from somewhere else (e.g. `sending_ips` inline in an INI file), is refused in
one line before anything is written.

DKIM private keys (`dkim/<domain>/<selector>.pem`) may be ansible-vault encrypted files: `read_dkim_keys` decrypts
them with the inventory's vault secrets.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from sendfleet.core.inventory import HostSource, Inventory, Unresolved, VarSource, build_inventory, one_line
from sendfleet.errors import UsageError

VARS_DIR_KEY = "sendfleet_vars_dir"
VAULT_HELP = "(--vault-id, --vault-password-file, ANSIBLE_VAULT_PASSWORD_FILE)"


# ----------------------------------------------------------------------------------------------- CLI


def add_inventory_options(parser: argparse.ArgumentParser) -> None:
    """-i/--inventory (repeatable, optional: ansible.cfg's default), --vault-id, --vault-password-file."""
    parser.add_argument(
        "-i", "--inventory", action="append", metavar="INVENTORY",
        help="inventory source as for ansible-playbook: folder, YAML/INI file, script or plugin config "
        "(repeatable; default: ansible.cfg `inventory` / ANSIBLE_INVENTORY)",
    )
    parser.add_argument("--vault-id", action="append", default=[], metavar="ID",
                        help="vault identity to decrypt vaulted variables with (repeatable, as for ansible-playbook)")
    parser.add_argument("--vault-password-file", "--vault-pass-file", action="append", default=[],
                        metavar="FILE", help="vault password file (repeatable; also ANSIBLE_VAULT_PASSWORD_FILE)")


def inventory_from_args(args: argparse.Namespace) -> Inventory:
    """The inventory named by the options of `add_inventory_options`."""
    return load_inventory(
        args.inventory or None,
        vault_ids=getattr(args, "vault_id", ()) or (),
        vault_password_files=getattr(args, "vault_password_file", ()) or (),
    )


def inventory_label(args: argparse.Namespace) -> str:
    """The inventory as the user named it (for messages)."""
    return ",".join(args.inventory) if args.inventory else "the default inventory (ansible.cfg)"


# ------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class InventoryVars:
    """The variables as Ansible gives them, before sendfleet's rules, with the sources and vault secrets they
    were read with. Writers use it (`sendfleet vet --admit` must work on an inventory that the rules still refuse
    for IPs it has not vetted yet); `load_inventory` builds the model from it."""

    path: Path  # the folder of the first source
    sources: tuple[str, ...]  # absolute paths (or Ansible host lists "a,b")
    basedirs: tuple[Path, ...]  # the folders whose group_vars/host_vars Ansible reads
    secrets: tuple[Any, ...]  # (vault_id, VaultSecret) pairs
    global_vars: tuple[VarSource, ...]
    hosts: tuple[HostSource, ...]

    def value(self, key: str, host: str | None = None) -> Any:
        """The value of `key` for the group `all` (or for `host`); None when no source defines it."""
        source = self.source(key, host)
        return None if source is None else source.data[key]

    def source(self, key: str, host: str | None = None) -> VarSource | None:
        """The source whose value of `key` Ansible takes (the last defining it)."""
        layers = self.global_vars if host is None else next((h.vars for h in self.hosts if h.name == host), ())
        return next((src for src in reversed(layers) if key in src.data), None)


_LOADED: dict[int, InventoryVars] = {}


def load_inventory(
    sources: Path | str | Sequence[Path | str] | None = None,
    *,
    vault_ids: Sequence[str] = (),
    vault_password_files: Sequence[str] = (),
) -> Inventory:
    """Read and validate an inventory (Ansible's default when `sources` is None). UsageError names file and key;
    InventoryError lists every problem."""
    found = read_inventory_vars(sources, vault_ids=vault_ids, vault_password_files=vault_password_files)
    inventory = build_inventory(found.path, found.global_vars, found.hosts)
    _LOADED[id(inventory)] = found
    weakref.finalize(inventory, _LOADED.pop, id(inventory), None)
    return inventory


def read_inventory_vars(
    sources: Path | str | Sequence[Path | str] | None = None,
    *,
    vault_ids: Sequence[str] = (),
    vault_password_files: Sequence[str] = (),
) -> InventoryVars:
    """The inventory's variables as Ansible gives them, not yet checked against sendfleet's rules. A source that
    cannot be read is a UsageError naming it."""
    try:
        return _load(sources, vault_ids, vault_password_files)
    except UsageError as err:
        raise UsageError(one_line(str(err))) from None


def _source_list(sources: Path | str | Sequence[Path | str] | None) -> list[str]:
    """The sources as absolute paths (host lists as given); a missing one is refused before Ansible is loaded."""
    if sources is None:
        _import_ansible_display()
        from ansible import constants as C

        given = [str(s) for s in C.DEFAULT_HOST_LIST or []]
        if not given or (given == ["/etc/ansible/hosts"] and not Path(given[0]).exists()):
            raise UsageError("no inventory: give -i INVENTORY, or set `inventory` in ansible.cfg / ANSIBLE_INVENTORY")
    elif isinstance(sources, str | Path):
        given = [str(sources)]
    else:
        given = [str(s) for s in sources]
    out = []
    for src in given:
        if "," in src and not os.path.exists(src):
            out.append(src)  # an Ansible host list ("mta1,mta2,")
            continue
        path = Path(src).expanduser()
        if not path.exists():
            raise UsageError(f"{src}: no such inventory (folder, file, script or plugin config)")
        out.append(str(path.resolve()))
    return out


def _load(sources: Path | str | Sequence[Path | str] | None, vault_ids: Sequence[str],
          password_files: Sequence[str]) -> InventoryVars:
    paths = _source_list(sources)
    _import_ansible_display()
    from ansible import constants as C
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    files = [Path(p) for p in paths if "," not in p or os.path.exists(p)]
    if not files:
        raise UsageError(f"{paths[0]}: a host list names no variables: give an inventory folder or file")
    root = files[0] if files[0].is_dir() else files[0].parent
    _forget_found_vars_files()
    loader = DataLoader()
    secrets = _vault_secrets(loader, vault_ids, password_files)
    try:
        with _strict_parsing(C):
            manager = InventoryManager(loader=loader, sources=paths)
        variables = VariableManager(loader=loader, inventory=manager)
        reader = _Reader(root, loader, manager, variables, paths)
        global_vars = reader.global_vars()
        hosts = [reader.host(h) for h in sorted(manager.get_hosts(), key=lambda h: _natural(h.name))]
    except AnsibleError as err:
        message = _ansible_message(err)
        failed = re.match(r"Completely failed to parse inventory source (.*)", message)
        if failed or message.startswith("No inventory was parsed"):
            where = failed.group(1) if failed else ", ".join(paths)
            message = f"{where}: no inventory Ansible can parse (YAML or INI file, script, plugin config)"
        raise UsageError(message.replace(f"{root}{os.sep}", "")) from None
    basedirs = tuple(dict.fromkeys(p if p.is_dir() else p.parent for p in files))
    return InventoryVars(root, tuple(paths), basedirs, tuple(secrets), tuple(global_vars), tuple(hosts))


def _import_ansible_display() -> None:
    """Ansible's display wraps the process's standard streams when first imported (fork safety): let it wrap
    those, not a stand-in that a caller (a test) put in sys.stdout/sys.stderr."""
    if "ansible.utils.display" in sys.modules or sys.__stdout__ is None or sys.__stderr__ is None:
        return
    with contextlib.redirect_stdout(sys.__stdout__), contextlib.redirect_stderr(sys.__stderr__):
        import ansible.utils.display  # noqa: F401


def _forget_found_vars_files() -> None:
    """Ansible's group_vars/host_vars plugin remembers, per process, which files it found (one playbook run reads
    the inventory once); sendfleet reads it again after writing (and tests change it): look again."""
    from ansible.plugins.vars import host_group_vars

    host_group_vars.FOUND.clear()
    host_group_vars.NAK.clear()


@contextlib.contextmanager
def _strict_parsing(constants: Any) -> Iterator[None]:
    """An inventory of which Ansible parses nothing is an error (Ansible's `[inventory] unparsed_is_failed`), not
    an empty inventory. A file of a folder source that no plugin takes stays a warning, as for ansible-playbook."""
    saved = constants.INVENTORY_UNPARSED_IS_FAILED
    constants.INVENTORY_UNPARSED_IS_FAILED = True
    try:
        yield
    finally:
        constants.INVENTORY_UNPARSED_IS_FAILED = saved


def _ansible_message(err: BaseException, *, origin: bool = True) -> str:
    """An AnsibleError as one line, led by the file (and line) Ansible names in it or in its causes."""
    message = str(getattr(err, "message", "") or err).strip()
    first = message.splitlines()[0] if message else type(err).__name__
    seen = err if origin else None
    while seen is not None:
        found = _origin_of(getattr(seen, "obj", None))
        if found is not None and getattr(found, "path", None):
            where = str(found)
            return first if where in first else f"{where}: {first}"
        seen = seen.__cause__ or seen.__context__
    return first


def _origin_of(obj: Any) -> Any:
    """The Origin (file, line) Ansible tags an error's object with (None: none)."""
    if obj is None or type(obj).__name__ == "Origin":
        return obj
    try:  # ansible-core 2.19 tags the values it loads with their origin
        from ansible._internal._datatag._tags import Origin
    except ImportError:  # pragma: no cover - another ansible-core
        return None
    return Origin.get_tag(obj)


def _vault_secrets(loader: Any, vault_ids: Sequence[str], password_files: Sequence[str]) -> list[Any]:
    """The vault secrets ansible-playbook would use (ansible.cfg identities first), installed for decryption."""
    from ansible import constants as C
    from ansible.parsing.vault import VaultSecretsContext

    ids = [*(C.DEFAULT_VAULT_IDENTITY_LIST or []), *vault_ids]
    secrets: list[Any] = []
    if ids or password_files or C.DEFAULT_VAULT_PASSWORD_FILE:
        from ansible.cli import CLI
        from ansible.errors import AnsibleError

        try:
            secrets = CLI.setup_vault_secrets(loader, vault_ids=ids, vault_password_files=list(password_files),
                                              ask_vault_pass=False, auto_prompt=False, initialize_context=False)
        except AnsibleError as err:
            raise UsageError(f"vault secrets: {_ansible_message(err)}") from None
    loader.set_vault_secrets(secrets)
    current = VaultSecretsContext.current(optional=True)
    if current is None:
        VaultSecretsContext.initialize(VaultSecretsContext(secrets))
    else:  # one context per process (Ansible's); this load's secrets
        current.secrets = secrets
    return secrets


# ------------------------------------------------------------------------------------- the variables


def plain(value: Any) -> Any:
    """Ansible's values (tagged str/dict/list, decrypted vault strings) -> plain Python values."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, date) or value is None:
        return value
    return str(value)  # e.g. a vault EncryptedString: its plaintext (raises without the secret)


class _Reader:
    """Ansible's view of each host and of `all`, rendered, with the file or source of each key."""

    def __init__(self, root: Path, loader: Any, manager: Any, variables: Any, sources: list[str]) -> None:
        from ansible.template import Templar

        self.root = root
        self.loader = loader
        self.manager = manager
        self.variables = variables
        self.sources = sources
        self.templar_class = Templar
        self.leaves = [leaf for src in sources for leaf in _leaves(src)]
        self.leaf_labels = {leaf: self._leaf_label(leaf) for leaf in self.leaves}
        self.var_dirs = [p if os.path.isdir(p) else os.path.dirname(p) for p in sources
                         if "," not in p or os.path.exists(p)]
        play_dir = loader.get_basedir()
        if play_dir and play_dir not in self.var_dirs:
            self.var_dirs.append(play_dir)

    # -- labels

    def rel(self, path: str | Path) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def _leaf_label(self, leaf: str) -> str:
        name = self.rel(leaf)
        if "," in leaf and not os.path.exists(leaf):
            return f"host list {leaf!r}"
        if os.access(leaf, os.X_OK):
            return f"inventory script {name}"
        if leaf.endswith((".yml", ".yaml")):
            with contextlib.suppress(Exception):
                data = self.loader.load_from_file(leaf, cache="all")
                if isinstance(data, Mapping) and "plugin" in data:
                    return f"inventory plugin {data['plugin']} ({name})"
        return name

    def inline_label(self, leaf: str | None) -> str:
        if leaf is not None and leaf in self.leaf_labels:
            return self.leaf_labels[leaf]
        labels = list(dict.fromkeys(self.leaf_labels.values()))
        return labels[0] if len(labels) == 1 else f"inventory ({', '.join(labels)})"

    # -- layers: (label, file, variables), lowest precedence first

    def files_of(self, kind: str, name: str) -> list[tuple[str, Path, Mapping[str, Any]]]:
        layers = []
        for base in self.var_dirs:
            folder = os.path.join(base, kind)
            if not os.path.isdir(folder):
                continue
            for found in self.loader.find_vars_files(folder, name):
                data = self.loader.load_from_file(found, cache="all", unsafe=True, trusted_as_template=True)
                if isinstance(data, Mapping):
                    layers.append((self.rel(found), Path(found), data))
        return layers

    def group_layers(self, groups: Sequence[Any]) -> list[tuple[str, Path | None, Mapping[str, Any]]]:
        layers: list[tuple[str, Path | None, Mapping[str, Any]]] = []
        for group in groups:
            layers.append((f"{self.inline_label(None)} ({group.name}.vars)", None, group.get_vars()))
            layers += self.files_of("group_vars", group.name)
        return layers

    # -- the views

    def global_vars(self) -> list[VarSource]:
        from ansible.utils.vars import combine_vars
        from ansible.vars.plugins import get_vars_from_inventory_sources, get_vars_from_path

        all_group = self.manager.groups["all"]
        raw = combine_vars(all_group.get_vars(),
                           get_vars_from_inventory_sources(self.loader, self.sources, [all_group], "task"))
        raw = combine_vars(raw, get_vars_from_path(self.loader, self.loader.get_basedir(), [all_group], "task"))
        context = combine_vars(self.variables.get_vars(), raw)
        return self.attributed(raw, context, self.group_layers([all_group]), f"{self.inline_label(None)} (all.vars)")

    def host(self, host: Any) -> HostSource:
        from ansible.inventory.helpers import sort_groups

        context = self.variables.get_vars(host=host, include_hostvars=False)
        groups = sort_groups([g for g in host.get_groups() if g.name != "all"])
        leaf = host.vars.get("inventory_file")
        own = f"{self.inline_label(str(leaf) if leaf else None)} (host {host.name})"
        layers = self.group_layers([self.manager.groups["all"], *groups])
        layers.append((own, None, host.get_vars()))
        layers += self.files_of("host_vars", host.name)
        keys = set().union(*(layer[2].keys() for layer in layers))
        raw = {k: context[k] for k in context if k in keys and k not in _MAGIC}
        names = tuple(g.name for g in groups)
        return HostSource(host.name, names, self.attributed(raw, context, layers, own))

    def attributed(self, raw: Mapping[str, Any], context: Mapping[str, Any],
                   layers: list[tuple[str, Path | None, Mapping[str, Any]]], fallback: str) -> list[VarSource]:
        """One VarSource per origin, holding the rendered values of the keys whose value came from it."""
        templar = self.templar_class(loader=self.loader, variables=context)
        by_origin: dict[tuple[str, Path | None], dict[str, Any]] = {}
        for key, value in raw.items():
            origin = _origin(key, value, layers) or (fallback, None)
            by_origin.setdefault(origin, {})[str(key)] = _render(templar, value)
        return [VarSource(label, data, file) for (label, file), data in by_origin.items()]


# Variables Ansible sets itself (not inventory variables), kept out of the host's variables.
_MAGIC = frozenset({"inventory_file", "inventory_dir", "inventory_hostname", "inventory_hostname_short",
                    "group_names", "groups", "omit", "playbook_dir", "ansible_playbook_python", "ansible_config_file",
                    "ansible_version", "ansible_facts", "ansible_local", "hostvars", "ansible_inventory_sources"})


def _origin(key: str, value: Any, layers: list[tuple[str, Path | None, Mapping[str, Any]]]
            ) -> tuple[str, Path | None] | None:
    """The last layer defining `key` with the value Ansible chose (else the last defining it)."""
    last = None
    for label, file, data in reversed(layers):
        if key not in data:
            continue
        last = last or (label, file)
        candidate = data[key]
        with contextlib.suppress(Exception):
            if candidate is value or candidate == value:
                return label, file
    return last


def _render(templar: Any, value: Any) -> Any:
    """The value as a play sees it: Jinja rendered, vault decrypted; Unresolved when Ansible cannot."""
    from ansible.errors import AnsibleError

    try:
        return plain(templar.template(value))
    except AnsibleError as err:
        text = _ansible_message(err, origin=False)  # the message names the file and key already
        if "vault" in text.lower() or "decrypt" in text.lower():
            return Unresolved(f"encrypted with ansible-vault and no vault secret given opens it {VAULT_HELP}")
        return Unresolved(f"Ansible cannot evaluate it on the controller: {text}")


def _leaves(source: str) -> list[str]:
    """The files Ansible parses for a source (a folder: its files, as InventoryManager lists them)."""
    from ansible.inventory.manager import IGNORED

    if not os.path.isdir(source):
        return [source]
    leaves = []
    for name in sorted(os.listdir(source)):
        if IGNORED.search(os.fsencode(name)):
            continue
        leaves += _leaves(os.path.join(source, name))
    return leaves


def _natural(name: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdecimal() else part for part in re.split(r"(\d+)", name))


# ------------------------------------------------------------------------------------------- helpers


def _loaded(inv: Inventory | InventoryVars) -> InventoryVars:
    if isinstance(inv, InventoryVars):
        return inv
    loaded = _LOADED.get(id(inv))
    if loaded is None:
        raise UsageError(f"{inv.path}: this inventory was not read from files (load_inventory)")
    return loaded


def read_dkim_keys(inv: Inventory) -> dict[tuple[str, str], bytes | None]:
    """The controller's DKIM private keys, (domain, selector) -> PEM bytes (None when the file is missing).
    ansible-vault encrypted key files are decrypted with the inventory's vault secrets."""
    keys: dict[tuple[str, str], bytes | None] = {}
    for domain in inv.sender_domains.values():
        for selector in domain.all_selectors:
            path = inv.dkim_key_path(domain.name, selector)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                keys[(domain.name, selector)] = None
                continue
            except OSError as err:
                raise UsageError(f"{path}: cannot read the DKIM key: {err.strerror}") from None
            keys[(domain.name, selector)] = _decrypted(inv, path, data)
    return keys


def _decrypted(inv: Inventory, path: Path, data: bytes) -> bytes:
    from ansible.parsing.vault import VaultLib, is_encrypted

    if not is_encrypted(data):
        return data
    secrets = list(_LOADED[id(inv)].secrets) if id(inv) in _LOADED else []
    if not secrets:
        raise UsageError(f"{path}: encrypted with ansible-vault and no vault secret given {VAULT_HELP}")
    try:
        return bytes(VaultLib(secrets).decrypt(data))
    except Exception as err:  # AnsibleVaultError and friends
        raise UsageError(f"{path}: cannot decrypt the DKIM key: {_ansible_message(err)}") from None


def vars_dir(inv: Inventory | InventoryVars) -> Path:
    """The folder sendfleet writes group_vars/host_vars YAML into: `sendfleet_vars_dir` (relative to the inventory
    folder) or the first inventory source when it is a folder. It must be a folder Ansible reads for this
    inventory (a source folder or the folder of a source file); else one UsageError line."""
    loaded = _loaded(inv)
    configured = loaded.value(VARS_DIR_KEY)
    if configured is not None and configured != "":
        source = loaded.source(VARS_DIR_KEY)
        where = f"{source.source if source else 'inventory'}: {VARS_DIR_KEY}"
        if not isinstance(configured, str):
            raise UsageError(f"{where}: expected a folder name")
        folder = Path(configured).expanduser()
        folder = (folder if folder.is_absolute() else loaded.path / folder).resolve()
        if folder not in {b.resolve() for b in loaded.basedirs}:
            raise UsageError(
                f"{where}: Ansible does not read {folder} with this inventory: give it as another -i"
                " (ansible.cfg inventory = FILE,FOLDER) or use the folder of the inventory file"
            )
        return folder
    first = Path(loaded.sources[0])
    if first.is_dir():
        return first
    raise UsageError(
        f"{loaded.sources[0]}: not an inventory folder: set {VARS_DIR_KEY} (a folder whose group_vars/host_vars"
        " Ansible reads: the inventory file's folder, or a folder given as another -i) to say where sendfleet writes"
    )


def writable_vars_file(inv: Inventory | InventoryVars, key: str, *, host: str | None = None,
                       name: str | None = None) -> Path:
    """The YAML file sendfleet writes `key` to: `group_vars/all/<name or key>.yml` (global) or
    `host_vars/<host>.yml`. Refused in one line when Ansible takes `key` from another place (the write would be
    shadowed by it, or would shadow it)."""
    loaded = _loaded(inv)
    folder = vars_dir(loaded)
    if host is None:
        target = folder / "group_vars" / "all" / f"{name or key}.yml"
    else:
        target = folder / "host_vars" / f"{host}.yml"
    source = loaded.source(key, host)
    if source is not None and (source.file is None or source.file.resolve() != target.resolve()):
        raise UsageError(
            f"{source.source}: {key}: sendfleet writes {key} to {target} only, and Ansible takes it from here: "
            f"move {key} there first"
        )
    return target


def admission_file(source: Path | str, pool: str) -> Path:
    """Where `sendfleet vet --admit SOURCE --pool POOL` writes vetted_ips when SOURCE is an inventory file, script
    or plugin config: `group_vars/all/vetted_ips.yml` of its variables folder, once POOL is known to be a pool of
    the inventory (when it names its pools). A folder is its own variables folder and needs no inventory yet."""
    found = read_inventory_vars(source)
    pools = found.value("pools")
    if isinstance(pools, Mapping | list) and pool not in pools:
        names = ", ".join(sorted(str(p) for p in pools)) or "none"
        where = found.source("pools")
        raise UsageError(f"--pool {pool}: not a pool of {where.source if where else source} (known: {names})")
    return writable_vars_file(found, "vetted_ips")
