"""The monitoring host's DNS drift check (`python -m sendfleet.monitor dnsdrift`) against a real knotd on 127.0.0.1
(the fixtures of test_dns_knot: one knotd started and killed by PID): the plan from `sendfleet dns plan --format
json`, published by `sendfleet dns apply`, then changed behind sendfleet's back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from sendfleet.cli import main
from sendfleet.core.metrics import parse
from tests.local.test_dns_knot import Knot, inventory, knot  # noqa: F401  (fixtures)

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def drift_check(plan: Path, out: Path, port: int) -> tuple[int, dict[tuple[str, str], float], float, str]:
    """Run the check as the timer's unit does (a separate Python), return (exit code, drift per (name, type),
    check_ok, its log)."""
    proc = subprocess.run(
        [sys.executable, "-m", "sendfleet.monitor", "dnsdrift", "--plan", str(plan), "--textfile-dir", str(out),
         "--nameserver", "127.0.0.1", "--port", str(port), "--interval", "5min"],
        cwd=SCRIPTS, capture_output=True, text=True, timeout=120)
    samples = parse((out / "sendfleet_dns.prom").read_text())
    drift = {}
    for (name, labels), value in samples.items():
        if name == "sendfleet_dns_record_drift":
            lab = dict(labels)
            drift[(lab["name"], lab["type"])] = value
    return proc.returncode, drift, samples[("sendfleet_dns_check_ok", ())], proc.stdout + proc.stderr


def test_published_plan_has_no_drift_until_someone_changes_the_spf(
        inventory: Path, knot: Knot, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert main(["dns", "plan", "-i", str(inventory), "--format", "json"]) == 0
    plan = tmp_path / "dns-plan.json"
    plan.write_text(capsys.readouterr().out)
    out = tmp_path / "textfile"

    code, drift, ok, log = drift_check(plan, out, knot.port)  # nothing published yet
    assert (code, ok) == (0, 1), log
    assert drift[("shop.test", "TXT")] == 1 and drift[("o70.mta1.lab.test", "A")] == 1

    assert main(["dns", "apply", "-i", str(inventory)]) == 0
    code, drift, ok, log = drift_check(plan, out, knot.port)
    assert (code, ok) == (0, 1), log
    planned = {(r["name"], r["type"]) for r in json.loads(plan.read_text())["records"]
               if r["publish"] == "rfc2136" and r["error"] is None}
    assert set(drift) == planned and len(planned) == 14  # every RRset apply sent
    assert set(drift.values()) == {0}, drift  # the site verification beside the SPF is not ours

    spf = next(t for t in knot.query("shop.test", "TXT") if t.startswith("v=spf1"))

    def change(upd: object) -> None:
        txt = dns.rdatatype.TXT
        upd.delete("shop.test.", dns.rdata.from_text(dns.rdataclass.IN, txt, f'"{spf}"'))  # type: ignore[attr-defined]
        upd.add("shop.test.", 300, dns.rdata.from_text(dns.rdataclass.IN, txt, '"v=spf1 +all"'))  # type: ignore[attr-defined]

    knot.update("shop.test", change)
    code, drift, ok, log = drift_check(plan, out, knot.port)
    assert (code, ok) == (0, 1), log
    assert [k for k, v in drift.items() if v == 1] == [("shop.test", "TXT")]
    assert "drift: shop.test TXT (zone shop.test) differs from the plan" in log

    code, drift, ok, log = drift_check(plan, out, 1)  # nobody answers there
    assert (code, ok) == (3, 0), log
    assert set(drift.values()) == {0}  # unknown, not drift
