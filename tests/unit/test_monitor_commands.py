"""`sendfleet warmup plan` and `sendfleet report` on a small inventory (no hosts: report reads --from-dir)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from PIL import Image

from sendfleet.cli import main
from sendfleet.core import maillog


def inventory(tmp: Path) -> Path:
    inv = tmp / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "host_vars").mkdir()
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n    senders:\n      hosts:\n        mta1:\n          ansible_host: 198.51.100.10\n"
    )
    (inv / "group_vars" / "all" / "pools.yml").write_text(
        "pools: {transactional: {}}\n"
        "sender_domains: {shop.test: {pool: transactional, selectors: [s1]}}\n"
        "warmup: {growth: 1.4, resolution: 20}\n"
        "host_domain: lab.test\nadmin_networks: [198.51.100.0/28]\nsending_ips_require_vetted: false\n"
    )
    (inv / "host_vars" / "mta1.yml").write_text(
        "sending_ips:\n"
        "  - {ip: 198.51.100.70, pool: transactional, ptr: o70.mta1.lab.test, warmup_start: 2026-11-26}\n"
        "  - {ip: 198.51.100.72, pool: transactional, ptr: o72.mta1.lab.test}\n"
        "  - {ip: 198.51.100.73, pool: transactional, ptr: o73.mta1.lab.test}\n"
    )
    return inv


def test_warmup_plan_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = inventory(tmp_path)
    assert main(["warmup", "plan", "-i", str(inv), "--today", "2026-11-27", "--days", "2", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_ip = {i["ip"]: i for i in data["ips"]}
    warming = by_ip["198.51.100.70"]
    assert warming["today"]["stage"] == "day 1" and warming["today"]["weight"] == 1
    assert warming["today"]["limits"] == {"concurrency_limit": 1, "rate_delay": 129}
    assert warming["today"]["share"] == pytest.approx(1 / 41, abs=1e-4)
    assert [d["stage"] for d in warming["days"]] == ["day 1", "day 2", "day 3"]
    assert by_ip["198.51.100.72"]["today"]["stage"] == "warm" and by_ip["198.51.100.72"]["today"]["weight"] == 20


def test_warmup_plan_reads_what_the_hosts_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--from-dir: a restart recorded after an idle period wins over the inventory's older warmup_start, an IP
    idle longer than restart_after_idle_days (default 30) restarts today, and a drained IP gets weight 0 with
    the shares of its pool renormalised, as the postfix role applies it."""
    inv = inventory(tmp_path)
    facts = tmp_path / "facts" / "mta1"
    facts.mkdir(parents=True)
    idle_since = time.mktime((2026, 9, 1, 12, 0, 0, 0, 0, -1))
    (facts / "sendfleet_monitor.fact").write_text(json.dumps({
        "restarts": {"198.51.100.72": "2026-11-25"},
        "last_sent": {"198.51.100.73": idle_since, "198.51.100.70": "not a time"},
        "drained": ["198.51.100.70"],
    }))
    args = ["warmup", "plan", "-i", str(inv), "--today", "2026-11-27", "--days", "1", "--format", "json"]
    assert main([*args, "--from-dir", str(tmp_path / "facts")]) == 0
    data = json.loads(capsys.readouterr().out)
    by_ip = {i["ip"]: i for i in data["ips"]}
    assert data["hosts_read"] == ["mta1"]
    restarted = by_ip["198.51.100.72"]
    assert restarted["restarted"] == "2026-11-25" and restarted["today"]["stage"] == "day 2"
    idle = by_ip["198.51.100.73"]
    assert idle["today"]["stage"] == "day 0" and idle["days"][1]["stage"] == "day 1"
    assert idle["restarted"] == "2026-11-27"
    drained = by_ip["198.51.100.70"]
    assert drained["drained"] and drained["today"]["stage"] == "drained" and drained["today"]["weight"] == 0
    live = [by_ip[ip]["today"] for ip in ("198.51.100.72", "198.51.100.73")]
    assert sum(d["share"] for d in live) == pytest.approx(1.0, abs=1e-3)
    # without --from-dir the same inventory plans from itself: nothing drained, no restart
    assert main(args) == 0
    plain = {i["ip"]: i for i in json.loads(capsys.readouterr().out)["ips"]}
    assert plain["198.51.100.70"]["today"]["stage"] == "day 1" and plain["198.51.100.72"]["restarted"] is None


