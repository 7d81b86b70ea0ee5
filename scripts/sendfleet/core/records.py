"""The record plan: every DNS record the fleet needs, derived from the inventory (pure).

    plan = plan_records(inv, dkim_pems)   # dkim_pems: (domain, selector) -> PEM bytes, or None if missing

Records (one `PlannedRecord` per owned RRset):
  PTR   <reverse of each sending IP>        -> its ptr name
  A/AAAA <ptr name>                         -> the sending IPs carrying that name
  TXT   <pool spf_domain> (optional)        -> v=spf1 ip4:/ip6: of the pool -all
  TXT   <sender domain>  (only the v=spf1 value is owned; other TXT at the apex stay)
                                            -> v=spf1 ip4:/ip6: of its pool (or include:) [include:..] ~all
  TXT   <selector>._domainkey.<domain>      -> v=DKIM1; k=rsa; p=<public key of the controller's private key>
  TXT   _dmarc.<domain>                     -> v=DMARC1; p=none; rua=...; adkim=r; aspf=r
  TXT   _mta-sts.<domain>, _smtp._tls.<domain> when mta_sts / tls_rpt are set
Each record belongs to the longest zone of `dns_zones` that contains it; records outside those zones are
published by someone else ("ask your provider": typically the PTRs of rented IPs). A record that cannot be
planned (missing DKIM key, SPF over the lookup limit) is kept with `error` set and no values: it is neither
published nor deleted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sendfleet.core import spf
from sendfleet.core.dkim import DkimKeyError, public_from_private_pem
from sendfleet.core.findings import Finding
from sendfleet.core.inventory import Inventory, SendingIp, iter_pool_networks, zone_for
from sendfleet.core.lookup import LookupResult
from sendfleet.errors import UsageError

TXT_CHUNK = 255


@dataclass(frozen=True)
class PlannedRecord:
    name: str  # owner name, lower case, no trailing dot
    rtype: str  # PTR, A, AAAA, TXT, MX
    ttl: int
    values: tuple[str, ...]  # presentation values; TXT: the logical (unsplit) string
    purpose: str  # ptr, address, spf, spf-pool, spf-bounce, bounce-mx, dkim, dmarc, mta-sts, tls-rpt
    subject: str  # the IP, domain, domain/selector or pool it is for
    zone: str | None  # the zone we publish it in; None: outside our zones (ask the provider / DNS host)
    match: str | None = None  # TXT prefix owned in a shared RRset ("v=spf1"); None: the whole RRset
    error: str | None = None  # why it cannot be planned (no values then)
    notes: tuple[str, ...] = field(default=())

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.rtype)

    @property
    def publishable(self) -> bool:
        return self.zone is not None and self.error is None

    def rdata_texts(self) -> list[str]:
        """Values in zone-file presentation (TXT split into quoted <=255-byte strings)."""
        if self.rtype == "TXT":
            return [txt_presentation(v) for v in self.values]
        if self.rtype in ("PTR", "CNAME", "NS"):
            return [f"{v}." for v in self.values]
        if self.rtype == "MX":  # "10 fb.example.net" -> "10 fb.example.net."
            return [f"{v}." for v in self.values]
        return list(self.values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "name": self.name,
            "type": self.rtype,
            "ttl": self.ttl,
            "values": list(self.values),
            "rdata": self.rdata_texts(),
            "purpose": self.purpose,
            "subject": self.subject,
            "publish": "rfc2136" if self.zone is not None else "provider",
            "match": self.match,
            "error": self.error,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Plan:
    records: tuple[PlannedRecord, ...]
    problems: tuple[Finding, ...]  # errors and warnings found while planning
    extras: Mapping[str, str] = field(default_factory=dict)  # e.g. MTA-STS policy texts to serve over HTTPS

    def publishable(self) -> list[PlannedRecord]:
        return [r for r in self.records if r.publishable]

    def outside(self) -> list[PlannedRecord]:
        return [r for r in self.records if r.zone is None and r.error is None]

    def errors(self) -> list[Finding]:
        return [p for p in self.problems if p.status == "error"]

    def lookup(self, name: str, rdtype: str) -> LookupResult:
        """The plan as a resolver would answer it (for offline SPF counting); unknown outside it."""
        found = [r for r in self.records if r.name == name and r.rtype == rdtype and r.error is None]
        if not found:
            return LookupResult("unknown", detail="not in the plan")
        return LookupResult("ok", tuple(v for r in found for v in r.values))

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": [r.as_dict() for r in self.records],
            "problems": [p.as_dict() for p in self.problems],
            "mta_sts_policies": dict(self.extras),
        }


def records_from_json(data: Any, where: str) -> tuple[PlannedRecord, ...]:
    """The records of a JSON plan (`json_text`, i.e. `sendfleet dns plan --format json`), read back; `where`
    names the file in the UsageError a malformed record raises."""
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise UsageError(f"{where}: records: missing (not the output of 'sendfleet dns plan --format json'?)")
    records = []
    for i, raw in enumerate(data["records"]):
        at = f"{where}: records[{i}]"
        if not isinstance(raw, dict):
            raise UsageError(f"{at}: expected a mapping, got {type(raw).__name__}")

        def text(key: str, optional: bool = False, raw: dict[str, Any] = raw, at: str = at) -> str | None:
            value = raw.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, str) or not value:
                raise UsageError(f"{at}.{key}: expected a non-empty string, got {value!r}")
            return value

        values = raw.get("values")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise UsageError(f"{at}.values: expected a list of strings, got {values!r}")
        ttl = raw.get("ttl")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
            raise UsageError(f"{at}.ttl: expected a TTL in seconds, got {ttl!r}")
        records.append(
            PlannedRecord(
                name=str(text("name")),
                rtype=str(text("type")).upper(),
                ttl=ttl,
                values=tuple(values),
                purpose=str(text("purpose")),
                subject=str(text("subject")),
                zone=text("zone", optional=True),
                match=text("match", optional=True),
                error=text("error", optional=True),
            )
        )
    return tuple(records)


def txt_chunks(value: str) -> list[bytes]:
    """A TXT value as character-strings of at most 255 bytes (never splitting a UTF-8 sequence)."""
    raw = value.encode()
    chunks = []
    while raw:
        cut = min(TXT_CHUNK, len(raw))
        while cut < len(raw) and (raw[cut] & 0xC0) == 0x80:
            cut -= 1
        chunks.append(raw[:cut])
        raw = raw[cut:]
    return chunks or [b""]


def txt_presentation(value: str) -> str:
    parts = []
    for chunk in txt_chunks(value):
        text = chunk.decode()
        parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return " ".join(parts)


def _ptr_records(inv: Inventory, ips: Sequence[SendingIp]) -> list[PlannedRecord]:
    records = []
    for sip in ips:
        name = sip.ip.reverse_pointer
        records.append(
            PlannedRecord(name, "PTR", inv.dns_ttl, (sip.ptr,), "ptr", str(sip.ip), zone_for(name, inv.dns_zones))
        )
    by_name: dict[tuple[str, str], list[str]] = {}
    for sip in ips:
        rtype = "A" if sip.ip.version == 4 else "AAAA"
        by_name.setdefault((sip.ptr, rtype), []).append(str(sip.ip))
    for (name, rtype), addrs in by_name.items():
        records.append(
            PlannedRecord(
                name,
                rtype,
                inv.dns_ttl,
                tuple(sorted(set(addrs))),
                "address",
                name,
                zone_for(name, inv.dns_zones),
            )
        )
    return records


def plan_records(inv: Inventory, dkim_pems: Mapping[tuple[str, str], bytes | None]) -> Plan:
    """Plan every record; `dkim_pems` holds the controller's private key of each (domain, selector)."""
    problems: list[Finding] = []
    records = _ptr_records(inv, inv.sending_ips())
    extras: dict[str, str] = {}
    zones = inv.dns_zones

    for pool in inv.pools.values():
        ips = inv.pool_ips(pool.name)
        if not ips and inv.domains_of_pool(pool.name):
            problems.append(
                Finding(
                    "warning",
                    pool.name,
                    "pool",
                    f"pool {pool.name} has no sending IPs: its SPF authorizes none",
                )
            )
        if pool.spf_domain:
            value = spf.build(list(iter_pool_networks(ips)), (), "-all")
            records.append(
                PlannedRecord(
                    pool.spf_domain,
                    "TXT",
                    inv.dns_ttl,
                    (value,),
                    "spf-pool",
                    pool.name,
                    zone_for(pool.spf_domain, zones),
                    match="v=spf1",
                )
            )

    for domain in inv.sender_domains.values():
        pool = inv.pools[domain.pool]
        if pool.spf_domain:
            value = spf.build([], (pool.spf_domain, *domain.spf_include), domain.spf_all)
        else:
            value = spf.build(list(iter_pool_networks(inv.pool_ips(pool.name))), domain.spf_include, domain.spf_all)
        records.append(
            PlannedRecord(
                domain.name,
                "TXT",
                inv.dns_ttl,
                (value,),
                "spf",
                domain.name,
                zone_for(domain.name, zones),
                match="v=spf1",
            )
        )
        if domain.bounce_domain:
            # the envelope sender's domain (VERP return path): SPF is checked there, its MX takes the DSNs
            bounce = domain.bounce_domain
            records.append(PlannedRecord(bounce, "TXT", inv.dns_ttl, (value,), "spf-bounce", domain.name,
                                         zone_for(bounce, zones), match="v=spf1"))
            mx = tuple(f"{10 * (i + 1)} {name}" for i, name in enumerate(inv.feedback_mx))
            records.append(PlannedRecord(bounce, "MX", inv.dns_ttl, mx, "bounce-mx", domain.name,
                                         zone_for(bounce, zones)))

        for sel in domain.all_selectors:
            name = f"{sel}._domainkey.{domain.name}"
            subject = f"{domain.name}/{sel}"
            pem = dkim_pems.get((domain.name, sel))
            path = inv.dkim_key_path(domain.name, sel)
            error = None
            values: tuple[str, ...] = ()
            if pem is None:
                error = f"DKIM key file missing: {path} (no record planned; sendfleet does not invent keys)"
            else:
                try:
                    public = public_from_private_pem(pem)
                    values = (public.record(),)
                    wanted = domain.key_type(sel)
                    if public.key_type != wanted:
                        listed = "ed25519_selectors" if wanted == "ed25519" else "selectors"
                        error = (f"{path}: a {public.key_type.upper()} key, but {sel} is listed in {listed} "
                                 f"(which holds {wanted.upper()} keys)")
                        values = ()
                    elif public.key_type == "rsa" and public.bits < 1024:
                        error = f"{path}: RSA key of {public.bits} bits (at least 1024 needed)"
                        values = ()
                    elif public.key_type == "rsa" and public.bits < 2048:
                        problems.append(
                            Finding(
                                "warning",
                                subject,
                                "dkim",
                                f"{path}: RSA key of {public.bits} bits (2048 recommended)",
                            )
                        )
                except DkimKeyError as err:
                    error = f"{path}: {err}"
            if error:
                problems.append(Finding("error", subject, "dkim", error))
            records.append(
                PlannedRecord(name, "TXT", inv.dns_ttl, values, "dkim", subject, zone_for(name, zones), error=error)
            )

        if domain.dmarc is not None:
            name = f"_dmarc.{domain.name}"
            records.append(
                PlannedRecord(
                    name,
                    "TXT",
                    inv.dns_ttl,
                    (domain.dmarc.record(),),
                    "dmarc",
                    domain.name,
                    zone_for(name, zones),
                )
            )
        if domain.mta_sts is not None:
            name = f"_mta-sts.{domain.name}"
            records.append(
                PlannedRecord(
                    name,
                    "TXT",
                    inv.dns_ttl,
                    (domain.mta_sts.record(),),
                    "mta-sts",
                    domain.name,
                    zone_for(name, zones),
                )
            )
            extras[domain.name] = domain.mta_sts.policy_text()
            problems.append(
                Finding(
                    "warning" if domain.mta_sts.mode == "enforce" else "ok",
                    domain.name,
                    "mta-sts",
                    f"serve the policy at https://mta-sts.{domain.name}/.well-known/mta-sts.txt (see the JSON plan)",
                )
            )
        if domain.tls_rpt is not None:
            name = f"_smtp._tls.{domain.name}"
            records.append(
                PlannedRecord(
                    name,
                    "TXT",
                    inv.dns_ttl,
                    (domain.tls_rpt.record(),),
                    "tls-rpt",
                    domain.name,
                    zone_for(name, zones),
                )
            )

    plan = Plan(tuple(records), tuple(problems), extras)
    return _check_spf_limits(plan)


