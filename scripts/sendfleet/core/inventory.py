"""The fleet inventory as a typed, validated model (pure: no file access here).

One source of truth: the DNS planner, the FCrDNS gate, pool assignment, warm-up and readiness all read
the same `Inventory`. `sendfleet.inventory_io.load_inventory(...)` reads an inventory through ansible-core
(the variables a play sees: Jinja rendered, vault decrypted) and calls `build_inventory` below; tests and other
tools can call `build_inventory` directly with in-memory `VarSource`s. A value Ansible cannot evaluate arrives as
`Unresolved` and is an error only where a rule needs it.

Variables read (a later source replaces a whole top-level key of an earlier one):

Global (the variables of the group `all`: its inventory vars, group_vars/all.yml or group_vars/all/*.yml):
  pools:            {NAME: {spf_domain: optional name publishing the pool's ip4/ip6 for `include:`}}
  sender_domains:   {DOMAIN: {pool, selectors: [..] (RSA), signing_selector (optional),
                              ed25519_selectors: [..], ed25519_signing_selector (optional: dual signing),
                              dmarc: {p, sp, rua, ruf, adkim, aspf, pct, fo} | false,
                              mta_sts: {mode, mx: [..], max_age}, tls_rpt: {rua: [..]} | true,
                              (rua default: mailto:dmarc@ / mailto:tlsrpt@ the bounce domain when the
                              feedback host receives it, else the domain itself)
                              spf_include: [..], spf_all: "~all"|"-all",
                              bounce_domain: name under DOMAIN | false (default bounces.DOMAIN when there
                              is a feedback MX)}}
  feedback_mx:      [host names]: the MX of every bounce domain (default: the hosts of group `feedback`, each
                    by its name when it has a dot, else <name>.<host_domain>)
  vetted_ips:       {POOL: [{ip, ...evidence}]}   (written by `sendfleet vet --admit`)
  app_networks, admin_networks: [CIDR, ...]
  dns_zones:        [zones whose records we publish (the update server is authoritative for them)]
  dns_update_server, dns_update_port (53), dns_tsig_key_name, dns_tsig_algorithm (hmac-sha256),
  dns_tsig_secret:  RFC 2136 settings (the secret never appears in repr or output)
  dns_resolver:     address or list of addresses of the resolver that checks what the world sees
                    (default: the system's resolvers); dns_resolver_port (53)
  dns_ttl:          TTL of the records sendfleet publishes (default 3600)
  rdns_gate:        enforce (default: an IP failing FCrDNS leaves every pool) | warn (reported, kept)
                    | off (not applied; YAML 1.1 `off`, i.e. false, means off too)
  dkim_keys_dir:    controller-side DKIM keys, <dir>/<domain>/<selector>.pem (default <inventory>/dkim;
                    a relative path is relative to the inventory directory)

Per host (host_vars/<host>.yml, host_vars/<host>/*.yml, inline host vars, group vars of its groups):
  sending_ips:      [{ip, pool, ptr, warmup_start (optional date), helo (optional, defaults to ptr),
                      weight (optional, 1..100, default 1: repeats in the pool's random choice)}]

Any problem raises UsageError naming the file and the key (e.g. "host_vars/mta1.yml: sending_ips[2].pool:
unknown pool 'bulk' (known: marketing, transactional)").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal, TypeVar

from sendfleet.core import shaping
from sendfleet.core.dmarc import POLICIES
from sendfleet.errors import InventoryError, UsageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RdnsGateMode = Literal["enforce", "warn", "off"]
_T = TypeVar("_T")

#: Every variable the model reads (documented above): what a play must hand it to be judged as sendfleet judges.
VARIABLES = (
    "pools", "sender_domains", "vetted_ips", "app_networks", "admin_networks", "dns_zones", "dns_update_server",
    "dns_update_port", "dns_tsig_key_name", "dns_tsig_algorithm", "dns_tsig_secret", "dns_resolver",
    "dns_resolver_port", "dns_ttl", "rdns_gate", "dkim_keys_dir", "sending_ips", "host_domain",
    "sending_ips_require_vetted", "postfix_sasl", "provider_classes", "shaping_rules", "postfix_transport_limits",
    "postfix_providers", "dnsbl_monitor_providers", "feedback_mx",
)

DEFAULT_TTL = 3600
DEFAULT_SPF_ALL = "~all"
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5")

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TLD = re.compile(r"^[a-z]{2,63}$")
_POOL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


# --------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class SendingIp:
    """One dedicated sending address of a host: the unit every gate and record is about."""

    ip: IPAddress
    pool: str
    ptr: str  # the PTR name of the IP (lower case, no trailing dot)
    host: str
    helo: str  # the HELO name of the IP's transport; equals `ptr` unless the inventory says `helo:`
    warmup_start: date | None = None
    source: str = ""  # the file it was read from (for messages)
    weight: int = 1  # how often the IP appears in its pool's random choice

    @property
    def version(self) -> int:
        return self.ip.version


@dataclass(frozen=True)
class Pool:
    name: str
    spf_domain: str | None = None  # publish the pool's addresses here and `include:` it from domains


@dataclass(frozen=True)
class Dmarc:
    """A DMARC policy (RFC 7489). Default: monitoring (p=none) with aggregate reports, relaxed alignment."""

    p: str = "none"
    rua: tuple[str, ...] = ()
    sp: str | None = None
    ruf: tuple[str, ...] = ()
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    fo: str | None = None
    # rua is the model's default (no `rua` in the inventory): it moves to the bounce domain when there is one
    rua_default: bool = False

    def record(self) -> str:
        parts = ["v=DMARC1", f"p={self.p}"]
        if self.sp is not None:
            parts.append(f"sp={self.sp}")
        if self.rua:
            parts.append("rua=" + ",".join(self.rua))
        if self.ruf:
            parts.append("ruf=" + ",".join(self.ruf))
        parts += [f"adkim={self.adkim}", f"aspf={self.aspf}"]
        if self.pct != 100:
            parts.append(f"pct={self.pct}")
        if self.fo is not None:
            parts.append(f"fo={self.fo}")
        return "; ".join(parts)


@dataclass(frozen=True)
class MtaSts:
    """MTA-STS (RFC 8461) for a domain that also receives mail: the TXT id follows the policy text."""

    mode: str
    mx: tuple[str, ...]
    max_age: int = 604800

    def policy_text(self) -> str:
        lines = [
            "version: STSv1",
            f"mode: {self.mode}",
            *(f"mx: {mx}" for mx in self.mx),
            f"max_age: {self.max_age}",
        ]
        return "\r\n".join(lines) + "\r\n"

    def policy_id(self) -> str:
        return hashlib.sha256(self.policy_text().encode()).hexdigest()[:20]

    def record(self) -> str:
        return f"v=STSv1; id={self.policy_id()}"


@dataclass(frozen=True)
class TlsRpt:
    rua: tuple[str, ...]
    rua_default: bool = False  # as Dmarc.rua_default


    def record(self) -> str:
        return "v=TLSRPTv1; rua=" + ",".join(self.rua)


@dataclass(frozen=True)
class SenderDomain:
    name: str
    pool: str
    selectors: tuple[str, ...]
    dmarc: Dmarc | None = field(default_factory=Dmarc)  # None: sendfleet does not manage _dmarc
    mta_sts: MtaSts | None = None
    tls_rpt: TlsRpt | None = None
    spf_include: tuple[str, ...] = ()  # third parties also sending for the domain
    spf_all: str = DEFAULT_SPF_ALL
    signing_selector: str | None = None  # the selector that signs (None: the first one)
    # Ed25519 keys (RFC 8463), signing beside the RSA signature ("dual signing"); empty: RSA only
    ed25519_selectors: tuple[str, ...] = ()
    ed25519_signing_selector: str | None = None  # None: the first Ed25519 selector
    # the envelope sender's domain (VERP return path) whose MX is the feedback host; None: no bounce domain
    bounce_domain: str | None = None
    bounce_domain_off: bool = False  # `bounce_domain: false`: none even when the fleet has a feedback MX

    @property
    def signer(self) -> str | None:
        return self.signing_selector or (self.selectors[0] if self.selectors else None)

    @property
    def ed25519_signer(self) -> str | None:
        return self.ed25519_signing_selector or (self.ed25519_selectors[0] if self.ed25519_selectors else None)

    @property
    def all_selectors(self) -> tuple[str, ...]:
        """Every selector with a key (RSA first, then Ed25519): what DNS publishes and the hosts hold."""
        return self.selectors + self.ed25519_selectors

    def key_type(self, selector: str) -> str:
        """The key type a selector must hold: "ed25519" for the Ed25519 list, else "rsa"."""
        return "ed25519" if selector in self.ed25519_selectors else "rsa"


@dataclass(frozen=True)
class TsigKey:
    name: str
    algorithm: str
    secret: str = field(repr=False)  # base64; never printed


@dataclass(frozen=True)
class DnsUpdateSettings:
    server: str
    port: int
    key: TsigKey | None


@dataclass(frozen=True)
class ResolverSettings:
    nameservers: tuple[str, ...]  # empty: the system's resolvers
    port: int = 53


@dataclass(frozen=True)
class VettedIp:
    ip: IPAddress
    pool: str
    evidence: Mapping[str, Any]


@dataclass(frozen=True)
class Host:
    name: str
    groups: tuple[str, ...]
    sending_ips: tuple[SendingIp, ...]
    vars: Mapping[str, Any]  # the host's merged variables (plain Python values)


@dataclass(frozen=True)
class Inventory:
    path: Path  # the inventory directory
    hosts: Mapping[str, Host]
    pools: Mapping[str, Pool]
    sender_domains: Mapping[str, SenderDomain]
    dns_zones: tuple[str, ...]
    dns_update: DnsUpdateSettings | None
    resolver: ResolverSettings
    rdns_gate: RdnsGateMode
    dkim_dir: Path
    dns_ttl: int = DEFAULT_TTL
    app_networks: tuple[IPNetwork, ...] = ()
    admin_networks: tuple[IPNetwork, ...] = ()
    vetted_ips: Mapping[str, tuple[VettedIp, ...]] = field(default_factory=dict)
    vars: Mapping[str, Any] = field(default_factory=dict)  # merged global (`all`) variables
    # provider classes: the shipped default with the inventory's `provider_classes` over it (sendfleet.core.shaping)
    classes: Mapping[str, shaping.ProviderClass] = field(default_factory=dict)
    feedback_mx: tuple[str, ...] = ()  # the MX hosts of the bounce domains (the feedback hosts)

    @property
    def bounce_domains(self) -> dict[str, str]:
        """Bounce domain -> its sender domain, for every sender domain that has one."""
        return {d.bounce_domain: d.name for d in self.sender_domains.values() if d.bounce_domain}

    def sending_ips(self) -> list[SendingIp]:
        """Every sending IP of every host, in host order then inventory order."""
        return [sip for host in self.hosts.values() for sip in host.sending_ips]

    def pool_ips(self, pool: str) -> list[SendingIp]:
        return [sip for sip in self.sending_ips() if sip.pool == pool]

    def find_ip(self, ip: str | IPAddress) -> SendingIp | None:
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        return next((sip for sip in self.sending_ips() if sip.ip == addr), None)

    def group(self, name: str) -> list[Host]:
        return [h for h in self.hosts.values() if name in h.groups]

    def dkim_key_path(self, domain: str, selector: str) -> Path:
        return self.dkim_dir / domain / f"{selector}.pem"

    def domains_of_pool(self, pool: str) -> list[SenderDomain]:
        return [d for d in self.sender_domains.values() if d.pool == pool]


# --------------------------------------------------------------------------------------------- input


@dataclass(frozen=True)
class VarSource:
    """Variables read from one place; `source` names it in messages (e.g. 'group_vars/all/pools.yml',
    'hosts.ini (host mta1)'); `file`: the YAML file they were read from, when one (where a write must go)."""

    source: str
    data: Mapping[str, Any]
    file: Path | None = None


@dataclass(frozen=True)
class HostSource:
    name: str
    groups: tuple[str, ...]
    vars: Sequence[VarSource]  # lowest precedence first


class _Vars:
    """Merged variables remembering where each top-level key came from."""

    def __init__(self, sources: Sequence[VarSource]) -> None:
        self.values: dict[str, Any] = {}
        self.origin: dict[str, str] = {}
        for src in sources:
            for key, value in src.data.items():
                self.values[str(key)] = value
                self.origin[str(key)] = src.source

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def where(self, key: str) -> str:
        return self.origin.get(key, "inventory")

    def fail(self, key: str, message: str) -> UsageError:
        return UsageError(f"{self.where(key)}: {key}: {message}")


# ------------------------------------------------------------------------------------ value checkers


def normalize_name(value: str) -> str:
    """A domain name in the form the model uses: lower case, no trailing dot."""
    return value.strip().lower().rstrip(".")


def is_domain_name(value: str, *, allow_underscore: bool = True) -> bool:
    name = normalize_name(value)
    if not name or len(name) > 253:
        return False
    pattern = _LABEL if allow_underscore else _HOST_LABEL
    return all(pattern.match(label) for label in name.split("."))


def is_fqdn(value: str) -> bool:
    """A fully qualified host or mail domain name: letters, digits and '-' (no '_'), at least two labels, an
    alphabetic top-level label. The rule for sender domains, PTR/HELO names and the senders' own names."""
    name = normalize_name(value)
    return is_domain_name(name, allow_underscore=False) and "." in name and bool(_TLD.match(name.rsplit(".", 1)[1]))


