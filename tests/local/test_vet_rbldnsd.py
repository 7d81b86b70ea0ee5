"""`sendfleet vet` against a real rbldnsd started here on 127.0.0.1 (a free high port). No mocks.

The fixture starts exactly one rbldnsd (foreground, -n) with subprocess.Popen and kills exactly that PID at
teardown. Zones served: zen.test (IPv4 + IPv6, ZEN-like), l2.test (network scope), dbl.test (domains),
wild.test (a parked-style wildcard that lists everything, 127.0.0.1 included), origin.asn.test and asn.test
(Team-Cymru-like TXT). refused.test is not served: rbldnsd answers REFUSED for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sendfleet import yamlfile
from sendfleet.cli import main
from sendfleet.core.dnsnames import question4, question_name, question_suffix
from sendfleet.core.resolvers import Resolver
from sendfleet.core.verdicts import NXDOMAIN, Reply
from sendfleet.dns.scanner import BulkScanner, run_scan

RBLDNSD = "/usr/sbin/rbldnsd"

ZEN = """\
:127.0.0.2:Listed in zen.test, see https://zen.test/lookup?ip=$
127.0.0.2
198.51.100.66 :127.0.0.2:SBL listed $
198.51.100.67 :127.0.0.4:XBL exploited $
198.51.100.68 :127.255.255.254:query refused
198.51.100.69 :127.0.0.99:odd code
198.18.7.1-198.18.7.16 :127.0.0.3:CSS snowshoe
"""
ZEN6 = """\
:127.0.0.2:Listed (IPv6)
::ffff:7f00:2
2001:db8::5
"""
L2 = """\
:127.0.0.2:allocation listed
127.0.0.2
198.51.100.120/29
"""
DBL = """\
:127.0.1.2:spam domain
test
spammy.test
"""
WILD = """\
0.0.0.0-255.255.255.255 :127.0.0.2:parked: everything is listed
"""
ORIGIN = """\
198.51.100.0/24 :127.0.0.2:64500 | 198.51.100.0/24 | ZZ | lab | 2026-01-01
198.18.0.0/15 :127.0.0.2:16509 | 198.18.0.0/15 | ZZ | lab | 2026-01-01
"""
ASNAMES = """\
as64500 :127.0.0.2:64500 | ZZ | lab | 2026-01-01 | SENDFLEET-LAB, ZZ
as16509 :127.0.0.2:16509 | US | arin | 2000-05-04 | AMAZON-02, US
"""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Rbldnsd:
    def __init__(self) -> None:
        if not os.path.exists(RBLDNSD):
            pytest.fail(f"{RBLDNSD} is missing (apt-get install rbldnsd)")
        # rbldnsd drops root to user rbldns, which must read the data: a world-readable folder of our own
        self.root = Path(tempfile.mkdtemp(prefix="sendfleet-rbldnsd-"))
        os.chmod(self.root, 0o755)
        files = {"zen.txt": ZEN, "zen6.txt": ZEN6, "l2.txt": L2, "dbl.txt": DBL, "wild.txt": WILD}
        files |= {"origin.txt": ORIGIN, "asnames.txt": ASNAMES}
        for name, text in files.items():
            (self.root / name).write_text(text)
            os.chmod(self.root / name, 0o644)
        self.port = _free_udp_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [RBLDNSD, "-n", "-b", f"127.0.0.1/{self.port}", "-w", str(self.root)]
        if os.geteuid() == 0:
            cmd += ["-u", "rbldns"]
        cmd += [
            "zen.test:ip4set:zen.txt",
            "zen.test:ip6trie:zen6.txt",
            "l2.test:ip4set:l2.txt",
            "dbl.test:dnset:dbl.txt",
            "wild.test:ip4set:wild.txt",
            "origin.asn.test:ip4set:origin.txt",
            "asn.test:dnset:asnames.txt",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                pytest.fail(f"rbldnsd exited: {err}")
            if self._answers():
                return
            time.sleep(0.05)
        pytest.fail("rbldnsd did not answer within 10 s")

    def _answers(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            q = struct.pack(">HHHHHH", 7, 0x100, 1, 0, 0, 0) + question_name("2.0.0.127.zen.test", 1)
            try:
                s.sendto(q, ("127.0.0.1", self.port))
                data = s.recv(512)
            except OSError:
                return False
            return len(data) > 12 and data[3] & 0xF == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # exactly the PID we started
            self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def rbl() -> Iterator[Rbldnsd]:
    server = Rbldnsd()
    try:
        server.start()
        yield server
    finally:
        server.stop()


def zones_file(tmp_path: Path, *extra: str, asn: bool = True) -> Path:
    text = """\
zones:
  - zone: zen.test
    listed: ["127.0.0.2-127.0.0.11"]
    errors: ["127.255.255.0/24"]
    meanings: {127.0.0.2: SBL, 127.0.0.4: XBL, 127.255.255.254: "refused: public resolver"}
    ipv6: true
  - zone: l2.test
    listed: ["127.0.0.2"]
    scope: network
  - zone: dbl.test
    kind: domain
    listed: ["127.0.1.2-127.0.1.106"]
    errors: ["127.0.1.255"]