def _check_spf_limits(plan: Plan) -> Plan:
    """RFC 7208 limits on the planned SPF records, following includes the plan itself publishes."""
    records: list[PlannedRecord] = []
    problems = list(plan.problems)
    for rec in plan.records:
        if rec.purpose in ("spf", "spf-pool") and rec.error is None:
            counted = spf.count(rec.name, rec.values[0], plan.lookup)
            error = None
            if counted.lookups > spf.MAX_LOOKUPS:
                error = f"SPF needs {counted.lookups} DNS lookups (RFC 7208 allows {spf.MAX_LOOKUPS})"
            elif counted.void > spf.MAX_VOID_LOOKUPS:
                error = f"SPF has {counted.void} void lookups (RFC 7208 allows {spf.MAX_VOID_LOOKUPS})"
            size = len(rec.values[0].encode())
            if error:
                problems.append(Finding("error", rec.subject, "spf", error))
                rec = PlannedRecord(
                    rec.name, rec.rtype, rec.ttl, (), rec.purpose, rec.subject, rec.zone, rec.match, error
                )
            else:
                if size > spf.RECOMMENDED_MAX_BYTES:
                    problems.append(
                        Finding(
                            "warning",
                            rec.subject,
                            "spf",
                            f"SPF record is {size} bytes (over 450): give the pool an spf_domain",
                        )
                    )
                rec = PlannedRecord(
                    rec.name,
                    rec.rtype,
                    rec.ttl,
                    rec.values,
                    rec.purpose,
                    rec.subject,
                    rec.zone,
                    rec.match,
                    None,
                    (*counted.notes, f"{counted.lookups} lookup(s) counted offline"),
                )
        records.append(rec)
    return Plan(tuple(records), tuple(problems), plan.extras)


