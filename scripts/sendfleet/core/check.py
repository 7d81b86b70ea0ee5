"""`sendfleet dns check`: what a resolver sees, compared with the plan, plus the linters and the gate (pure).

Every item is ok / warning / error (Mail-in-a-Box style). The lookups go through the injected `lookup`.
"""

from __future__ import annotations

from sendfleet.core import dkim, dmarc, spf
from sendfleet.core.dnsdiff import normalize, owned
from sendfleet.core.fcrdns import GateVerdict, evaluate
from sendfleet.core.findings import Finding, Status
from sendfleet.core.inventory import Inventory
from sendfleet.core.lookup import Lookup
from sendfleet.core.records import Plan, PlannedRecord


def _compare(rec: PlannedRecord, lookup: Lookup) -> Finding:
    answer = lookup(rec.name, rec.rtype)
    where = "ask your IP provider / DNS host to publish it" if rec.zone is None else "run 'sendfleet dns apply'"
    label = f"{rec.name} {rec.rtype}"
    if answer.status == "error":
        return Finding("error", rec.subject, rec.purpose, f"{label}: lookup failed ({answer.detail})")
    have = {normalize(rec.rtype, v) for v in answer.values if owned(v, rec.match)}
    want = {normalize(rec.rtype, v) for v in rec.values}
    if not have:
        return Finding("error", rec.subject, rec.purpose, f"{label}: not published ({where})")
    if have != want:
        shown = "; ".join(sorted(have))
        if len(shown) > 200:
            shown = shown[:200] + "..."
        return Finding("error", rec.subject, rec.purpose, f"{label}: published value differs from the plan: {shown}")
    return Finding("ok", rec.subject, rec.purpose, f"{label}: published as planned")


def gate(inv: Inventory, lookup: Lookup, host: str | None = None) -> list[GateVerdict]:
    """The FCrDNS gate for every sending IP (of one host)."""
    return [evaluate(sip, lookup, inv.rdns_gate) for sip in inv.sending_ips() if host is None or sip.host == host]


def gate_findings(verdicts: list[GateVerdict]) -> list[Finding]:
    findings = []
    for v in verdicts:
        if v.fcrdns:
            findings.append(Finding("ok", v.ip, "fcrdns", f"PTR {v.ptr} resolves back and equals the HELO name"))
        else:
            status: Status = "warning" if v.passed else "error"
            suffix = f" (rdns_gate: {v.mode}, kept in its pool)" if v.passed else f" (left out of pool {v.pool})"
            findings.append(Finding(status, v.ip, "fcrdns", "; ".join(v.reasons) + suffix))
    return findings


def check(inv: Inventory, plan: Plan, lookup: Lookup) -> list[Finding]:
    findings: list[Finding] = [p for p in plan.problems if p.status != "ok"]
    for rec in plan.records:
        if rec.error is None:
            findings.append(_compare(rec, lookup))
    for domain in inv.sender_domains.values():
        txt = lookup(domain.name, "TXT")
        if txt.status == "error":
            findings.append(Finding("error", domain.name, "spf", f"TXT lookup failed ({txt.detail})"))
        else:
            findings += spf.lint(domain.name, txt.values, lookup)
        planned_keys = {r.subject: r for r in plan.records if r.purpose == "dkim"}
        for sel in domain.all_selectors:
            subject = f"{domain.name}/{sel}"
            name = f"{sel}._domainkey.{domain.name}"
            answer = lookup(name, "TXT")
            if answer.status == "error":
                findings.append(Finding("error", subject, "dkim", f"{name} TXT lookup failed ({answer.detail})"))
                continue
            planned = planned_keys.get(subject)
            expected = None
            if planned is not None and planned.values:
                expected = dkim.parse_tags(planned.values[0]).get("p")
            findings += dkim.lint(subject, answer.values, expected)
        if domain.dmarc is not None:
            answer = lookup(f"_dmarc.{domain.name}", "TXT")
            if answer.status == "error":
                findings.append(Finding("error", domain.name, "dmarc", f"_dmarc lookup failed ({answer.detail})"))
            else:
                findings += dmarc.lint(domain.name, answer.values)
        if domain.selectors and domain.dmarc is not None:
            findings.append(
                Finding(
                    "ok",
                    domain.name,
                    "alignment",
                    f"SPF and DKIM (d={domain.name}) are published under {domain.name}: DMARC can align",
                )
            )
    for pool in inv.pools.values():
        if pool.spf_domain:
            txt = lookup(pool.spf_domain, "TXT")
            if txt.status != "error":
                findings += spf.lint(pool.spf_domain, txt.values, lookup, check="spf-pool")
    findings += gate_findings(gate(inv, lookup))
    return findings