def is_selector(value: str) -> bool:
    """A DKIM selector as sendfleet publishes it: one or more DNS labels of letters, digits and '-' (RFC 6376
    3.1 takes the sub-domain syntax of RFC 5321, which has no '_'), not ending in `_domainkey`."""
    return is_domain_name(value, allow_underscore=False)


@dataclass(frozen=True)
class Unresolved:
    """A variable Ansible cannot evaluate on the controller (a Jinja error, a vault value without its secret):
    an error only where sendfleet needs the value; `reason` says why (never the value)."""

    reason: str

    def __repr__(self) -> str:
        return f"<unresolved: {self.reason}>"


def _resolved(value: Any, where: str) -> Any:
    if isinstance(value, Unresolved):
        raise UsageError(f"{where}: {value.reason}")
    return value


def _str(value: Any, where: str) -> str:
    value = _resolved(value, where)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UsageError(f"{where}: expected a string, got {_kind(value)}")
    return str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    value = _resolved(value, where)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"{where}: expected a mapping, got {_kind(value)}")
    return value


def _list(value: Any, where: str, *, scalar_ok: bool = False) -> list[Any]:
    value = _resolved(value, where)
    if value is None:
        return []
    if scalar_ok and isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        raise UsageError(f"{where}: expected a list, got {_kind(value)}")
    return list(value)


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    value = _resolved(value, where)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UsageError(f"{where}: expected an integer, got {_kind(value)}")
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{where}: expected an integer, got {value!r}") from None
    if not lo <= number <= hi:
        raise UsageError(f"{where}: {number} is outside {lo}..{hi}")
    return number


