"""The reports of `sendfleet vet` (JSON, CSV, table) and the heat maps, from a book filled by hand."""

from __future__ import annotations

import csv
import io
import ipaddress
import json

from PIL import Image

from sendfleet.commands import vet_render
from sendfleet.commands.vet_heatmap import COLOURS, render_png, render_svg
from sendfleet.commands.vet_render import ReportContext, Summary, render_csv, render_json, render_table
from sendfleet.core.holder import PtrInfo
from sendfleet.core.targets import parse_targets
from sendfleet.core.verdicts import NXDOMAIN, TIMEOUT, Reply, ZoneHealth, ZoneStatus
from sendfleet.core.vetbook import Holder, VetBook
from sendfleet.core.zones import parse_zones

CFG = parse_zones(
    {
        "zones": [
            {"zone": "zen.lab.test", "listed": ["127.0.0.2-127.0.0.11"], "meanings": {"127.0.0.2": "SBL"}},
            {"zone": "dbl.lab.test", "kind": "domain", "listed": ["127.0.1.2"]},
        ]
    },
    "t",
)


def context(targets: list[str]) -> ReportContext:
    health = [ZoneHealth(z.name, ZoneStatus.OK, "fine") for z in CFG.zones]
    book = VetBook(parse_targets(targets), CFG, {h.zone: h for h in health}, 0.05, False)
    for base in book.targets.networks24():
        book.block(base)
        for value in range(base, base + 256):
            book.record4(value, 0, NXDOMAIN)
    book.record4(int(ipaddress.IPv4Address("198.51.100.66")), 0, Reply(0, ("127.0.0.2",)))
    for domain in book.targets.domains:
        book.record_domain(domain, 0, NXDOMAIN)
    return ReportContext(book, health, CFG, ["127.0.0.1:5300"], "z.yml", "2026-11-27", {"queries": 1}, ["w"])


def test_json_shape() -> None:
    summary = Summary()
    report = json.loads("".join(render_json(context(["198.51.100.64-198.51.100.67", "shop.test"]), summary)))
    assert set(report) >= {"addresses", "zones", "networks", "domains", "summary", "scan", "warnings", "vetted"}
    assert [a["ip"] for a in report["addresses"]] == [f"198.51.100.{h}" for h in range(64, 68)]
    listed = report["addresses"][2]
    assert listed["verdict"] == "listed" and listed["admitted"] is False
    assert listed["listings"] == [
        {"zone": "zen.lab.test", "scope": "address", "codes": ["127.0.0.2"], "meanings": ["SBL"], "reason": None}
    ]
    for a in report["addresses"]:
        assert {"ip", "verdict", "admitted", "listings", "errors"} <= set(a)
    assert report["zones"][0]["name"] == "zen.lab.test" and report["zones"][0]["status"] == "ok"
    assert report["networks"] == [
        {
            "cidr": "198.51.100.0/24",
            "listed": 1,
            "unknown": 0,
            "total": 256,
            "listed_share": round(1 / 256, 4),
            "poor": False,
            "uncertain": False,
        }
    ]
    assert report["domains"][0]["domain"] == "shop.test" and report["domains"][0]["admitted"] is False
    assert report["summary"] == summary.as_dict() and summary.admitted == 3 and not summary.all_good


def test_csv_one_row_per_target() -> None:
    rows = list(csv.reader(io.StringIO("".join(render_csv(context(["198.51.100.64/30", "shop.test"]), Summary())))))
    assert rows[0][:4] == ["ip", "kind", "verdict", "admitted"]
    assert [r[0] for r in rows[1:]] == ["198.51.100.64", "198.51.100.65", "198.51.100.66", "198.51.100.67", "shop.test"]
    assert rows[3][2:4] == ["listed", "no"] and rows[3][5] == "zen.lab.test=127.0.0.2"


def test_table_lines() -> None:
    text = "".join(render_table(context(["198.51.100.66", "198.51.100.67"]), Summary()))
    assert "zen.lab.test" in text and "198.51.100.0/24" in text
    line = next(x for x in text.splitlines() if x.startswith("198.51.100.66"))
    assert "listed" in line and "SBL" in line
    assert all(x == x.rstrip() for x in text.splitlines())


def test_heatmaps() -> None:
    ctx = context(["198.51.100.64/26"])
    png = render_png(ctx.book)
    with Image.open(io.BytesIO(png)) as image:
        colours = {c for _, c in image.convert("RGB").getcolors(1 << 16) or []}
    assert COLOURS["listed"] in colours and COLOURS["clean"] in colours
    svg = render_svg(ctx.book)
    assert svg.count("<rect") >= 256 and "198.51.100.0/24" in svg and "<title>198.51.100.66</title>" in svg


def mixed_context() -> ReportContext:
    """Two /24s (IPs of 9 to 12 characters): a poor one, an unknown answer, a PTR name, a holder of its own."""
    ctx = context(["198.18.0.0/23"])
    book = ctx.book
    for base in book.targets.networks24():
        book.block(base)
        for value in range(base, base + 256):
            book.record4(value, 0, NXDOMAIN)
            book.ptrs[(4, value)] = PtrInfo(False)
    base1 = int(ipaddress.IPv4Address("198.18.1.0"))
    for host in range(0, 60, 3):  # 20 of 256 listed: poor
        book.record4(base1 + host, 0, Reply(0, ("127.0.0.2",)))
    book.record4(base1 + 7, 0, TIMEOUT)
    book.ptrs[(4, base1 + 100)] = PtrInfo(True, "mail.example.net")
    book.holders24[base1 & ~0xFF] = Holder(None, detail="no origin answer (timeout)")
    book.holders[(4, base1 + 200)] = Holder(None, detail="its own")
    return ctx


def test_shared_rows_equal_one_report_per_address() -> None:
    """Clean addresses are rendered from one report per /24: the text is that of a report per address."""
    ctx = mixed_context()
    reports = list(ctx.book.reports())
    assert len(reports) == 512
    expected = Summary()
    for r in reports:
        expected.count(r)
    for render, row in ((render_csv, vet_render._csv_row), (render_table, vet_render._table_row)):
        summary = Summary()
        text = "".join(render(ctx, summary))
        rows = "".join(row(r) for r in reports)
        assert rows in text
        assert summary == expected
    summary = Summary()
    data = json.loads("".join(render_json(ctx, summary)))
    scopes = {z.name: z.scope.value for z in CFG.enabled}
    assert data["addresses"] == [r.as_dict(scopes) for r in reports]
    assert summary == expected and expected.unknown == 1 and expected.listed == 20
    assert expected.not_admitted_neighbourhood == 256 - 21


def test_network_score_counts_every_host() -> None:
    book = mixed_context().book
    for base in book.targets.networks24():
        outcomes = [book.outcome4(base + h) for h in range(256)]
        score = book.network_score(base)
        assert score.listed == sum(o.label == "listed" for o in outcomes)
        assert score.unknown == sum(o.label not in ("listed", "clean") for o in outcomes)
