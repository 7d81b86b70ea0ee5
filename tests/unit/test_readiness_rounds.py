"""The readiness rounds with fake submission, collection and evidence (no network, no sleeping)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from sendfleet.core.inventory import ResolverSettings
from sendfleet.core.readiness import Submission
from sendfleet.readiness import run as run_mod
from sendfleet.readiness.evidence import Collected, DnsView
from sendfleet.readiness.submit import Outgoing
from tests.unit.test_readiness_core import ROUTE, good

ROUTE3 = replace(
    ROUTE,
    ips=("198.51.100.64", "198.51.100.65", "198.51.100.69"),
    ptrs={**ROUTE.ptrs, "198.51.100.69": "o69.mta1.lab.test"},
    helos={**ROUTE.helos, "198.51.100.69": "o69.mta1.lab.test"},
)


class FakeMx:
    """Accepts every submission; delivers through the given IPs in turn (an IP left out is 'not in service')."""

    description = "a fake MX"

    def __init__(self, ips: Sequence[str], refuse: bool = False) -> None:
        self.cycle = itertools.cycle(ips)
        self.refuse = refuse
        self.delivered: dict[str, Collected] = {}
        self.submitted = 0

    def submit(self, address: str, port: int, messages: Sequence[Outgoing], **_: Any) -> list[Submission]:
        self.submitted += len(messages)
        if self.refuse:
            return [Submission(m.tag, m.host, m.domain, False, "451 4.7.1 try later", refused=True) for m in messages]
        for m in messages:
            ip = next(self.cycle)
            self.delivered[m.tag] = Collected(m.tag, ip, ROUTE3.ptrs[ip], "TLSv1.3", m.mail_from, m.data)
        return [Submission(m.tag, m.host, m.domain, True) for m in messages]

    def collect(self, tags: set[str]) -> dict[str, Collected]:
        return {t: c for t, c in self.delivered.items() if t in tags}


def _run(monkeypatch: pytest.MonkeyPatch, mx: FakeMx, cap: int = 4) -> Any:
    monkeypatch.setattr(run_mod, "submit", mx.submit)
    monkeypatch.setattr(
        run_mod, "gather",
        lambda view, msg, host, domain: replace(good(), tag=msg.tag, client_ip=msg.client_ip, helo=msg.helo,
                                                ptr_names=(msg.helo,), forward={msg.helo: (msg.client_ip,)}),
    )
    options = run_mod.Options(recipient="r+{tag}@gmail.test", cap_per_ip=cap, wait=5, poll=0)
    clock = itertools.count()
    return run_mod.run([ROUTE3], mx, DnsView(ResolverSettings(("127.0.0.1",))), options,
                       clock=lambda: float(next(clock)), sleep=lambda _s: None)


def test_every_ip_seen_in_the_first_round(monkeypatch: pytest.MonkeyPatch) -> None:
    mx = FakeMx(ROUTE3.ips)
    report = _run(monkeypatch, mx)
    assert report.exit_code == 0 and mx.submitted == 6
    assert {r.ip: r.messages for r in report.rows} == dict.fromkeys(ROUTE3.ips, 2)


def test_an_ip_never_used_gets_rounds_up_to_the_cap_then_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    mx = FakeMx(ROUTE3.ips[:2])
    report = _run(monkeypatch, mx, cap=4)
    assert mx.submitted == 12  # 3 IPs x cap 4
    verdicts = {r.ip: r.verdict for r in report.rows}
    assert verdicts == {"198.51.100.64": "pass", "198.51.100.65": "pass", "198.51.100.69": "fail"}
    assert report.exit_code == 1


def test_refused_submissions_stop_after_one_round(monkeypatch: pytest.MonkeyPatch) -> None:
    mx = FakeMx(ROUTE3.ips, refuse=True)
    report = _run(monkeypatch, mx)
    assert mx.submitted == 6 and report.exit_code == 1
    assert all("451 4.7.1" in r.problems[0] for r in report.rows)