def _domain(value: Any, where: str, *, hostname: bool = False) -> str:
    """A DNS name; `hostname`: a fully qualified host or mail domain name (`is_fqdn`)."""
    text = _str(value, where)
    if hostname and not is_fqdn(text):
        raise UsageError(
            f"{where}: {text!r} is not a fully qualified name (labels of a-z, 0-9 and '-', at least two,"
            " the last alphabetic)"
        )
    if not is_domain_name(text):
        raise UsageError(f"{where}: {text!r} is not a valid domain name")
    return normalize_name(text)


def _ip(value: Any, where: str) -> IPAddress:
    text = _str(value, where)
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise UsageError(f"{where}: {text!r} is not an IP address") from None


def _network(value: Any, where: str) -> IPNetwork:
    text = _str(value, where)
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise UsageError(f"{where}: {text!r} is not a network (CIDR)") from None


def _date(value: Any, where: str) -> date | None:
    value = _resolved(value, where)
    if value is None:
        return None
    if isinstance(value, date):
        return value
    text = _str(value, where)
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{where}: {text!r} is not a date (YYYY-MM-DD)") from None


def _choice(value: Any, where: str, choices: Sequence[str]) -> str:
    text = _str(value, where).strip().lower()
    if text not in choices:
        raise UsageError(f"{where}: {text!r} is not one of {', '.join(choices)}")
    return text