"""
    for zone in extra:
        text += f'  - zone: {zone}\n    listed: ["127.0.0.2"]\n'
    if asn:
        text += "asn:\n  origin: origin.asn.test\n  names: asn.test\n"
    path = tmp_path / f"zones-{len(extra)}-{asn}.yml"
    path.write_text(text)
    return path


def vet(rbl: Rbldnsd, tmp_path: Path, capsys: Any, *args: str, zones: Path | None = None) -> tuple[int, str, str]:
    argv = ["vet", "--zones", str(zones or zones_file(tmp_path)), "--resolver", rbl.resolver]
    argv += ["--timeout", "5", "--no-progress", *args]  # the test's own options win
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def vet_json(rbl: Rbldnsd, tmp_path: Path, capsys: Any, *args: str, zones: Path | None = None) -> tuple[int, Any]:
    code, out, _err = vet(rbl, tmp_path, capsys, *args, "--format", "json", zones=zones)
    return code, json.loads(out)


def by_ip(report: Any) -> dict[str, Any]:
    return {a["ip"]: a for a in report["addresses"]}


# --- verdicts ------------------------------------------------------------------------------------------


def test_listed_error_unexpected_and_clean(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    code, report = vet_json(rbl, tmp_path, capsys, "198.51.100.64-198.51.100.71")
    assert code == 1
    a = by_ip(report)
    assert list(a) == [f"198.51.100.{h}" for h in range(64, 72)]
    sbl = a["198.51.100.66"]
    assert sbl["verdict"] == "listed" and not sbl["admitted"]
    assert sbl["listings"] == [
        {
            "zone": "zen.test",
            "scope": "address",
            "codes": ["127.0.0.2"],
            "meanings": ["SBL"],
            "reason": "SBL listed 198.51.100.66",
        }
    ]
    assert a["198.51.100.67"]["listings"][0]["meanings"] == ["XBL"]
    refused = a["198.51.100.68"]
    assert refused["verdict"] == "unknown" and refused["listings"] == []
    assert "127.255.255.254" in refused["errors"][0]["detail"]
    odd = a["198.51.100.69"]
    assert odd["verdict"] == "unknown" and "unexpected answer 127.0.0.99" in odd["errors"][0]["detail"]
    for host in (64, 65, 70, 71):
        assert a[f"198.51.100.{host}"]["verdict"] == "clean" and a[f"198.51.100.{host}"]["admitted"]
    assert report["zones"][0] == {
        "name": "zen.test",
        "status": "ok",
        "detail": report["zones"][0]["detail"],
        "kind": "ip",
        "scope": "address",
        "ipv6": True,
        "note": None,
        "ipv6_status": "ok",
        "ipv6_detail": "test points answer as RFC 5782 requires",
    }
    [net] = report["networks"]
    # the whole /24 was asked: .66 .67 listed by zen, .120-.127 by l2; .68 .69 unknown
    assert net == {
        "cidr": "198.51.100.0/24",
        "listed": 10,
        "unknown": 2,
        "total": 256,
        "listed_share": round(10 / 256, 4),
        "poor": False,
        "uncertain": False,
    }
    assert report["summary"]["admitted"] == 4


def test_network_scope_listing_lists_the_address(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    code, report = vet_json(rbl, tmp_path, capsys, "198.51.100.121")
    (addr,) = report["addresses"]
    assert code == 1 and addr["verdict"] == "listed"
    assert addr["listings"][0]["zone"] == "l2.test" and addr["listings"][0]["scope"] == "network"


def test_holder_and_small_prefix_warning(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    code, report = vet_json(rbl, tmp_path, capsys, "198.51.100.70", "198.18.9.9")
    a = by_ip(report)
    holder = a["198.51.100.70"]["holder"]
    assert holder["asn"] == 64500 and holder["name"] == "SENDFLEET-LAB, ZZ" and holder["prefix"] == "198.51.100.0/24"
    assert any("larger subnets mitigate this risk" in w for w in a["198.51.100.70"]["warnings"])
    assert a["198.18.9.9"]["holder"]["asn"] == 16509
    assert any("large cloud provider" in w for w in a["198.18.9.9"]["warnings"])
    assert code == 0  # warnings never gate


def test_ipv6_nibble_form(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    code, report = vet_json(rbl, tmp_path, capsys, "2001:db8::5", "2001:db8::6")
    a = by_ip(report)
    assert a["2001:db8::5"]["verdict"] == "listed" and a["2001:db8::5"]["listings"][0]["zone"] == "zen.test"
    assert a["2001:db8::6"]["verdict"] == "clean" and a["2001:db8::6"]["admitted"]
    assert report["networks"] == []  # a /64 cannot be scanned: only the declared addresses
    assert code == 1


def test_domains_are_checked_but_never_admitted(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    code, report = vet_json(rbl, tmp_path, capsys, "spammy.test", "shop.test")
    d = {x["domain"]: x for x in report["domains"]}
    assert report["addresses"] == []
    assert d["spammy.test"]["verdict"] == "listed" and d["spammy.test"]["listings"][0]["zone"] == "dbl.test"
    assert d["shop.test"]["verdict"] == "clean" and d["shop.test"]["admitted"] is False
    assert code == 1


# --- broken zones --------------------------------------------------------------------------------------


def test_broken_wildcard_zone_answers_count_as_unknown(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    zones = zones_file(tmp_path, "wild.test")
    code, report = vet_json(rbl, tmp_path, capsys, "198.51.100.64", "198.51.100.66", zones=zones)
    status = {z["name"]: z for z in report["zones"]}
    assert status["wild.test"]["status"] == "broken"
    assert "127.0.0.1 must not be listed" in status["wild.test"]["detail"]
    a = by_ip(report)
    clean_elsewhere = a["198.51.100.64"]
    assert clean_elsewhere["verdict"] == "unknown" and not clean_elsewhere["admitted"]
    assert any(e["zone"] == "wild.test" and "broken" in e["detail"] for e in clean_elsewhere["errors"])
    assert all(x["zone"] != "wild.test" for x in a["198.51.100.66"]["listings"])
    assert a["198.51.100.66"]["verdict"] == "listed"  # by the healthy zen.test
    assert code == 1


def test_refused_zone_is_unreachable(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    zones = zones_file(tmp_path, "refused.test")
    code, report = vet_json(rbl, tmp_path, capsys, "198.51.100.64", zones=zones)
    status = {z["name"]: z for z in report["zones"]}
    assert status["refused.test"]["status"] == "unreachable" and "REFUSED" in status["refused.test"]["detail"]
    (addr,) = report["addresses"]
    assert addr["verdict"] == "unknown" and not addr["admitted"]
    assert code == 1


def test_every_zone_unusable_exits_3_and_writes_nothing(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    zones = tmp_path / "bad.yml"
    zones.write_text(
        'zones:\n  - {zone: refused.test, listed: ["127.0.0.2"]}\n  - {zone: wild.test, listed: ["127.0.0.2"]}\n'
    )
    inventory = tmp_path / "inv"
    inventory.mkdir()
    out = tmp_path / "report.json"
    code, stdout, stderr = vet(
        rbl,
        tmp_path,
        capsys,
        "198.51.100.64",
        "--output",
        str(out),
        "--admit",
        str(inventory),
        "--pool",
        "t",
        zones=zones,
    )
    assert code == 3
    assert "no zone could be used" in stderr and "refused.test unreachable" in stderr and "wild.test broken" in stderr
    assert not out.exists() and not (inventory / "group_vars").exists()
    assert stdout == ""


def test_dead_resolver_exits_3(tmp_path: Path, capsys: Any) -> None:
    dead = f"127.0.0.1:{_free_udp_port()}"  # nothing listens there
    inventory = tmp_path / "inv"
    inventory.mkdir()
    argv = ["vet", "198.51.100.64", "--zones", str(zones_file(tmp_path)), "--resolver", dead, "--timeout", "0.5"]
    argv += ["--admit", str(inventory), "--pool", "t", "--no-progress"]
    start = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    assert code == 3
    assert 0.5 <= elapsed < 2.5  # one deadline for the zone self-tests, then it gives up
    lines = [line for line in err.splitlines() if "warning" not in line]
    assert lines == [f"sendfleet: resolver {dead} never answered (8 queries timed out)"]
    assert out == "" and not (inventory / "group_vars").exists()


# --- neighbourhood -------------------------------------------------------------------------------------


def test_poor_neighbourhood(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    code, report = vet_json(rbl, tmp_path, capsys, "198.18.7.100")
    (addr,) = report["addresses"]
    assert addr["verdict"] == "clean" and not addr["admitted"] and "poor neighbourhood" in addr["reason"]
    assert report["networks"][0]["listed"] == 16 and report["networks"][0]["poor"] is True
    assert code == 1

    code, report = vet_json(rbl, tmp_path, capsys, "198.18.7.100", "--neighbourhood-threshold", "10")
    assert code == 0 and report["addresses"][0]["admitted"]

    code, out, err = vet(rbl, tmp_path, capsys, "198.18.7.100", "--accept-neighbourhood", "--format", "json")
    addr = json.loads(out)["addresses"][0]
    assert addr["admitted"] and any("ADMITTED DESPITE A POOR NEIGHBOURHOOD" in w for w in addr["warnings"])
    assert "WILL BE ADMITTED" in err
    assert code == 0


# --- admission -----------------------------------------------------------------------------------------

EXISTING = """\
# vetted by hand-checked process, 2026-10 (keep this comment)
vetted_ips:
  marketing:
    - {ip: 198.51.100.70, vetted: 2026-10-01, zones: [zen.test], resolver: 127.0.0.1}  # first one