def test_warmup_plan_from_a_host_without_a_fact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = inventory(tmp_path)
    (tmp_path / "facts").mkdir()
    assert main(["warmup", "plan", "-i", str(inv), "--from-dir", str(tmp_path / "facts"), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert "mta1: no monitor fact (sendfleet_monitor.fact) yet: planned from the inventory alone" in captured.err
    (tmp_path / "facts" / "mta1").mkdir()
    (tmp_path / "facts" / "mta1" / "sendfleet_monitor.fact").write_text("{not json")
    assert main(["warmup", "plan", "-i", str(inv), "--from-dir", str(tmp_path / "facts")]) == 2
    err = capsys.readouterr().err
    assert "sendfleet_monitor.fact: cannot read it as JSON" in err and "Traceback" not in err


def test_warmup_plan_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = inventory(tmp_path)
    assert main(["warmup", "plan", "-i", str(inv), "--today", "tomorrow"]) == 2
    assert "--today 'tomorrow'" in capsys.readouterr().err
    (inv / "group_vars" / "all" / "pools.yml").write_text(
        "pools: {transactional: {}}\nsender_domains: {}\nwarmup: {speed: 3}\n"
        "host_domain: lab.test\nadmin_networks: [198.51.100.0/28]\nsending_ips_require_vetted: false\n"
    )
    assert main(["warmup", "plan", "-i", str(inv)]) == 2
    assert "warmup.speed: unknown setting" in capsys.readouterr().err


def test_report_table_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = inventory(tmp_path)
    book = maillog.DeliveryBook({"sf_198_51_100_72": "198.51.100.72"}, ("gmail", "yahoo"))
    now = time.time()
    line_sent = ("Q1: to=<a@gmail.test>, relay=sink[198.51.100.20]:25, delay=0.1, delays=0/0/0/0, dsn=2.0.0, "
                 "status=sent (250 ok)")
    line_def = ("Q2: to=<b@yahoo.test>, relay=sink[198.51.100.20]:25, delay=0.1, delays=0/0/0/0, dsn=4.7.0, "
                "status=deferred (host sink[198.51.100.20] said: 421 4.7.0 rate limited (in reply to RCPT TO command))")
    for line, ts, klass in ((line_sent, now, "_gmail"), (line_sent, now - 600, "_gmail"), (line_def, now, "_yahoo"),
                            (line_sent, now - 48 * 3600, "_gmail"), (line_sent, now, "")):
        d = maillog.parse_delivery(f"postfix/sf_198_51_100_72{klass}/smtp", line, ts)
        assert d is not None
        book.add(d)
    host_dir = tmp_path / "data" / "mta1"
    host_dir.mkdir(parents=True)
    old = book.as_dict()  # plus a row of a file written when labels were recipient domains: shown as other
    old["hours"][maillog.hour_key(now)].append({"ip": "198.51.100.72", "provider": "smallbiz.test", "status": "sent",
                                                "count": 4})
    (host_dir / "delivery.json").write_text(json.dumps(old))
    (host_dir / "state.json").write_text(json.dumps(
        {"ips": {"198.51.100.72": {"pool": "transactional", "status": "drained"}},
         "verdicts": {"198.51.100.72": {"verdict": "listed"}}}))
    png = tmp_path / "chart.png"
    args = ["report", "-i", str(inv), "--from-dir", str(tmp_path / "data"), "--hours", "24"]
    assert main([*args, "--format", "json", "--png", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {(r["ip"], r["provider"]): r for r in report["rows"]}
    assert rows[("198.51.100.72", "gmail")]["sent"] == 2  # the one 48 h ago is outside the window
    assert rows[("198.51.100.72", "yahoo")]["deferred"] == 1
    assert rows[("198.51.100.72", "other")]["sent"] == 5
    assert {r["provider"] for r in report["rows"]} == {"gmail", "yahoo", "other"}
    assert report["reasons"][0]["reason"] == "421 4.7.0 rate limited"
    assert report["ips"][0]["status"] == "drained"
    assert len(report["per_hour"]) == 24
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] == 1000
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "198.51.100.72" in out and "421 4.7.0 rate limited" in out
    assert main([*args, "--hours", "0"]) == 2