def _uri_list(value: Any, where: str) -> tuple[str, ...]:
    uris = []
    for i, item in enumerate(_list(value, where, scalar_ok=True)):
        uri = _str(item, f"{where}[{i}]").strip()
        if ":" not in uri:
            uri = f"mailto:{uri}"  # a bare address
        if not re.match(r"^(mailto:[^@\s,;]+@[^@\s,;]+|https://[^\s,;]+)$", uri):
            raise UsageError(f"{where}[{i}]: {uri!r} is not a mailto: or https: URI")
        uris.append(uri)
    return tuple(uris)


# ---------------------------------------------------------------------------------------- builders


def _pools(v: _Vars) -> dict[str, Pool]:
    raw = v.get("pools")
    if raw is None:
        return {}
    where = f"{v.where('pools')}: pools"
    if isinstance(raw, list | tuple):  # a plain list of names is accepted too
        for i, name in enumerate(raw):
            if not isinstance(name, str):
                raise UsageError(f"{where}[{i}]: expected a pool name, got {_kind(name)}")
        raw = {name: {} for name in raw}
    pools: dict[str, Pool] = {}
    for name, spec in _mapping(raw, where).items():
        key = f"{where}.{name}"
        if not isinstance(name, str) or not _POOL_NAME.match(name):
            raise UsageError(f"{key}: pool names are letters, digits, '-' and '_'")
        spec = _mapping(spec, key)
        spf_domain = spec.get("spf_domain")
        pools[name] = Pool(name, _domain(spf_domain, f"{key}.spf_domain") if spf_domain else None)
    return pools


def _dmarc(raw: Any, domain: str, where: str) -> Dmarc | None:
    if raw is False:
        return None
    spec = _mapping(raw, where)
    known = {"p", "sp", "rua", "ruf", "adkim", "aspf", "pct", "fo"}
    for key in spec:
        if key not in known:
            raise UsageError(f"{where}.{key}: unknown DMARC setting (known: {', '.join(sorted(known))})")
    rua = _uri_list(spec["rua"], f"{where}.rua") if "rua" in spec else default_rua("dmarc", domain)
    return Dmarc(
        p=_choice(spec.get("p", "none"), f"{where}.p", POLICIES),
        sp=_choice(spec["sp"], f"{where}.sp", POLICIES) if spec.get("sp") is not None else None,
        rua=rua,
        ruf=_uri_list(spec.get("ruf"), f"{where}.ruf"),
        adkim=_choice(spec.get("adkim", "r"), f"{where}.adkim", ("r", "s")),
        aspf=_choice(spec.get("aspf", "r"), f"{where}.aspf", ("r", "s")),
        pct=_int(spec.get("pct", 100), f"{where}.pct", 0, 100),
        fo=_str(spec["fo"], f"{where}.fo") if spec.get("fo") is not None else None,
        rua_default="rua" not in spec,
    )


def _mta_sts(raw: Any, where: str) -> MtaSts | None:
    if raw is None or raw is False:
        return None
    spec = _mapping(raw, where)
    mx = tuple(
        _str(m, f"{where}.mx[{i}]").strip().lower().rstrip(".")
        for i, m in enumerate(_list(spec.get("mx"), f"{where}.mx"))
    )
    for i, m in enumerate(mx):
        if not is_domain_name(m.removeprefix("*."), allow_underscore=False):
            raise UsageError(f"{where}.mx[{i}]: {m!r} is not an MX host name")
    mode = _choice(spec.get("mode", "testing"), f"{where}.mode", ("enforce", "testing", "none"))
    if mode != "none" and not mx:
        raise UsageError(f"{where}.mx: MTA-STS mode {mode} needs at least one MX pattern")
    return MtaSts(mode=mode, mx=mx, max_age=_int(spec.get("max_age", 604800), f"{where}.max_age", 86400, 31557600))



def _selectors(spec: Mapping[str, Any], key: str, field_name: str, taken: list[str]) -> list[str]:
    """A list of DKIM selectors (DNS labels), none twice and none already in `taken` (the other list)."""
    selectors: list[str] = []
    for i, sel in enumerate(_list(spec.get(field_name), f"{key}.{field_name}", scalar_ok=True)):
        selector = _str(sel, f"{key}.{field_name}[{i}]").strip().lower()
        if not is_selector(selector):
            raise UsageError(
                f"{key}.{field_name}[{i}]: {selector!r} is not a valid DKIM selector (DNS labels of a-z, 0-9, '-')"
            )
        if selector in selectors or selector in taken:
            raise UsageError(f"{key}.{field_name}[{i}]: selector {selector!r} is listed twice "
                             "(a selector names one key: RSA in selectors, Ed25519 in ed25519_selectors)")
        selectors.append(selector)
    return selectors


def _signing(spec: Mapping[str, Any], key: str, field_name: str, selectors: list[str]) -> str | None:
    """The selector that signs, when set: one of `selectors`."""
    signing = spec.get(field_name)
    if signing is None:
        return None
    signing = _str(signing, f"{key}.{field_name}").strip().lower()
    if signing not in selectors:
        list_name = field_name.replace("signing_selector", "selectors")
        raise UsageError(f"{key}.{field_name}: {signing!r} is not one of its {list_name}")
    return str(signing)


