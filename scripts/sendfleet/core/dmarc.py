"""DMARC (RFC 7489), pure: the one parser of DMARC records, organizational domains, policy discovery, identifier
alignment, and the record linter of `sendfleet dns check`.

Organizational domain (RFC 7489 3.2): the public suffix of a name plus one label, from the Public Suffix List
shipped by the pinned `publicsuffixlist` package. Both sections of the list are used, ICANN and private (as
OpenDMARC and the receivers that load the whole list do): `a.github.io` and `b.github.io` belong to different
owners, so they are different organizations and never align in relaxed mode. A name that is not under a known
suffix uses its last label as the suffix (the list's default rule `*`): the lab's `mta1.shop.test` belongs to
`shop.test`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from publicsuffixlist import PublicSuffixList

from sendfleet.core.dkim import parse_tags
from sendfleet.core.findings import Finding

POLICIES = ("none", "quarantine", "reject")
_URI = re.compile(r"^(mailto:[^@\s]+@[^@\s!]+|https?://\S+)(![0-9]+[kmgt]?)?$", re.IGNORECASE)
_VERSION = re.compile(r"^\s*v\s*=\s*dmarc1(?![0-9a-z_])", re.IGNORECASE)


class DmarcError(ValueError):
    """No DMARC policy applies: no record, several records, or one that receivers cannot use (the message says
    which)."""


@dataclass(frozen=True)
class DmarcRecord:
    """A parsed DMARC record: the effective values (defaults of RFC 7489 6.3 filled in) and, in `problems`,
    every optional tag whose value is invalid (then its default is used)."""

    p: str
    sp: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)  # as published, names lowercased, in order
    problems: tuple[str, ...] = ()


def is_dmarc(text: str) -> bool:
    """The TXT value claims to be a DMARC record: it starts with the version tag (RFC 7489 6.6.3 discards the
    others). Case and spaces around `=` are forgiven here so that `v=dmarc1` is reported, not ignored."""
    return bool(_VERSION.match(text))


def parse(text: str) -> DmarcRecord:
    """The one DMARC record parser. DmarcError when the record is unusable (tag-list syntax, `v=DMARC1`
    not first, `p=` missing, not second or not a policy); invalid optional tags are listed in `problems`."""
    try:
        raw = parse_tags(text)
    except ValueError as err:
        raise DmarcError(f"syntax: {err}") from None
    tags: dict[str, str] = {}
    for name, value in raw.items():
        key = name.lower()
        if key in tags:
            raise DmarcError(f"syntax: tag {key!r} appears twice")
        tags[key] = value
    names = list(tags)
    if names[:1] != ["v"] or tags["v"] != "DMARC1":
        raise DmarcError("v=DMARC1 must come first")
    if names[1:2] != ["p"]:
        raise DmarcError("p= must be present and follow v=DMARC1")
    p = tags["p"].lower()
    if p not in POLICIES:
        raise DmarcError(f"p={tags['p']}: not none, quarantine or reject")
    problems: list[str] = []
    sp: str | None = None
    if "sp" in tags:
        if tags["sp"].lower() in POLICIES:
            sp = tags["sp"].lower()
        else:
            problems.append(f"sp={tags['sp']}: not none, quarantine or reject")
    modes = {}
    for tag in ("adkim", "aspf"):
        modes[tag] = tags.get(tag, "r").lower()
        if modes[tag] not in ("r", "s"):
            problems.append(f"{tag}={tags[tag]}: alignment must be r or s")
            modes[tag] = "r"
    pct = 100
    if "pct" in tags:
        if tags["pct"].isdigit() and int(tags["pct"]) <= 100:
            pct = int(tags["pct"])
        else:
            problems.append(f"pct={tags['pct']}: not 0..100")
    uris: dict[str, tuple[str, ...]] = {}
    for tag in ("rua", "ruf"):
        good = []
        for uri in filter(None, (u.strip() for u in tags.get(tag, "").split(","))):
            if _URI.match(uri):
                good.append(uri)
            else:
                problems.append(f"{tag}: {uri!r} is not a mailto:/https: URI")
        uris[tag] = tuple(good)
    return DmarcRecord(
        p=p,
        sp=sp,
        adkim=modes["adkim"],
        aspf=modes["aspf"],
        pct=pct,
        rua=uris["rua"],
        ruf=uris["ruf"],
        tags=tags,
        problems=tuple(problems),
    )


def policy(records: Sequence[str], name: str) -> DmarcRecord:
    """The policy of the DMARC records published at `name` (the `is_dmarc` TXT values there): exactly one must be
    there and usable (RFC 7489 6.6.3), else DmarcError says why none applies."""
    if not records:
        raise DmarcError(f"no DMARC record at {name}")
    if len(records) > 1:
        raise DmarcError(f"{len(records)} DMARC records at {name}: receivers apply none")
    try:
        return parse(records[0])
    except DmarcError as err:
        raise DmarcError(f"{name}: {err}") from None


# ----------------------------------------------------------------------- organizational domain, alignment


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList(only_icann=False, accept_unknown=True)


def _name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def org_domain(name: str) -> str:
    """The organizational domain (RFC 7489 3.2): public suffix + one label (`mailer.evil.co.uk` -> `evil.co.uk`).
    A name that is itself a public suffix (or not a domain name) is its own organizational domain."""
    domain = _name(name)
    if not domain:
        return ""
    org = _psl().privatesuffix(domain)
    return str(org) if org else domain


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """Identifier alignment (RFC 7489 3.1): strict = the same name, relaxed = the same organizational domain."""
    a, b = _name(identifier), _name(from_domain)
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return org_domain(a) == org_domain(b)


def discovery_names(from_domain: str) -> list[str]:
    """Where a receiver looks for the policy (RFC 7489 6.6.3): `_dmarc.<From domain>`, then `_dmarc.<its
    organizational domain>` when that is another name."""
    domain = _name(from_domain)
    if not domain:
        return []
    names = [f"_dmarc.{domain}"]
    org = org_domain(domain)
    if org != domain:
        names.append(f"_dmarc.{org}")
    return names


@dataclass(frozen=True)
class Discovery:
    """The outcome of policy discovery: the name the DMARC records were found at, and those records."""

    name: str  # where they were found; when none was: the first name asked ('' for an empty From domain)
    records: tuple[str, ...] = ()  # the DMARC records published at `name` (more than one: none applies)

    @property
    def record(self) -> str | None:
        return self.records[0] if len(self.records) == 1 else None


def discover(from_domain: str, txt: Callable[[str], Sequence[str]]) -> Discovery:
    """Policy discovery (RFC 7489 6.6.3) with `txt(name)` -> the TXT values at a name (it may raise: lookup
    errors are the caller's). The first name that publishes any DMARC record ends the search."""
    names = discovery_names(from_domain)
    for name in names:
        found = tuple(v for v in txt(name) if is_dmarc(v))
        if found:
            return Discovery(name, found)
    return Discovery(names[0] if names else "")


# ------------------------------------------------------------------------------------------- linter


def lint(domain: str, txt_values: Sequence[str]) -> list[Finding]:
    """Lint the TXT values at _dmarc.<domain>."""
    check = "dmarc"
    try:
        record = policy([v for v in txt_values if is_dmarc(v)], f"_dmarc.{domain}")
    except DmarcError as err:
        return [Finding("error", domain, check, str(err))]
    findings = [Finding("error", domain, check, problem) for problem in record.problems]
    if record.pct < 100:
        findings.append(Finding("warning", domain, check, f"pct={record.pct}: policy applies to part of the mail"))
    for tag, uris in (("rua", record.rua), ("ruf", record.ruf)):
        for uri in uris:
            if uri.lower().startswith("mailto:"):
                target = uri.split("@", 1)[1].split("!", 1)[0].lower()
                if target != domain and not target.endswith("." + domain) and not domain.endswith("." + target):
                    findings.append(
                        Finding(
                            "warning",
                            domain,
                            check,
                            f"{tag} goes to {target}: it must publish {domain}._report._dmarc.{target} (RFC 7489 7.1)",
                        )
                    )
    if "rua" not in record.tags:
        findings.append(Finding("warning", domain, check, "no rua=: you will receive no aggregate reports"))
    if not any(f.status == "error" for f in findings):
        note = " (monitoring only)" if record.p == "none" else ""
        align = f"adkim={record.adkim}, aspf={record.aspf}"
        findings.append(Finding("ok", domain, check, f"DMARC p={record.p}{note}, {align}"))
    return findings