def zone_text(plan: Plan, inventory: str = "") -> str:
    """The plan as zone-file snippets, grouped by zone, then what to ask others to publish, then problems."""
    out = [f"; sendfleet dns plan{' for ' + inventory if inventory else ''}"]
    width = min(max((len(r.name) for r in plan.records), default=20) + 1, 40)
    zones = sorted({r.zone for r in plan.records if r.zone is not None})

    def line(rec: PlannedRecord, value: str) -> str:
        return f"{rec.name + '.':<{width}} {rec.ttl:>6} IN {rec.rtype:<5} {value}"

    for zone in zones:
        out.append("")
        out.append(f"; ---- zone {zone} (published by `sendfleet dns apply`)")
        for rec in plan.records:
            if rec.zone != zone:
                continue
            if rec.error:
                out.append(f"; {rec.name}. {rec.rtype}: NOT PLANNED: {rec.error}")
                continue
            for value in rec.rdata_texts():
                out.append(line(rec, value))
    outside = [r for r in plan.records if r.zone is None]
    if outside:
        out.append("")
        out.append("; ---- outside the zones you publish in (dns_zones): ask your IP provider / DNS host for these")
        for rec in outside:
            if rec.error:
                out.append(f"; {rec.name}. {rec.rtype}: NOT PLANNED: {rec.error}")
                continue
            for value in rec.rdata_texts():
                out.append(line(rec, value))
    for domain, policy in sorted(plan.extras.items()):
        out.append("")
        out.append(f"; ---- MTA-STS policy to serve at https://mta-sts.{domain}/.well-known/mta-sts.txt")
        out += [f";   {ln}" for ln in policy.strip().splitlines()]
    shown = [p for p in plan.problems if p.status != "ok"]
    if shown:
        out.append("")
        out.append("; ---- problems")
        out += [f"; {p.status}: {p.subject}: {p.message}" for p in shown]
    return "\n".join(out) + "\n"


def json_text(plan: Plan, inventory: str = "") -> str:
    data = {"inventory": inventory, **plan.as_dict()}
    return json.dumps(data, indent=2, sort_keys=False)