class _Problems:
    """Every problem of an inventory, each naming its file and key: a part that fails is reported and the
    next part is still checked, so that one run lists them all."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def check(self, fn: Callable[..., _T], *args: Any, default: _T) -> _T:
        try:
            return fn(*args)
        except UsageError as err:
            self.found.append(one_line(str(err)))
            return default


def _sender_domains(v: _Vars, pools: Mapping[str, Pool], problems: _Problems) -> dict[str, SenderDomain]:
    raw = v.get("sender_domains")
    where = f"{v.where('sender_domains')}: sender_domains"
    domains: dict[str, SenderDomain] = {}
    empty: Mapping[str, Any] = {}
    for name, spec in problems.check(_mapping, raw, where, default=empty).items():
        sender = problems.check(_sender_domain, name, spec, where, pools, problems, default=None)
        if sender is not None:
            domains[sender.name] = sender
    return domains


def _pool_name(spec: Mapping[str, Any], key: str, pools: Mapping[str, Pool], what: str) -> str:
    """The `pool` of an entry: present and one of `pools`."""
    if spec.get("pool") is None:
        raise UsageError(f"{key}.pool: missing ({what})")
    pool = _str(spec.get("pool"), f"{key}.pool")
    if pool not in pools:
        raise UsageError(f"{key}.pool: unknown pool {pool!r} (known: {', '.join(sorted(pools)) or 'none'})")
    return pool


_DOMAIN_SETTINGS = ("pool", "selectors", "signing_selector", "ed25519_selectors", "ed25519_signing_selector",
                    "dmarc", "mta_sts", "tls_rpt", "spf_include", "spf_all", "bounce_domain")


def _sender_domain(
    name: Any, spec: Any, where: str, pools: Mapping[str, Pool], problems: _Problems
) -> SenderDomain | None:
    """One sender domain; each of its settings is checked on its own, so that all its problems are listed."""
    domain = _domain(name, where, hostname=True)
    key = f"{where}.{domain}"
    spec = _mapping(spec, key)
    found = len(problems.found)
    for extra in spec:
        if extra not in _DOMAIN_SETTINGS:
            problems.found.append(f"{key}.{extra}: unknown setting (known: {', '.join(sorted(_DOMAIN_SETTINGS))})")
    pool = problems.check(_pool_name, spec, key, pools, "every sender domain sends through one pool", default="")
    no_selectors: list[str] = []
    if not spec.get("selectors"):
        problems.found.append(
            f"{key}.selectors: missing (every sender domain signs with at least one RSA DKIM selector)"
        )
    selectors = problems.check(_selectors, spec, key, "selectors", [], default=no_selectors)
    ed25519_selectors = problems.check(_selectors, spec, key, "ed25519_selectors", selectors, default=no_selectors)
    signing = problems.check(_signing, spec, key, "signing_selector", selectors, default=None)
    ed25519_signing = problems.check(_signing, spec, key, "ed25519_signing_selector", ed25519_selectors, default=None)
    tls_rpt = problems.check(_tls_rpt, spec.get("tls_rpt"), domain, f"{key}.tls_rpt", default=None)
    no_includes: tuple[str, ...] = ()
    includes = problems.check(_spf_includes, spec.get("spf_include"), f"{key}.spf_include", default=no_includes)
    dmarc = problems.check(_dmarc, spec.get("dmarc"), domain, f"{key}.dmarc", default=None)
    mta_sts = problems.check(_mta_sts, spec.get("mta_sts"), f"{key}.mta_sts", default=None)
    spf_all = problems.check(_choice, spec.get("spf_all", DEFAULT_SPF_ALL), f"{key}.spf_all",
                             ("-all", "~all", "?all", "+all"), default=DEFAULT_SPF_ALL)
    bounce = problems.check(_bounce_domain, spec.get("bounce_domain"), domain, f"{key}.bounce_domain",
                            default=None)
    if len(problems.found) > found:
        return None
    return SenderDomain(
        bounce_domain=bounce or None,
        bounce_domain_off=bounce == "",
        name=domain,
        pool=pool,
        selectors=tuple(selectors),
        dmarc=dmarc,
        mta_sts=mta_sts,
        tls_rpt=tls_rpt,
        spf_include=includes,
        signing_selector=signing,
        ed25519_selectors=tuple(ed25519_selectors),
        ed25519_signing_selector=ed25519_signing,
        spf_all=spf_all,
    )


def default_rua(local: str, domain: str) -> tuple[str, ...]:
    """mailto:<local>@<domain>, the DMARC (`dmarc`) or TLS-RPT (`tlsrpt`) report address of a sender domain that
    gives none: `domain` is its bounce domain when the feedback host receives it (reports_to_bounce_domain: the
    feedback host reads the reports there), else the sender domain itself."""
    return (f"mailto:{local}@{domain}",)


def reports_to_bounce_domain(d: SenderDomain) -> SenderDomain:
    """`d` with the DMARC and TLS-RPT report addresses it did not give itself at its bounce domain (an explicit
    `rua` stays as written); `d` itself when it has no bounce domain."""
    bounce = d.bounce_domain
    if not bounce:
        return d
    dmarc, tls_rpt = d.dmarc, d.tls_rpt
    if dmarc is not None and dmarc.rua_default:
        dmarc = replace(dmarc, rua=default_rua("dmarc", bounce))
    if tls_rpt is not None and tls_rpt.rua_default:
        tls_rpt = replace(tls_rpt, rua=default_rua("tlsrpt", bounce))
    return d if (dmarc, tls_rpt) == (d.dmarc, d.tls_rpt) else replace(d, dmarc=dmarc, tls_rpt=tls_rpt)


def default_bounce_domain(domain: str) -> str:
    """The bounce domain of a sender domain that names none, when the fleet has a feedback MX."""
    return f"bounces.{domain}"


def bounce_domains_of(sender_domains: Mapping[str, Any], has_feedback: bool) -> dict[str, str]:
    """Sender domain -> bounce domain, from the raw `sender_domains` variable (already validated by the model):
    `bounce_domain:` when set, none when it is false, else bounces.DOMAIN when the fleet has a feedback MX."""
    out: dict[str, str] = {}
    for name, spec in sender_domains.items():
        domain = normalize_name(str(name))
        raw = spec.get("bounce_domain") if isinstance(spec, Mapping) else None
        if raw is False:
            continue
        if raw:
            out[domain] = normalize_name(str(raw))
        elif has_feedback:
            out[domain] = default_bounce_domain(domain)
    return out


def _bounce_domain(raw: Any, domain: str, where: str) -> str | None:
    """None: the default; "": `false` (no bounce domain); else the name, which must lie under the sender domain so
    that the envelope sender aligns with the From domain under DMARC's relaxed SPF alignment."""
    if raw is None:
        return None
    if raw is False:
        return ""
    name = _domain(raw, where, hostname=True)
    if not name.endswith("." + domain):
        raise UsageError(f"{where}: {name} is not under {domain} (the envelope sender must share the sender "
                         "domain's organizational domain to keep DMARC alignment); use e.g. bounces." + domain)
    return name


