"""Read an Ansible inventory directory into the `sendfleet.core.inventory.Inventory` model.

Layout understood (the one `sendfleet lab up` writes and inventories/example/ shows):
    <dir>/hosts.yml (any *.yml/*.yaml at the top: YAML inventories; `all:` or top-level groups)
    <dir>/group_vars/<group>.yml or <group>/*.yml   (`all` is global)
    <dir>/host_vars/<host>.yml or <host>/*.yml
Precedence follows Ansible's: inline group vars < group_vars/all < group_vars/<group> < inline host vars
< host_vars. Only YAML inventories are read (no INI, no dynamic inventory scripts).

    from sendfleet.inventory_io import load_inventory
    inv = load_inventory(Path("inventories/lab"))
    for sip in inv.sending_ips(): ...

Environment: SENDFLEET_DNS_TSIG_SECRET overrides `dns_tsig_secret` (for secrets kept in ansible-vault).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import TaggedScalar

from sendfleet import yamlfile
from sendfleet.core.inventory import HostSource, Inventory, VarSource, Vaulted, build_inventory, one_line
from sendfleet.errors import InventoryError, UsageError

YAML_SUFFIXES = (".yml", ".yaml", ".json")
TSIG_SECRET_ENV = "SENDFLEET_DNS_TSIG_SECRET"


def plain(value: Any) -> Any:
    """ruamel round-trip values -> plain Python (dict, list, str, int, float, bool, date, None)."""
    if isinstance(value, TaggedScalar):
        tag = str(value.tag.value if hasattr(value.tag, "value") else value.tag)
        if tag.endswith("vault"):
            return Vaulted()
        return str(value.value)
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
    return value


class _Reader:
    def __init__(self, root: Path) -> None:
        self.root = root

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    def vars_file(self, path: Path) -> VarSource | None:
        data = plain(yamlfile.load(path))
        if data is None:
            return None
        if not isinstance(data, dict):
            raise UsageError(f"{path}: expected a mapping of variables at the top")
        return VarSource(self.rel(path), data)

    def vars_of(self, folder: Path, name: str) -> list[VarSource]:
        """group_vars/<name>.yml and/or group_vars/<name>/**.yml, in Ansible's (sorted) order."""
        sources: list[VarSource] = []
        candidates: list[Path] = []
        for suffix in ("", *YAML_SUFFIXES):
            single = folder / f"{name}{suffix}"
            if single.is_file():
                candidates.append(single)
        sub = folder / name
        if sub.is_dir():
            candidates += sorted(
                p
                for p in sub.rglob("*")
                if p.is_file() and p.suffix in YAML_SUFFIXES and not any(part.startswith(".") for part in p.parts)
            )
        for path in candidates:
            src = self.vars_file(path)
            if src is not None:
                sources.append(src)
        return sources


def _walk_group(
    name: str,
    spec: Any,
    where: str,
    parents: tuple[str, ...],
    groups: dict[str, tuple[str, ...]],
    group_vars: dict[str, dict[str, Any]],
    host_groups: dict[str, set[str]],
    host_vars: dict[str, dict[str, Any]],
) -> None:
    chain = (*parents, name)
    groups[name] = tuple(dict.fromkeys((*groups.get(name, ()), *parents)))
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise UsageError(f"{where}: group {name!r}: expected a mapping (hosts/vars/children)")
    for key in spec:
        if key not in ("hosts", "vars", "children"):
            raise UsageError(f"{where}: group {name!r}: unknown key {key!r} (hosts, vars, children)")
    gvars = spec.get("vars") or {}
    if not isinstance(gvars, dict):
        raise UsageError(f"{where}: {name}.vars: expected a mapping")
    group_vars.setdefault(name, {}).update(gvars)
    hosts = spec.get("hosts") or {}
    if isinstance(hosts, list):
        hosts = {h: None for h in hosts}
    if not isinstance(hosts, dict):
        raise UsageError(f"{where}: {name}.hosts: expected a mapping of host names")
    for host, hvars in hosts.items():
        host_groups.setdefault(str(host), set()).update(chain)
        if hvars is not None:
            if not isinstance(hvars, dict):
                raise UsageError(f"{where}: {name}.hosts.{host}: expected a mapping of variables")
            host_vars.setdefault(str(host), {}).update(hvars)
    children = spec.get("children") or {}
    if not isinstance(children, dict):
        raise UsageError(f"{where}: {name}.children: expected a mapping of groups")
    for child, cspec in children.items():
        _walk_group(str(child), cspec, where, chain, groups, group_vars, host_groups, host_vars)


def load_inventory(path: Path) -> Inventory:
    """Read and validate an inventory directory (or its hosts.yml). UsageError names file and key."""
    try:
        return _load(path)
    except InventoryError:
        raise  # already one line per problem
    except UsageError as err:
        raise UsageError(one_line(str(err))) from None


def _load(path: Path) -> Inventory:
    root = path.parent if path.is_file() else path
    if not root.is_dir():
        raise UsageError(f"{path}: no such inventory directory")
    reader = _Reader(root)
    sources = (
        [path] if path.is_file() else sorted(p for p in root.iterdir() if p.is_file() and p.suffix in YAML_SUFFIXES)
    )
    if not sources:
        raise UsageError(f"{root}: no YAML inventory file (hosts.yml) in this directory")

    groups: dict[str, tuple[str, ...]] = {"all": ()}
    group_vars: dict[str, dict[str, Any]] = {}
    host_groups: dict[str, set[str]] = {}
    host_vars: dict[str, dict[str, Any]] = {}
    inline_origin: dict[str, str] = {}
    for src in sources:
        data = plain(yamlfile.load(src))
        if data is None:
            continue
        where = reader.rel(src)
        if not isinstance(data, dict):
            raise UsageError(f"{where}: expected a YAML inventory (a mapping of groups, e.g. 'all:')")
        for gname, gspec in data.items():
            parents = () if gname == "all" else ("all",)
            _walk_group(str(gname), gspec, where, parents, groups, group_vars, host_groups, host_vars)
            inline_origin.setdefault(str(gname), where)
        for host in host_vars:
            inline_origin.setdefault(f"host:{host}", where)

    gv_dir, hv_dir = root / "group_vars", root / "host_vars"
    global_vars = [VarSource(f"{inline_origin.get('all', 'hosts.yml')} (all.vars)", group_vars.get("all", {}))]
    global_vars += reader.vars_of(gv_dir, "all")
    env_secret = os.environ.get(TSIG_SECRET_ENV)
    if env_secret:
        global_vars.append(VarSource(f"environment {TSIG_SECRET_ENV}", {"dns_tsig_secret": env_secret}))

    file_group_vars = {g: reader.vars_of(gv_dir, g) for g in groups if g != "all"}
    hosts: list[HostSource] = []
    for host in sorted(host_groups, key=_natural):
        member = sorted(host_groups[host] - {"all"})
        expanded: list[str] = []
        for g in member:  # a host is in the ancestors of its groups too
            expanded += [p for p in groups.get(g, ()) if p != "all"] + [g]
        hgroups = tuple(dict.fromkeys(expanded))
        layers = [VarSource(f"{inline_origin.get(g, 'hosts.yml')} ({g}.vars)", group_vars.get(g, {})) for g in hgroups]
        layers = [global_vars[0], *layers, *global_vars[1:]]
        for g in hgroups:
            layers += file_group_vars.get(g, [])
        layers.append(
            VarSource(f"{inline_origin.get(f'host:{host}', 'hosts.yml')} (host {host})", host_vars.get(host, {}))
        )
        layers += reader.vars_of(hv_dir, host)
        if env_secret:
            layers.append(global_vars[-1])
        hosts.append(HostSource(host, hgroups, layers))
    return build_inventory(root.resolve(), global_vars, hosts)


def _natural(name: str) -> tuple[Any, ...]:
    import re

    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def read_dkim_keys(inv: Inventory) -> dict[tuple[str, str], bytes | None]:
    """The controller's DKIM private keys, (domain, selector) -> PEM bytes (None when the file is missing)."""
    keys: dict[tuple[str, str], bytes | None] = {}
    for domain in inv.sender_domains.values():
        for selector in domain.all_selectors:
            path = inv.dkim_key_path(domain.name, selector)
            try:
                keys[(domain.name, selector)] = path.read_bytes()
            except FileNotFoundError:
                keys[(domain.name, selector)] = None
            except OSError as err:
                raise UsageError(f"{path}: cannot read the DKIM key: {err.strerror}") from None
    return keys
