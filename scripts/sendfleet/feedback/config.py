"""`/etc/sendfleet/feedback.yml` (written by the Ansible role `feedback`): loaded into a frozen `Config`; every
problem is one line naming the file and the key."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sendfleet.core import shaping, suppression
from sendfleet.core.feedback import Limits
from sendfleet.errors import UsageError

DEFAULT_PATH = Path("/etc/sendfleet/feedback.yml")
#: Seconds for the MX lookup of a recipient domain (its provider class): the pipe waits that long per domain when
#: the resolver does not answer (the class is then `other`).
DEFAULT_MX_TIMEOUT = 2.0
KEYS = ("database", "dead_letter_dir", "textfile_dir", "bounce_domains", "fleet_ips", "policy", "provider_classes",
        "shaping_rules", "limits")
LIMIT_KEYS = ("max_message_bytes", "max_uncompressed_bytes", "max_ratio")
DEFAULT_LIMITS = {"max_message_bytes": 10 * 1024 * 1024, "max_uncompressed_bytes": 50 * 1024 * 1024,
                  "max_ratio": 200}


@dataclass(frozen=True)
class Config:
    path: Path
    database: str
    dead_letter_dir: Path
    textfile_dir: Path | None
    bounce_domains: Mapping[str, str]  # bounce domain -> sender domain
    fleet_ips: frozenset[str]
    policy: suppression.Policy
    classes: Mapping[str, shaping.ProviderClass]
    limits: Limits

    @property
    def sender_domains(self) -> frozenset[str]:
        return frozenset(self.bounce_domains.values())


def _int(value: Any, where: str, *, optional: bool = False, minimum: int = 0) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = f"an integer >= {minimum}" + (" or null" if optional else "")
        raise UsageError(f"{where}: expected {what}, got {value!r}")
    return value


def load(path: Path = DEFAULT_PATH, *, database: str | None = None) -> Config:
    """The configuration at `path`; `database` (a libpq conninfo) overrides the file's."""
    try:
        # libyaml's loader when PyYAML has it (Debian's python3-yaml does): the pipe loads this file per message
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: malformed YAML: {str(err).splitlines()[0]}") from None
    return from_data(raw, path, database=database)


def from_data(raw: Any, path: Path, *, database: str | None = None) -> Config:
    if not isinstance(raw, Mapping):
        raise UsageError(f"{path}: expected a mapping ({', '.join(KEYS)}), got {type(raw).__name__}")
    for key in raw:
        if key not in KEYS:
            raise UsageError(f"{path}: {key}: unknown key (known: {', '.join(KEYS)})")
    conninfo = database if database is not None else raw.get("database")
    if not isinstance(conninfo, str) or not conninfo.strip():
        raise UsageError(f"{path}: database: expected a libpq conninfo string, got {conninfo!r}")
    dead = raw.get("dead_letter_dir")
    if not isinstance(dead, str) or not dead.startswith("/"):
        raise UsageError(f"{path}: dead_letter_dir: expected an absolute path, got {dead!r}")
    textfile = raw.get("textfile_dir")
    if textfile is not None and (not isinstance(textfile, str) or not textfile.startswith("/")):
        raise UsageError(f"{path}: textfile_dir: expected an absolute path or null, got {textfile!r}")
    domains = raw.get("bounce_domains") or {}
    if not isinstance(domains, Mapping):
        raise UsageError(f"{path}: bounce_domains: expected a mapping bounce domain -> sender domain")
    bounce_domains: dict[str, str] = {}
    for k, v in domains.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k or not v:
            raise UsageError(f"{path}: bounce_domains.{k}: expected a sender domain name, got {v!r}")
        bounce_domains[k.lower().rstrip(".")] = v.lower().rstrip(".")
    ips = raw.get("fleet_ips") or []
    if not isinstance(ips, list):
        raise UsageError(f"{path}: fleet_ips: expected a list of IP addresses, got {ips!r}")
    fleet: set[str] = set()
    for i, ip in enumerate(ips):
        try:
            fleet.add(str(ipaddress.ip_address(str(ip))))
        except ValueError:
            raise UsageError(f"{path}: fleet_ips[{i}]: not an IP address: {ip!r}") from None
    try:
        policy = suppression.parse_policy(raw.get("policy"))
    except suppression.PolicyError as err:
        raise UsageError(f"{path}: {err}") from None
    lim = raw.get("limits") or {}
    if not isinstance(lim, Mapping):
        raise UsageError(f"{path}: limits: expected a mapping ({', '.join(LIMIT_KEYS)})")
    for key in lim:
        if key not in LIMIT_KEYS:
            raise UsageError(f"{path}: limits.{key}: unknown key (known: {', '.join(LIMIT_KEYS)})")
    limits = Limits(**{k: _int(lim.get(k, DEFAULT_LIMITS[k]), f"{path}: limits.{k}", minimum=1) or 1
                       for k in LIMIT_KEYS})
    override = raw.get("provider_classes") or {}
    try:
        # the shipped classes with the inventory's over them, as the inventory model merges them
        merged = shaping.merge(shaping.default_data(), override if isinstance(override, Mapping) else None)
        classes = shaping.parse_classes(merged, "provider_classes", raw.get("shaping_rules") or None)
    except shaping.ShapingError as err:
        raise UsageError(f"{path}: {err}") from None
    return Config(path=path, database=conninfo, dead_letter_dir=Path(dead),
                  textfile_dir=Path(textfile) if textfile else None, bounce_domains=bounce_domains,
                  fleet_ips=frozenset(fleet), policy=policy, classes=classes, limits=limits)