def _tls_rpt(raw: Any, domain: str, where: str) -> TlsRpt | None:
    """None: no TLS-RPT record (absent or false); true or a mapping without rua: the default rua."""
    if raw is None or raw is False:
        return None
    tspec = {} if raw is True else _mapping(raw, where)
    if "rua" not in tspec:
        return TlsRpt(default_rua("tlsrpt", domain), rua_default=True)
    return TlsRpt(_uri_list(tspec["rua"], f"{where}.rua"))


def _spf_includes(raw: Any, where: str) -> tuple[str, ...]:
    return tuple(_domain(d, f"{where}[{i}]") for i, d in enumerate(_list(raw, where, scalar_ok=True)))


def _sending_ips(
    host: HostSource, hv: _Vars, pools: Mapping[str, Pool], problems: _Problems
) -> tuple[SendingIp, ...]:
    where = f"{hv.where('sending_ips')}: sending_ips"
    result = []
    empty: list[Any] = []
    for i, item in enumerate(problems.check(_list, hv.get("sending_ips"), where, default=empty)):
        sip = problems.check(_sending_ip, host, hv, item, f"{where}[{i}]", pools, default=None)
        if sip is not None:
            result.append(sip)
    return tuple(result)


def _sending_ip(host: HostSource, hv: _Vars, item: Any, key: str, pools: Mapping[str, Pool]) -> SendingIp:
    spec = _mapping(item, key)
    if "ip" not in spec:
        raise UsageError(f"{key}.ip: missing")
    ip = _ip(spec["ip"], f"{key}.ip")
    pool = _pool_name(spec, key, pools, f"the pool {ip} sends for")
    if spec.get("ptr") is None:
        raise UsageError(f"{key}.ptr: missing (the PTR and HELO name of {ip})")
    ptr = _domain(spec["ptr"], f"{key}.ptr", hostname=True)
    helo = _domain(spec["helo"], f"{key}.helo", hostname=True) if spec.get("helo") is not None else ptr
    return SendingIp(
        ip=ip,
        pool=pool,
        ptr=ptr,
        host=host.name,
        helo=helo,
        warmup_start=_date(spec.get("warmup_start"), f"{key}.warmup_start"),
        source=hv.where("sending_ips"),
        weight=_int(spec.get("weight", 1), f"{key}.weight", 1, 100),
    )


def _vetted(v: _Vars, pools: Mapping[str, Pool]) -> dict[str, tuple[VettedIp, ...]]:
    where = f"{v.where('vetted_ips')}: vetted_ips"
    vetted: dict[str, tuple[VettedIp, ...]] = {}
    for pool, items in _mapping(v.get("vetted_ips"), where).items():
        if pool not in pools:
            raise UsageError(f"{where}.{pool}: unknown pool {pool!r}")
        entries = []
        for i, item in enumerate(_list(items, f"{where}.{pool}")):
            spec = _mapping(item, f"{where}.{pool}[{i}]")
            ip = _ip(spec.get("ip"), f"{where}.{pool}[{i}].ip")
            entries.append(VettedIp(ip, str(pool), {k: val for k, val in spec.items() if k != "ip"}))
        vetted[str(pool)] = tuple(entries)
    return vetted


def _dns_update(v: _Vars) -> DnsUpdateSettings | None:
    server = v.get("dns_update_server")
    if server is None or server == "":
        return None
    server_text = _str(server, f"{v.where('dns_update_server')}: dns_update_server").strip()
    port = _int(v.get("dns_update_port", 53), f"{v.where('dns_update_port')}: dns_update_port", 1, 65535)
    key = None
    if v.get("dns_tsig_secret") is not None or v.get("dns_tsig_key_name") is not None:
        for needed in ("dns_tsig_key_name", "dns_tsig_secret"):
            if v.get(needed) is None:
                raise v.fail(needed, "missing (TSIG needs both dns_tsig_key_name and dns_tsig_secret)")
        secret = _str(v.get("dns_tsig_secret"), f"{v.where('dns_tsig_secret')}: dns_tsig_secret").strip()
        try:
            base64.b64decode(secret, validate=True)
        except (binascii.Error, ValueError):
            raise v.fail("dns_tsig_secret", "not valid base64 (value not shown)") from None
        key = TsigKey(
            name=_domain(v.get("dns_tsig_key_name"), f"{v.where('dns_tsig_key_name')}: dns_tsig_key_name"),
            algorithm=_choice(
                v.get("dns_tsig_algorithm", "hmac-sha256"),
                f"{v.where('dns_tsig_algorithm')}: dns_tsig_algorithm",
                TSIG_ALGORITHMS,
            ),
            secret=secret,
        )
    return DnsUpdateSettings(server=server_text, port=port, key=key)


