"""`sendfleet vet` reports: table, JSON and CSV, written from the book one address at a time.

A big report (a /16 has 65,536 addresses) costs more CPU than its scan: its address rows are then rendered by
forked processes, in slices of consecutive addresses, and written in order as the slices come back (the same
code renders every row either way; memory stays bounded by a few slices).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
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

    def count(self, report: AddressReport, times: int = 1) -> None:
        """Count `report` (`times` times: for that many addresses with the same report but for the IP)."""
        if report.kind == "ip":
            self.addresses += times
        else:
            self.domains += times
        if report.verdict is Outcome.CLEAN:
            self.clean += times
        elif report.verdict is Outcome.LISTED:
            self.listed += times
        else:
            self.unknown += times
        if report.admission.admitted:
            self.admitted += times
        elif report.kind == "ip" and report.verdict is Outcome.CLEAN:
            self.not_admitted_neighbourhood += times

    def add(self, other: Summary) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

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


#: Reports of at least this many addresses are rendered in forked processes, this many addresses a slice.
PARALLEL_MIN = 16384
SLICE = 4096

Row = Callable[[AddressReport], str]
_JOB: dict[str, Any] = {}


def _address_rows(ctx: ReportContext, summary: Summary, row: Row) -> Iterator[str]:
    """`row(report)` of every address target, in order (not the domains), each report counted in `summary`."""
    book = ctx.book
    total = ctx.book.targets.address_count
    workers = min(2, os.cpu_count() or 1)
    if total < PARALLEL_MIN or workers < 2:
        for r in book.targets.ranges:
            for first in range(r.first, r.last + 1, SLICE):
                yield _render(book, row, r.version, first, min(first + SLICE, r.last + 1), summary)
        return
    slices = [
        (r.version, first, min(first + SLICE, r.last + 1))
        for r in book.targets.ranges
        for first in range(r.first, r.last + 1, SLICE)
    ]
    _JOB.update(book=book, row=row, slices=slices)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for text, counts in pool.imap(_render_slice, range(len(slices))):
                summary.add(counts)
                yield text
    finally:
        _JOB.clear()


def _render_slice(index: int) -> tuple[str, Summary]:
    version, first, end = _JOB["slices"][index]
    counts = Summary()
    return _render(_JOB["book"], _JOB["row"], version, first, end, counts), counts


def _render(book: VetBook, row: Row, version: int, first: int, end: int, counts: Summary) -> str:
    """The rows of addresses first..end-1, each counted in `counts`.

    Most addresses are clean, and the reports of the clean addresses of one /24 differ only in their `ip`
    (`VetBook.shared_report_keys`): such a report is built and rendered once, with a stand-in IP of the same
    length, and the row of each address is that text with its own IP put back in."""
    out = []
    shared: dict[Any, tuple[AddressReport, str, str] | None] = {}
    uses: dict[Any, int] = {}  # addresses each shared report stood for
    keys: list[Any] = []
    prefix = ""
    base = -1
    for value in range(first, end):
        if version == 4 and value & ~0xFF != base:
            base = value & ~0xFF
            keys = book.shared_report_keys(base)
            prefix = f"{base >> 24}.{(base >> 16) & 255}.{(base >> 8) & 255}."
        key = keys[value & 0xFF] if version == 4 else None
        if key is not None:
            ip = prefix + _HOSTS[value & 0xFF]
            ckey = (key, len(ip))
            if ckey in shared:
                template = shared[ckey]
            else:
                template = shared[ckey] = _row_template(book.report(version, value), row)
            if template is not None:
                uses[ckey] = uses.get(ckey, 0) + 1
                out.append(template[1] + ip + template[2])
                continue
        report = book.report(version, value)
        counts.count(report)
        out.append(row(report))
    for ckey, times in uses.items():
        template = shared[ckey]
        assert template is not None
        counts.count(template[0], times)
    return "".join(out)


_HOSTS = tuple(str(host) for host in range(256))


def _row_template(report: AddressReport, row: Row) -> tuple[AddressReport, str, str] | None:
    """(report, text before the IP, text after it), or None if the stand-in is not found exactly once."""
    stand_in = "~" * len(report.ip)
    parts = row(dataclasses.replace(report, ip=stand_in)).split(stand_in)
    if len(parts) != 2:
        return None
    return report, parts[0], parts[1]


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
    dumps = json.dumps

    def row(report: AddressReport) -> str:
        return ",\n  " + dumps(report.as_dict(scopes))

    for text in _address_rows(ctx, summary, row):
        if first and text:
            text = text[1:]  # no comma before the first address
            first = False
        yield text
    domains: list[dict[str, Any]] = []
    for domain in ctx.book.targets.domains:
        report = ctx.book.domain_report(domain)
        summary.count(report)
        domains.append(report.as_dict(scopes))
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
    yield from _address_rows(ctx, summary, _table_row)
    for domain in ctx.book.targets.domains:
        report = ctx.book.domain_report(domain)
        summary.count(report)
        yield _table_row(report)
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


def _table_row(report: AddressReport) -> str:
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
    return f"{report.ip:<39}  {report.verdict.label:<8}  {admitted:<8}  {text}".rstrip() + "\n"


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
    csv.writer(buf, lineterminator="\n").writerow(CSV_FIELDS)
    yield buf.getvalue()
    yield from _address_rows(ctx, summary, _csv_row)
    for domain in ctx.book.targets.domains:
        report = ctx.book.domain_report(domain)
        summary.count(report)
        yield _csv_row(report)


def _csv_row(report: AddressReport) -> str:
    holder = report.holder.origin if report.holder is not None else None
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
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
    return buf.getvalue()