other_key: keep me
"""


def test_admission_is_idempotent_and_keeps_comments(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    inventory = tmp_path / "inv"
    path = inventory / "group_vars" / "all" / "vetted_ips.yml"
    path.parent.mkdir(parents=True)
    path.write_text(EXISTING)
    args = ("198.51.100.64-198.51.100.71", "--admit", str(inventory), "--pool", "transactional")
    code, _, err = vet(rbl, tmp_path, capsys, *args)
    assert code == 1
    assert "admitted 3 address(es) into pool transactional" in err
    assert "198.51.100.70 is already vetted into pool marketing" in err
    text = path.read_text()
    assert "# vetted by hand-checked process, 2026-10 (keep this comment)" in text and "# first one" in text
    data = yamlfile.load(path)
    assert data["other_key"] == "keep me"
    assert [e["ip"] for e in data["vetted_ips"]["marketing"]] == ["198.51.100.70"]
    entries = data["vetted_ips"]["transactional"]
    assert [e["ip"] for e in entries] == ["198.51.100.64", "198.51.100.65", "198.51.100.71"]
    entry = entries[0]
    assert entry["zones"] == ["zen.test", "l2.test"] and entry["resolver"] == rbl.resolver
    assert str(entry["vetted"]) == time.strftime("%Y-%m-%d", time.gmtime())
    code, _out, err = vet(rbl, tmp_path, capsys, *args)
    assert "admitted 0 address(es)" in err and "(3 already there)" in err
    assert path.read_text() == text  # nothing duplicated, nothing removed


def test_admission_creates_the_file(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    inventory = tmp_path / "inv"
    inventory.mkdir()
    code, _out, _err = vet(
        rbl, tmp_path, capsys, "198.51.100.64", "198.51.100.66", "--admit", str(inventory), "--pool", "t"
    )
    data = yamlfile.load(inventory / "group_vars" / "all" / "vetted_ips.yml")
    assert [e["ip"] for e in data["vetted_ips"]["t"]] == ["198.51.100.64"]  # only admitted addresses
    assert code == 1


def test_malformed_vetted_file_is_refused_and_untouched(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    inventory = tmp_path / "inv"
    path = inventory / "group_vars" / "all" / "vetted_ips.yml"
    path.parent.mkdir(parents=True)
    bad = "vetted_ips:\n  t: [ {ip: 198.51.100.64\n"
    path.write_text(bad)
    out = tmp_path / "r.json"
    code, _stdout, err = vet(
        rbl, tmp_path, capsys, "198.51.100.64", "--admit", str(inventory), "--pool", "t", "--output", str(out)
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "malformed YAML" in err
    assert path.read_text() == bad and not out.exists()


def test_unknown_pool_is_refused(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    inventory = tmp_path / "inv"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "all" / "pools.yml").write_text("pools:\n  transactional: {}\n  marketing: {}\n")
    code, _out, err = vet(rbl, tmp_path, capsys, "198.51.100.64", "--admit", str(inventory), "--pool", "bulk")
    assert code == 2 and "--pool bulk: not a pool" in err and "marketing, transactional" in err
    assert not (inventory / "group_vars" / "all" / "vetted_ips.yml").exists()


# --- CLI contract --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["198.51.100.70/26"], "host bits set"),
        (["198.18.0.0/15"], "--max-addresses 65536"),
        (["198.51.100.64", "--resolver", "dns.example"], "--resolver 'dns.example'"),
        (["198.51.100.64", "--admit", "."], "--admit needs --pool"),
        (["198.51.100.64", "--pool", "t"], "--pool needs --admit"),
        (["198.51.100.64", "--neighbourhood-threshold", "x"], "--neighbourhood-threshold 'x'"),
        (["198.51.100.64", "--heatmap", "map.gif"], "name it .png or .svg"),
        (["198.51.100.64", "--output", "/nonexistent/dir/r.json"], "does not exist"),
        (["198.51.100.64", "--max-addresses", "0"], "--max-addresses"),
        (["198.51.100.64", "--timeout", "0"], "--timeout: the per-query deadline"),
        (["198.51.100.64", "--timeout", "301"], "--timeout: the per-query deadline"),
        (["198.51.100.64", "--retries", "3"], "--retries: no longer an option"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    rbl: Rbldnsd, tmp_path: Path, capsys: Any, args: list[str], fragment: str
) -> None:
    out = tmp_path / "out.json"
    extra = [] if "--output" in args else ["--output", str(out)]
    code, stdout, err = vet(rbl, tmp_path, capsys, *args, *extra)
    assert code == 2
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err
    assert stdout == "" and not out.exists()


def test_bad_zones_file_names_the_field(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    zones = tmp_path / "z.yml"
    zones.write_text('zones:\n  - {zone: zen.test, listed: ["127.0.0.2"], scope: allocation}\n')
    code, _stdout, err = vet(rbl, tmp_path, capsys, "198.51.100.64", zones=zones)
    assert code == 2 and err.count("\n") == 1 and "zones[0].scope: 'allocation'" in err


def test_from_file_csv_and_heatmaps(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    targets = tmp_path / "targets.txt"
    targets.write_text("# purchased\n198.51.100.64/30\n198.51.100.66  # again\n")
    png, svg, csv_out = tmp_path / "map.png", tmp_path / "map.svg", tmp_path / "r.csv"
    code, _stdout, _err = vet(
        rbl, tmp_path, capsys, "--from-file", str(targets), "--format", "csv", "--output", str(csv_out),
        "--heatmap", str(png), "--heatmap", str(svg),
    )  # fmt: skip
    rows = csv_out.read_text().splitlines()
    assert rows[0].startswith("ip,kind,verdict,admitted")
    assert [r.split(",")[0] for r in rows[1:]] == [f"198.51.100.{h}" for h in range(64, 68)]
    assert rows[3].split(",")[2] == "listed"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 160 and image.height > 160
        # .66 (listed, target) is red somewhere in the first grid
        assert (207, 34, 46) in {c for _, c in image.getcolors(1 << 16) or []}
    text = svg.read_text()
    assert text.startswith("<svg") and "198.51.100.0/24" in text and "poor /24" in text
    assert "<title>198.51.100.66</title>" in text
    assert code == 1


def test_table_output(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    code, out, _err = vet(rbl, tmp_path, capsys, "198.51.100.66", "198.51.100.64")
    assert "zen.test" in out and "ok" in out
    line = next(x for x in out.splitlines() if x.startswith("198.51.100.66"))
    assert "listed" in line and "SBL" in line and "no" in line
    assert code == 1


def test_big_reports_rendered_in_processes_are_the_same(
    rbl: Rbldnsd, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows rendered in forked processes, in slices, are byte for byte the rows of one process, in order."""
    import multiprocessing

    from sendfleet.commands import vet_render

    forks: list[str] = []
    get_context = multiprocessing.get_context

    def spy(method: str) -> Any:
        forks.append(method)
        return get_context(method)

    monkeypatch.setattr(multiprocessing, "get_context", spy)
    args = ("198.18.6.0/23", "198.51.100.64/28", "spammy.test", "--no-ptr", "--workers", "1")
    outs: dict[tuple[str, str], tuple[int, str]] = {}
    for mode, (minimum, size) in {"one process": (1 << 30, 4096), "forked": (1, 100)}.items():
        monkeypatch.setattr(vet_render, "PARALLEL_MIN", minimum)
        monkeypatch.setattr(vet_render, "SLICE", size)
        for fmt in ("json", "csv", "table"):
            code, out, _err = vet(rbl, tmp_path, capsys, *args, "--format", fmt)
            outs[mode, fmt] = (code, out)
    assert forks == ["fork"] * 3  # the forked mode forked, once per report
    for fmt in ("csv", "table"):
        assert outs["one process", fmt] == outs["forked", fmt]
    one, forked = (json.loads(outs[mode, "json"][1]) for mode in ("one process", "forked"))
    one.pop("scan"), forked.pop("scan")  # timings
    assert one == forked
    assert len(one["addresses"]) == 528 and [d["domain"] for d in one["domains"]] == ["spammy.test"]
    assert one["summary"]["listed"] == 16 + 2 + 1