def _resolver(v: _Vars) -> ResolverSettings:
    where = f"{v.where('dns_resolver')}: dns_resolver"
    servers = tuple(
        str(_ip(s, f"{where}[{i}]")) for i, s in enumerate(_list(v.get("dns_resolver"), where, scalar_ok=True))
    )
    port = _int(v.get("dns_resolver_port", 53), f"{v.where('dns_resolver_port')}: dns_resolver_port", 1, 65535)
    return ResolverSettings(servers, port)


def build_inventory(path: Path, global_vars: Sequence[VarSource], hosts: Sequence[HostSource]) -> Inventory:
    """Validate the variables and build the model. Raises InventoryError (a UsageError) listing every problem,
    each naming its file and key; its message is the first one (one line)."""
    problems = _Problems()
    inventory = _build(path, global_vars, hosts, problems)
    if problems.found:
        raise InventoryError(problems.found)
    return inventory


def one_line(text: str) -> str:
    """A message quoting user input, kept on one line (control characters escaped)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _bool(value: Any, where: str) -> bool:
    value = _resolved(value, where)
    if isinstance(value, bool):
        return value
    text = _str(value, where).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise UsageError(f"{where}: expected true or false, got {text!r}")


def _check_host(hsrc: HostSource, hv: _Vars, ips: tuple[SendingIp, ...], vetted: Mapping[str, Any]) -> None:
    """The rules on a sender host itself: its own name (the base role's FQDN: the inventory name when it has
    a dot, else <name>.<host_domain>) and, unless sending_ips_require_vetted is false, every sending IP vetted
    for its pool (`sendfleet vet --admit` put it in vetted_ips)."""
    if "senders" not in hsrc.groups:
        return
    if "." in hsrc.name:
        if not is_fqdn(hsrc.name):
            raise UsageError(f"hosts: {hsrc.name}: not a fully qualified host name (labels of a-z, 0-9 and '-')")
    else:
        domain = hv.get("host_domain")
        if domain is None or domain == "":
            raise hv.fail("host_domain", f"missing: sender {hsrc.name} needs it for its name {hsrc.name}.<host_domain>")
        where = f"{hv.where('host_domain')}: host_domain"
        _domain(f"{hsrc.name}.{_str(domain, where)}", f"{where} (sender {hsrc.name}'s name)", hostname=True)
    if _bool(hv.get("sending_ips_require_vetted", True), f"{hv.where('sending_ips_require_vetted')}: "
                                                          "sending_ips_require_vetted"):
        for sip in ips:
            pool = vetted.get(sip.pool, ())
            if not any(entry.ip == sip.ip for entry in pool):
                raise UsageError(
                    f"{sip.source}: sending_ips: {sip.ip} is not in vetted_ips[{sip.pool}]"
                    " (admit it with `sendfleet vet --admit`, or set sending_ips_require_vetted: false)"
                )


def _build(
    path: Path, global_vars: Sequence[VarSource], hosts: Sequence[HostSource], problems: _Problems
) -> Inventory:
    v = _Vars(global_vars)
    no_pools: dict[str, Pool] = {}
    pools = problems.check(_pools, v, default=no_pools)
    domains = _sender_domains(v, pools, problems)

    zones_where = f"{v.where('dns_zones')}: dns_zones"
    no_zones: list[Any] = []
    zone_names: list[str | None] = [
        problems.check(_domain, z, f"{zones_where}[{i}]", default=None)
        for i, z in enumerate(problems.check(_list, v.get("dns_zones"), zones_where, default=no_zones))
    ]
    zones = tuple(z for z in zone_names if z is not None)

    gate_raw = v.get("rdns_gate", "enforce")
    gate_raw = "off" if gate_raw is False else gate_raw
    gate = problems.check(_choice, gate_raw, f"{v.where('rdns_gate')}: rdns_gate", ("enforce", "warn", "off"),
                          default="enforce")
    dkim_raw = v.get("dkim_keys_dir")
    dkim_dir = path / "dkim"
    if dkim_raw is not None:
        dkim_text = problems.check(_str, dkim_raw, f"{v.where('dkim_keys_dir')}: dkim_keys_dir", default=None)
        if dkim_text is not None:
            dkim_path = Path(dkim_text)
            dkim_dir = dkim_path if dkim_path.is_absolute() else path / dkim_path
    no_vetted: dict[str, tuple[VettedIp, ...]] = {}
    vetted = problems.check(_vetted, v, pools, default=no_vetted)

    built_hosts: dict[str, Host] = {}
    seen: dict[IPAddress, SendingIp] = {}
    for hsrc in hosts:
        hv = _Vars([*global_vars, *hsrc.vars])
        ips = _sending_ips(hsrc, hv, pools, problems)
        for sip in ips:
            if sip.ip in seen:
                other = seen[sip.ip]
                problems.found.append(
                    f"{sip.source}: sending_ips: {sip.ip} is also assigned to host {other.host} ({other.source})"
                )
            seen[sip.ip] = sip
        problems.check(_check_host, hsrc, hv, ips, vetted, default=None)
        built_hosts[hsrc.name] = Host(hsrc.name, hsrc.groups, ips, dict(hv.values))

    nets: dict[str, tuple[IPNetwork, ...]] = {}
    for key in ("app_networks", "admin_networks"):
        where = f"{v.where(key)}: {key}"
        no_nets: list[Any] = []
        parsed: list[IPNetwork | None] = [
            problems.check(_network, n, f"{where}[{i}]", default=None)
            for i, n in enumerate(problems.check(_list, v.get(key), where, default=no_nets))
        ]
        nets[key] = tuple(n for n in parsed if n is not None)
    if v.get("postfix_sasl"):
        problems.found.append(
            f"{v.where('postfix_sasl')}: postfix_sasl: the senders do not offer SASL authentication; submit from"
            " app_networks (an authenticated submission service of yours can relay from there)"
        )
    for gone in ("postfix_transport_limits", "postfix_providers", "dnsbl_monitor_providers"):
        if v.get(gone) is not None:
            problems.found.append(
                f"{v.where(gone)}: {gone}: replaced by provider_classes (limits per sending IP and provider class,"
                " docs/provider-classes.md); move its values there"
            )
    if not nets["admin_networks"] and any("senders" in h.groups for h in hosts) and v.get("admin_networks") is None:
        problems.found.append(
            f"{v.where('admin_networks')}: admin_networks: missing (the networks that may SSH to the senders;"
            " the base role's firewall would lock everyone out)"
        )

    no_mx: tuple[str, ...] = ()
    feedback_mx = problems.check(_feedback_mx, v, global_vars, hosts, default=no_mx)
    if feedback_mx:  # the feedback host receives the bounce domains' mail, the reports included
        domains = {
            name: reports_to_bounce_domain(
                d if d.bounce_domain or d.bounce_domain_off else replace(d, bounce_domain=default_bounce_domain(name)))
            for name, d in domains.items()
        }
    return Inventory(
        feedback_mx=feedback_mx,
        classes=problems.check(_classes, v, default={}),
        path=path,
        hosts=built_hosts,
        pools=pools,
        sender_domains=domains,
        dns_zones=zones,
        dns_update=problems.check(_dns_update, v, default=None),
        resolver=problems.check(_resolver, v, default=ResolverSettings(())),
        rdns_gate="warn" if gate == "warn" else "off" if gate == "off" else "enforce",
        dkim_dir=dkim_dir,
        dns_ttl=problems.check(_int, v.get("dns_ttl", DEFAULT_TTL), f"{v.where('dns_ttl')}: dns_ttl", 1, 604800,
                               default=DEFAULT_TTL),
        app_networks=nets["app_networks"],
        admin_networks=nets["admin_networks"],
        vetted_ips=vetted,
        vars=dict(v.values),
    )


def _feedback_mx(v: _Vars, global_vars: Sequence[VarSource], hosts: Sequence[HostSource]) -> tuple[str, ...]:
    """`feedback_mx`, else the FQDNs of the hosts of group `feedback`."""
    raw = v.get("feedback_mx")
    where = f"{v.where('feedback_mx')}: feedback_mx"
    if raw is not None:
        names = _list(raw, where, scalar_ok=True)
        return tuple(_domain(n, f"{where}[{i}]", hostname=True) for i, n in enumerate(names))
    out: list[str] = []
    for h in hosts:
        if "feedback" not in h.groups:
            continue
        if "." in h.name:
            out.append(_domain(h.name, f"hosts: {h.name}", hostname=True))
            continue
        hv = _Vars([*global_vars, *h.vars])
        domain = hv.get("host_domain")
        if not domain:
            raise hv.fail("host_domain", f"missing: feedback host {h.name} needs it for its name (the bounce "
                          "domains' MX), or set feedback_mx")
        out.append(_domain(f"{h.name}.{domain}", f"{hv.where('host_domain')}: host_domain", hostname=True))
    return tuple(out)


def _classes(v: _Vars) -> dict[str, shaping.ProviderClass]:
    """The provider classes and their rules: the shipped default with `provider_classes` merged over it."""
    override = v.get("provider_classes")
    if override is not None and not isinstance(override, Mapping):
        raise UsageError(f"{v.where('provider_classes')}: provider_classes: expected a mapping of class name -> "
                         f"class, got {_kind(override)}")
    where = f"{v.where('provider_classes')}: provider_classes" if override is not None else "provider_classes"
    rules_where = f"{v.where('shaping_rules')}: shaping_rules"
    try:
        return shaping.parse_classes(shaping.merge(shaping.default_data(), override), where,
                                     v.get("shaping_rules"), rules_where)
    except shaping.ShapingError as err:
        raise UsageError(str(err)) from None


def zone_for(name: str, zones: Sequence[str]) -> str | None:
    """The longest zone among `zones` that contains `name` (None: not a zone we publish in)."""
    name = normalize_name(name)
    best: str | None = None
    for zone in zones:
        z = normalize_name(zone)
        if (name == z or name.endswith("." + z)) and (best is None or len(z) > len(best)):
            best = z
    return best


def iter_pool_networks(ips: Sequence[SendingIp]) -> Iterator[IPNetwork]:
    """The pool's addresses as the fewest CIDR blocks covering exactly them (IPv4 first)."""
    v4 = sorted({s.ip for s in ips if isinstance(s.ip, ipaddress.IPv4Address)})
    v6 = sorted({s.ip for s in ips if isinstance(s.ip, ipaddress.IPv6Address)})
    yield from ipaddress.collapse_addresses(ipaddress.IPv4Network(a) for a in v4)
    yield from ipaddress.collapse_addresses(ipaddress.IPv6Network(a) for a in v6)
