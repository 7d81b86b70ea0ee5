"""Readiness on the converged lab: mail through every sending IP for every sender domain of its pool
reaches the sink and passes every check (IP, FCrDNS, HELO = PTR, DKIM, SPF, DMARC, TLS)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.e2e import helpers
from tests.lab.conftest import LabHandle

pytestmark = pytest.mark.lab


def test_readiness_passes_for_every_ip_and_domain(converged: LabHandle) -> None:
    inv = helpers.inventory(converged.inventory_dir)
    rc, report, err = helpers.run_readiness(converged.inventory_dir)
    rows = {(r["host"], r["ip"], r["domain"]): r for r in report["rows"]}
    assert set(rows) == helpers.expected_rows(inv), helpers.describe(report)
    assert rc == 0, f"readiness exited {rc}:\n{helpers.describe(report)}\n{err}"
    for key, row in rows.items():
        assert row["verdict"] == "pass" and row["messages"] >= 1, f"{key}: {row}"
        assert all(c is not None and c["ok"] for c in row["checks"].values()), f"{key}: {row['checks']}"
    assert set(report["by_domain"]) == set(inv.sender_domains)
    assert {v["verdict"] for v in report["by_ip"].values()} == {"pass"}


def test_readiness_table_output(converged: LabHandle) -> None:
    """The table format: one row per IP and domain, the summary, exit 0 (limited to one host for time)."""
    inv = helpers.inventory(converged.inventory_dir)
    host = sorted(h.name for h in inv.hosts.values() if h.sending_ips)[0]
    proc = subprocess.run(
        [sys.executable, "-m", "sendfleet", "readiness", "-i", str(converged.inventory_dir), "--host", host],
        cwd=helpers.REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "220"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for s in inv.hosts[host].sending_ips:
        assert str(s.ip) in proc.stdout
    assert "verdict: pass" in proc.stdout


def test_collect_from_a_directory_of_raw_messages(converged: LabHandle) -> None:
    """The production path: messages read as raw files (client IP, HELO, TLS from the MX's Received header),
    here the sink's own store of .eml files, for one host and domain."""
    from sendfleet.lab import sink

    inv = helpers.inventory(converged.inventory_dir)
    sip = inv.sending_ips()[0]
    domain = next(d.name for d in inv.sender_domains.values() if d.pool == sip.pool)
    rc, report, err = helpers.run_readiness(
        converged.inventory_dir, "--host", sip.host, "--domain", domain, "--collect-from", str(sink.spool_dir())
    )
    assert rc == 0, f"{helpers.describe(report)}\n{err}"
    assert {r["ip"] for r in report["rows"]} == {str(s.ip) for s in inv.hosts[sip.host].sending_ips
                                                 if s.pool == sip.pool}


def test_bad_input_is_one_line_and_exit_2(converged: LabHandle) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sendfleet", "readiness", "-i", str(converged.inventory_dir), "--host", "nosuch"],
        cwd=helpers.REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "--host nosuch" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