# --- the scanner itself --------------------------------------------------------------------------------


def test_bulk_scan_loses_nothing_to_drops(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    """16,384 addresses × 2 zones as fast as possible: rbldnsd drops bursts, every loss must be retried."""
    _code, report = vet_json(rbl, tmp_path, capsys, "198.18.0.0/18", "--no-ptr", "--no-asn")
    summary = report["summary"]
    assert summary["addresses"] == 16384
    assert summary["unknown"] == 0  # no loss became "unknown"
    assert summary["listed"] == 16  # 198.18.7.1-16, exactly
    assert report["scan"]["timeouts"] == 0
    listed = [n for n in report["networks"] if n["listed"]]
    assert [(n["cidr"], n["listed"]) for n in listed] == [("198.18.7.0/24", 16)]


def test_scanner_asks_identical_questions_once(rbl: Rbldnsd) -> None:
    suffix = question_suffix("zen.test")
    value = int(ipaddress.IPv4Address("198.51.100.66"))
    queries = iter([(question4(value, suffix), -1, i) for i in range(5)] + [(question4(value - 2, suffix), -1, 9)])
    got: dict[int, Reply] = {}
    scanner = BulkScanner([Resolver("127.0.0.1", rbl.port)], initial_window=16)
    stats = run_scan(scanner, queries, lambda token, reply: got.__setitem__(token, reply))
    assert sorted(got) == [0, 1, 2, 3, 4, 9]
    assert all(got[i].records == ("127.0.0.2",) for i in range(5))
    assert got[9] is NXDOMAIN
    assert stats.queries == 2 and stats.merged == 4


def test_scanner_writes_nxdomain_into_the_states_and_delivers_the_rest(rbl: Rbldnsd) -> None:
    """The bulk scan's path: NXDOMAIN answers (identical questions too) set their token's byte, no callback;
    a listing is delivered, its byte left alone."""
    suffix = question_suffix("zen.test")
    listed = int(ipaddress.IPv4Address("198.51.100.66"))
    queries = [(question4(listed - 2, suffix), -1, 0), (question4(listed, suffix), -1, 1)]
    queries += [(question4(listed - 3, suffix), -1, 2), (question4(listed - 3, suffix), -1, 3)]
    states = bytearray(5)
    got: dict[int, Reply] = {}

    async def scan() -> None:
        scanner = BulkScanner([Resolver("127.0.0.1", rbl.port)], initial_window=16)
        await scanner.run(iter(queries), lambda t, r: got.__setitem__(t, r), nxdomain=(states, 7))

    asyncio.run(scan())
    assert states == bytes([7, 0, 7, 7, 0])
    assert list(got) == [1] and got[1].records == ("127.0.0.2",)


def test_scanner_rate_limit_per_zone(rbl: Rbldnsd) -> None:
    suffix = question_suffix("zen.test")
    base = int(ipaddress.IPv4Address("198.51.100.0"))
    queries = iter([(question4(base + i, suffix), 0, i) for i in range(30)])
    got: list[int] = []
    scanner = BulkScanner([Resolver("127.0.0.1", rbl.port)], rates=[100.0])
    stats = run_scan(scanner, queries, lambda token, reply: got.append(token))
    assert sorted(got) == list(range(30))
    assert stats.elapsed >= 0.15  # 30 queries at 100/s with a burst of 10 cannot finish sooner


class LossyServer:
    """A UDP DNS server on loopback that drops the first `drops` copies of every question (NXDOMAIN
    afterwards) and never answers names starting with `silent`: losses must be retried, and a question that
    never gets an answer must end as a timeout (unknown), never as clean."""

    def __init__(self, drops: int) -> None:
        import threading

        self.drops = drops
        self.seen: dict[bytes, int] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            question = data[12:]
            count = self.seen[question] = self.seen.get(question, 0) + 1
            if question[1:].startswith(b"silent") or count <= self.drops:
                continue
            flags = 0x8183  # QR, RD, RA, NXDOMAIN
            self.sock.sendto(data[:2] + struct.pack(">HHHHH", flags, 1, 0, 0, 0) + question, peer)

    def close(self) -> None:
        self.stop = True
        self.thread.join(timeout=5)
        self.sock.close()


def test_scanner_retries_losses_and_times_out_the_silent() -> None:
    server = LossyServer(drops=2)
    try:
        queries = [(question_name(f"q{i}.loss.test", 1), -1, i) for i in range(60)]
        queries.append((question_name("silent.loss.test", 1), -1, "silent"))
        got: dict[Any, Reply] = {}
        scanner = BulkScanner([Resolver("127.0.0.1", server.port)], deadline=1.0, initial_window=64)
        stats = run_scan(scanner, iter(queries), lambda token, reply: got.__setitem__(token, reply))
    finally:
        server.close()
    assert all(got[i] is NXDOMAIN for i in range(60))  # each was lost twice, then answered
    assert got["silent"].rcode == -1  # a timeout, which the verdict rules turn into "unknown"
    assert stats.timeouts == 1 and stats.retries >= 120


def test_worker_processes_give_the_same_report(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    args = ("198.18.6.0/23", "198.51.100.64/28", "--no-ptr")
    code1, one = vet_json(rbl, tmp_path, capsys, *args, "--workers", "1")
    code2, two = vet_json(rbl, tmp_path, capsys, *args, "--workers", "2")
    assert (one["scan"]["workers"], two["scan"]["workers"]) == (1, 2)
    assert code1 == code2 == 1
    assert one["addresses"] == two["addresses"] and one["networks"] == two["networks"]
    assert one["summary"] == two["summary"] and one["summary"]["listed"] == 16 + 2
    assert two["scan"]["blocklist_queries"] == 3 * 256 * 2


class HealthOnlyServer(LossyServer):
    """Answers the RFC 5782 test points of zone `z.test` correctly, then never anything else."""

    def __init__(self) -> None:
        super().__init__(drops=0)

    def _serve(self) -> None:
        listed = question_name("2.0.0.127.z.test", 1)
        clean = question_name("1.0.0.127.z.test", 1)
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            question = data[12:]
            if question == listed:
                answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([127, 0, 0, 2])
                self.sock.sendto(data[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + question + answer, peer)
            elif question == clean:
                self.sock.sendto(data[:2] + struct.pack(">HHHHH", 0x8183, 1, 0, 0, 0) + question, peer)


def test_resolver_that_stops_answering_exits_3(tmp_path: Path, capsys: Any) -> None:
    server = HealthOnlyServer()
    zones = tmp_path / "z.yml"
    zones.write_text('zones:\n  - {zone: z.test, listed: ["127.0.0.2"]}\n')
    inventory = tmp_path / "inv"
    inventory.mkdir()
    try:
        argv = ["vet", "198.51.100.64", "--zones", str(zones), "--resolver", f"127.0.0.1:{server.port}"]
        argv += ["--timeout", "0.3", "--no-progress", "--admit", str(inventory), "--pool", "t"]
        start = time.monotonic()
        code = main(argv)
        elapsed = time.monotonic() - start
    finally:
        server.close()
    out, err = capsys.readouterr()
    assert code == 3
    # the zone fell silent: its 256 questions are given up after one deadline, not one deadline per window
    assert elapsed < 2.0
    assert "sendfleet: the resolver stopped answering: every blocklist query timed out" in err
    assert out == "" and not (inventory / "group_vars").exists()


def test_a_question_never_answered_does_not_hold_up_the_others() -> None:
    """A silent question first in line: fast retransmits give up on it after a few tries without blocking the
    thousands of questions behind it, and it ends as a timeout."""
    server = LossyServer(drops=0)
    try:
        queries = [(question_name("silent.loss.test", 1), -1, "silent")]
        queries += [(question_name(f"q{i}.loss.test", 1), -1, i) for i in range(3000)]
        got: dict[Any, Reply] = {}
        scanner = BulkScanner([Resolver("127.0.0.1", server.port)], deadline=1.0)
        stats = run_scan(scanner, iter(queries), lambda token, reply: got.__setitem__(token, reply))
    finally:
        server.close()
    assert len(got) == 3001 and all(got[i] is NXDOMAIN for i in range(3000))
    assert got["silent"].rcode == -1 and stats.timeouts == 1


class SlowFirstAnswerServer(LossyServer):
    """Answers at once, except `slow.loss.test`: only its first copy is answered, 0.4 s later (a cold recursion).
    Copies sent again meanwhile are ignored: the late answer to the first ID must be taken."""

    def __init__(self) -> None:
        super().__init__(drops=0)

    def _serve(self) -> None:
        import threading

        slow = question_name("slow.loss.test", 1)
        answered_slow = False
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            question = data[12:]
            reply = data[:2] + struct.pack(">HHHHH", 0x8183, 1, 0, 0, 0) + question
            if question == slow:
                if not answered_slow:
                    answered_slow = True
                    threading.Timer(0.4, self.sock.sendto, (reply, peer)).start()
                continue
            self.sock.sendto(reply, peer)


def test_a_late_answer_to_an_earlier_try_is_taken() -> None:
    server = SlowFirstAnswerServer()
    try:
        queries = [(question_name(f"q{i}.loss.test", 1), -1, i) for i in range(100)]
        queries.insert(50, (question_name("slow.loss.test", 1), -1, "slow"))
        queries += [(question_name(f"r{i}.loss.test", 1), -1, 1000 + i) for i in range(2000)]
        got: dict[Any, Reply] = {}
        scanner = BulkScanner([Resolver("127.0.0.1", server.port)], deadline=4.0)
        stats = run_scan(scanner, iter(queries), lambda token, reply: got.__setitem__(token, reply))
    finally:
        server.close()
    assert got["slow"] is NXDOMAIN  # answered by the reply to its first ID, after it was sent again
    assert stats.timeouts == 0 and stats.retries >= 1


class OutOfOrderServer(LossyServer):
    """A recursive-resolver-like server: every 10th question is answered 50 ms late (not cached), the rest
    at once. Answers come out of order; nothing is lost."""

    def __init__(self) -> None:
        super().__init__(drops=0)

    def _serve(self) -> None:
        import threading

        count = 0
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            count += 1
            reply = data[:2] + struct.pack(">HHHHH", 0x8183, 1, 0, 0, 0) + data[12:]
            if count % 10 == 0:
                threading.Timer(0.05, self.sock.sendto, (reply, peer)).start()
            else:
                self.sock.sendto(reply, peer)


def test_out_of_order_answers_are_all_taken() -> None:
    server = OutOfOrderServer()
    try:
        queries = [(question_name(f"q{i}.ooo.test", 1), -1, i) for i in range(3000)]
        got: dict[Any, Reply] = {}
        scanner = BulkScanner([Resolver("127.0.0.1", server.port)], deadline=4.0)
        stats = run_scan(scanner, iter(queries), lambda token, reply: got.__setitem__(token, reply))
    finally:
        server.close()
    assert len(got) == 3000 and all(reply is NXDOMAIN for reply in got.values())
    assert stats.timeouts == 0


# --- loss injected in front of rbldnsd -----------------------------------------------------------------


class DropProxy:
    """A UDP proxy on loopback in front of rbldnsd that drops a share of the queries and of the answers at
    random (seeded), and never forwards questions in `blackhole`: a resolver that is healthy but loses
    datagrams, and one name it never answers. Its own process (a forked child, ended by its PID at close),
    so it never waits for the scanner's GIL; one upstream socket per client socket."""

    def __init__(self, upstream_port: int, *, query_loss: float, answer_loss: float, seed: int,
                 blackhole: frozenset[bytes] = frozenset()) -> None:  # fmt: skip
        import multiprocessing

        self.upstream = ("127.0.0.1", upstream_port)
        self.query_loss, self.answer_loss, self.blackhole, self.seed = query_loss, answer_loss, blackhole, seed
        self.sock = self._socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        ctx = multiprocessing.get_context("fork")
        # dropped queries, dropped answers, forwarded queries, blackholed queries
        self.counts = ctx.Array("q", 4)
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=self._serve, daemon=True)
        self.proc.start()
        self.sock.close()  # the child's copy serves

    @staticmethod
    def _socket() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setblocking(False)
        return sock

    def _serve(self) -> None:
        import random
        import selectors

        rnd = random.Random(self.seed).random
        selector = selectors.DefaultSelector()
        selector.register(self.sock, selectors.EVENT_READ, None)
        clients: dict[Any, socket.socket] = {}
        counts = [0, 0, 0, 0]
        while not self.stop.is_set():
            for key, _ in selector.select(0.05):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                peer = key.data
                while True:
                    try:
                        data, source = sock.recvfrom(4096)
                    except BlockingIOError:
                        break
                    if peer is None:  # a query from a client
                        if data[12:] in self.blackhole:
                            counts[3] += 1
                        elif rnd() < self.query_loss:
                            counts[0] += 1
                        else:
                            up = clients.get(source)
                            if up is None:
                                up = clients[source] = self._socket()
                                up.connect(self.upstream)
                                selector.register(up, selectors.EVENT_READ, source)
                            counts[2] += 1
                            with contextlib.suppress(OSError):
                                up.send(data)
                    elif rnd() < self.answer_loss:
                        counts[1] += 1
                    else:
                        with contextlib.suppress(OSError):
                            self.sock.sendto(data, peer)
            self.counts[:] = counts

    def close(self) -> None:
        self.stop.set()
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()  # exactly the child we started
            self.proc.join(timeout=5)

    @property
    def dropped_queries(self) -> int:
        return int(self.counts[0])

    @property
    def dropped_answers(self) -> int:
        return int(self.counts[1])

    @property
    def blackholed(self) -> int:
        return int(self.counts[3])

    @property
    def resolver(self) -> str:
        return f"127.0.0.1:{self.port}"


def test_bulk_scan_through_a_lossy_path_loses_nothing(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    """20 % of the queries and 20 % of the answers lost at random (a third of the tries, on top of rbldnsd's
    own drops): every loss is asked again until its deadline, so nothing ends unknown and the listings are
    exactly rbldnsd's. The scanner's defaults: no option of the test makes it pass."""
    proxy = DropProxy(rbl.port, query_loss=0.2, answer_loss=0.2, seed=18)
    try:
        argv = ["vet", "198.18.0.0/18", "--zones", str(zones_file(tmp_path)), "--resolver", proxy.resolver]
        code = main([*argv, "--format", "json", "--no-ptr", "--no-asn", "--no-progress"])
    finally:
        proxy.close()
    report = json.loads(capsys.readouterr()[0])
    summary = report["summary"]
    assert proxy.dropped_queries > 3000 and proxy.dropped_answers > 3000  # the loss really happened
    assert summary["addresses"] == 16384 and summary["unknown"] == 0
    assert summary["listed"] == 16 and report["scan"]["timeouts"] == 0
    listed = {a["ip"] for a in report["addresses"] if a["verdict"] == "listed"}
    assert listed == {f"198.18.7.{h}" for h in range(1, 17)}
    assert [(n["cidr"], n["listed"]) for n in report["networks"] if n["listed"]] == [("198.18.7.0/24", 16)]
    assert all(n["unknown"] == 0 for n in report["networks"])
    assert report["scan"]["retries"] >= proxy.dropped_queries  # every drop was asked again
    assert code == 1


def test_a_name_never_answered_is_unknown_at_its_deadline(rbl: Rbldnsd, tmp_path: Path, capsys: Any) -> None:
    """The same lossy path, and one question (198.51.100.70 in zen.test) that is never answered: it ends
    unknown (a timeout, never clean) once its deadline has passed, and the whole vet ends soon after."""
    silent = question4(int(ipaddress.IPv4Address("198.51.100.70")), question_suffix("zen.test"))
    proxy = DropProxy(rbl.port, query_loss=0.2, answer_loss=0.2, seed=7, blackhole=frozenset({silent}))
    try:
        argv = ["vet", "198.51.100.64-198.51.100.71", "--zones", str(zones_file(tmp_path))]
        argv += ["--resolver", proxy.resolver, "--timeout", "2", "--format", "json", "--no-progress"]
        start = time.monotonic()
        code = main(argv)
        elapsed = time.monotonic() - start
    finally:
        proxy.close()
    report = json.loads(capsys.readouterr()[0])
    a = by_ip(report)
    assert a["198.51.100.70"]["verdict"] == "unknown" and not a["198.51.100.70"]["admitted"]
    assert a["198.51.100.70"]["errors"] == [
        {"zone": "zen.test", "codes": [], "detail": "no answer (timeout after every try)"}
    ]
    assert report["scan"]["timeouts"] == 1 and proxy.blackholed >= 3  # asked again and again, then given up
    assert [ip for ip, x in a.items() if x["verdict"] == "clean"] == [f"198.51.100.{h}" for h in (64, 65, 71)]
    assert a["198.51.100.66"]["verdict"] == a["198.51.100.67"]["verdict"] == "listed"
    assert report["networks"][0]["listed"] == 10 and report["networks"][0]["unknown"] == 3
    assert 2.0 <= elapsed < 4.0  # the deadline, plus the other phases (bounded, never a try count)
    assert code == 1
