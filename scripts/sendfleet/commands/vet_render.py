"""`sendfleet vet` reports: table, JSON and CSV, written from the book one address at a time."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sendfleet.core.verdicts import Outcome, ZoneHealth
from sendfleet.core.vetbook import AddressReport, VetBook
from sendfleet.core.zones import ZonesConfig


@dataclass
class Summary:
    addresses: int = 0
    domains: int = 0
    clean: int = 0
    listed: int = 0
    unknown: int = 0
    admitted: int = 0
    not_admitted_neighbourhood: int = 0

    def count(self, report: AddressReport) -> None:
        if report.kind == "ip":
            self.addresses += 1
        else:
            self.domains += 1
        if report.verdict is Outcome.CLEAN:
            self.clean += 1
        elif report.verdict is Outcome.LISTED:
            self.listed += 1
        else:
            self.unknown += 1
        if report.admission.admitted:
            self.admitted += 1
        elif report.kind == "ip" and report.verdict is Outcome.CLEAN:
            self.not_admitted_neighbourhood += 1

    @property
    def all_good(self) -> bool:
        ips_ok = self.admitted == self.addresses
        return ips_ok and self.listed == 0 and self.unknown == 0

    def as_dict(self) -> dict[str, int]:
        return {
            "addresses": self.addresses,
            "domains": self.domains,
            "clean": self.clean,
            "listed": self.listed,
            "unknown": self.unknown,
            "admitted": self.admitted,
            "not_admitted_neighbourhood": self.not_admitted_neighbourhood,
        }


@dataclass
class ReportContext:
    book: VetBook
    health: Sequence[ZoneHealth]
    config: ZonesConfig
    resolvers: Sequence[str]
    zones_file: str
    vetted: str
    scan: dict[str, Any]
    warnings: list[str]


def zone_rows(ctx: ReportContext) -> list[dict[str, Any]]:
    by_name = {z.name: z for z in ctx.config.enabled}
    rows = []
    for h in ctx.health:
        zone = by_name[h.zone]
        row: dict[str, Any] = {
            "name": h.zone,
            "status": h.status.value,
            "detail": h.detail,
            "kind": zone.kind.value,
            "scope": zone.scope.value,
            "ipv6": zone.ipv6,
            "note": zone.note,
        }
        h6 = ctx.book.health6.get(h.zone)
        if h6 is not None:
            row["ipv6_status"] = h6.status.value
            row["ipv6_detail"] = h6.detail
        rows.append(row)
    return rows


def network_rows(ctx: ReportContext) -> list[dict[str, Any]]:
    rows = []
    for score in ctx.book.networks():
        rows.append(
            {
                "cidr": score.cidr,
                "listed": score.listed,
                "unknown": score.unknown,
                "total": score.total,
                "listed_share": round(score.listed_share, 4),
                "poor": score.poor(ctx.book.threshold),
                "uncertain": score.uncertain(ctx.book.threshold),
            }
        )
    return rows


def _scopes(ctx: ReportContext) -> dict[str, str]:
    return {z.name: z.scope.value for z in ctx.config.enabled}


def render_json(ctx: ReportContext, summary: Summary) -> Iterator[str]:
    """The JSON report in chunks: addresses are serialised one at a time."""
    scopes = _scopes(ctx)
    head = {
        "vetted": ctx.vetted,
        "resolvers": list(ctx.resolvers),
        "zones_file": ctx.zones_file,
        "neighbourhood_threshold": ctx.book.threshold,
        "accept_neighbourhood": ctx.book.accept_neighbourhood,
        "zones": zone_rows(ctx),
        "networks": network_rows(ctx),
    }
    yield json.dumps(head, indent=1)[:-2] + ',\n "addresses": ['
    first = True
    domains: list[dict[str, Any]] = []
    for report in ctx.book.reports():
        summary.count(report)
        if report.kind == "domain":
            domains.append(report.as_dict(scopes))
            continue
        yield ("\n  " if first else ",\n  ") + json.dumps(report.as_dict(scopes))
        first = False
    tail = {
        "domains": domains,
        "summary": summary.as_dict(),
        "scan": ctx.scan,
        "warnings": ctx.warnings,
    }
    yield "\n ],\n" + json.dumps(tail, indent=1)[2:] + "\n"


def _answers_text(report: AddressReport) -> str:
    parts = []
    for a in report.listings:
        meaning = f" {'; '.join(a.meanings)}" if a.meanings else ""
        reason = f' "{a.reason}"' if a.reason else ""
        parts.append(f"{a.zone} {','.join(a.codes)}{meaning}{reason}")
    for a in report.errors:
        parts.append(f"{a.zone}: {a.detail}")
    return " | ".join(parts)


def render_table(ctx: ReportContext, summary: Summary) -> Iterator[str]:
    zones = zone_rows(ctx)
    width = max((len(z["name"]) for z in zones), default=4)
    yield f"Zones (resolver {', '.join(ctx.resolvers)}):\n"
    for z in zones:
        kind = f"{z['kind']}/{z['scope']}"
        v6 = f" (IPv6 {z['ipv6_status']}: {z['ipv6_detail']})" if z.get("ipv6_status", "ok") != "ok" else ""
        yield f"  {z['name']:<{width}}  {z['status']:<11}  {kind:<14}  {z['detail']}{v6}\n"
    nets = network_rows(ctx)
    if nets:
        yield f"\nNeighbourhoods (/24, threshold {ctx.book.threshold:.1%} listed):\n"
        for n in nets:
            state = "POOR" if n["poor"] else "UNCERTAIN" if n["uncertain"] else "ok"
            yield (
                f"  {n['cidr']:<18}  listed {n['listed']:>3}/{n['total']} ({n['listed_share']:.1%})"
                f"  unknown {n['unknown']:>3}  {state}\n"
            )
    yield f"\n{'ADDRESS':<39}  {'VERDICT':<8}  {'ADMITTED':<8}  DETAIL\n"
    for report in ctx.book.reports():
        summary.count(report)
        detail = _answers_text(report)
        if not report.admission.admitted and report.verdict is Outcome.CLEAN and report.admission.reason:
            detail = report.admission.reason
        extra = []
        if report.ptr is not None and report.ptr.present:
            extra.append(f"PTR {report.ptr.name}{' (generic)' if report.ptr.generic else ''}")
        if report.holder is not None and report.holder.origin is not None:
            name = f" {report.holder.name}" if report.holder.name else ""
            extra.append(f"AS{report.holder.origin.asns[0]}{name} {report.holder.origin.prefix}")
        if report.admission.admitted and report.admission.reason:
            extra.append(report.admission.reason)
        text = " | ".join(x for x in [detail, *extra] if x)
        admitted = "yes" if report.admission.admitted else "no"
        yield f"{report.ip:<39}  {report.verdict.label:<8}  {admitted:<8}  {text}".rstrip() + "\n"
    s = summary
    yield (
        f"\n{s.addresses} addresses, {s.domains} domains: {s.clean} clean, {s.listed} listed, "
        f"{s.unknown} unknown; {s.admitted} admitted"
        + (
            f", {s.not_admitted_neighbourhood} clean but not admitted (neighbourhood)"
            if s.not_admitted_neighbourhood
            else ""
        )
        + "\n"
    )


CSV_FIELDS = (
    "ip",
    "kind",
    "verdict",
    "admitted",
    "reason",
    "listings",
    "errors",
    "network",
    "network_listed",
    "network_unknown",
    "ptr",
    "ptr_generic",
    "asn",
    "as_name",
    "prefix",
    "warnings",
)


def render_csv(ctx: ReportContext, summary: Summary) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for report in ctx.book.reports():
        summary.count(report)
        holder = report.holder.origin if report.holder is not None else None
        writer.writerow(
            [
                report.ip,
                report.kind,
                report.verdict.label,
                "yes" if report.admission.admitted else "no",
                report.admission.reason or "",
                ";".join(f"{a.zone}={'/'.join(a.codes)}" for a in report.listings),
                ";".join(f"{a.zone}: {a.detail}" for a in report.errors),
                report.network.cidr if report.network else "",
                report.network.listed if report.network else "",
                report.network.unknown if report.network else "",
                report.ptr.name if report.ptr is not None and report.ptr.present else "",
                ("yes" if report.ptr.generic else "no") if report.ptr is not None and report.ptr.present else "",
                holder.asns[0] if holder else "",
                report.holder.name if report.holder is not None and report.holder.name else "",
                holder.prefix if holder else "",
                "; ".join(report.warnings),
            ]
        )
        if buf.tell() > 65536:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
