"""The drain/restore state machine (sendfleet.core.drain): listed drains, N clean checks restore,
unknown never drains and never restores, the last IP of a pool is kept unless drain_last."""

from __future__ import annotations

from collections.abc import Mapping

from sendfleet.core import drain
from sendfleet.core.drain import DRAINED, IN_SERVICE, DrainSettings, IpState, Verdict

POOL = [("198.51.100.70", "t"), ("198.51.100.72", "t"), ("198.51.100.73", "t")]
EVIDENCE = ({"zone": "zen.lab.test", "outcome": "listed", "codes": ["127.0.0.2"]},)


def v(verdicts: Mapping[str, str]) -> dict[str, Verdict]:
    return {ip: Verdict(ip, x, EVIDENCE if x == "listed" else ()) for ip, x in verdicts.items()}


DEFAULT = DrainSettings()


def run(prev: Mapping[str, IpState], verdicts: Mapping[str, str], settings: DrainSettings = DEFAULT,
        members: list[tuple[str, str]] = POOL) -> drain.Transition:
    return drain.step(prev, members, v(verdicts), settings, "2026-11-27T20:00:00+00:00")


ALL_CLEAN = {ip: "clean" for ip, _ in POOL}


def test_listed_ip_is_drained_with_evidence() -> None:
    t = run({}, {**ALL_CLEAN, "198.51.100.70": "listed"})
    assert t.states["198.51.100.70"].status == DRAINED
    assert t.states["198.51.100.70"].evidence == EVIDENCE
    assert [(a.kind, a.ip) for a in t.actions] == [("drain", "198.51.100.70")]
    assert "zen.lab.test listed 127.0.0.2" in t.actions[0].message()
    assert t.changed


def test_restored_after_n_consecutive_clean_checks() -> None:
    s = run({}, {**ALL_CLEAN, "198.51.100.70": "listed"}).states
    for i in range(2):
        t = run(s, ALL_CLEAN)
        s = t.states
        assert s["198.51.100.70"].status == DRAINED and s["198.51.100.70"].clean_streak == i + 1
        assert not t.actions
    t = run(s, ALL_CLEAN)
    assert t.states["198.51.100.70"].status == IN_SERVICE
    assert [a.kind for a in t.actions] == ["restore"]


def test_unknown_never_drains() -> None:
    t = run({}, {ip: "unknown" for ip, _ in POOL})
    assert all(s.status == IN_SERVICE for s in t.states.values())
    assert not t.actions
    # an IP missing from the verdicts (the check failed) counts as unknown
    t = run({}, {})
    assert all(s.status == IN_SERVICE for s in t.states.values()) and not t.actions


def test_unknown_never_restores_and_breaks_the_streak() -> None:
    s = run({}, {**ALL_CLEAN, "198.51.100.70": "listed"}).states
    s = run(s, ALL_CLEAN).states
    s = run(s, ALL_CLEAN).states
    assert s["198.51.100.70"].clean_streak == 2
    t = run(s, {**ALL_CLEAN, "198.51.100.70": "unknown"})
    assert t.states["198.51.100.70"].status == DRAINED and t.states["198.51.100.70"].clean_streak == 0
    assert not t.actions
    for _ in range(10):
        t = run(t.states, {ip: "unknown" for ip, _ in POOL})
        assert t.states["198.51.100.70"].status == DRAINED and not t.actions


def test_relisting_restarts_the_streak() -> None:
    s = run({}, {**ALL_CLEAN, "198.51.100.70": "listed"}).states
    s = run(s, ALL_CLEAN).states
    s = run(s, {**ALL_CLEAN, "198.51.100.70": "listed"}).states
    assert s["198.51.100.70"].status == DRAINED and s["198.51.100.70"].clean_streak == 0


def test_last_ip_of_a_pool_is_kept_unless_drain_last() -> None:
    listed_all = {ip: "listed" for ip, _ in POOL}
    t = run({}, listed_all)
    kinds = [(a.kind, a.ip) for a in t.actions]
    assert kinds == [("drain", "198.51.100.70"), ("drain", "198.51.100.72"), ("blocked", "198.51.100.73")]
    assert t.states["198.51.100.73"].status == IN_SERVICE and t.states["198.51.100.73"].drain_blocked
    t = run({}, listed_all, DrainSettings(drain_last=True))
    assert all(s.status == DRAINED for s in t.states.values())


def test_auto_drain_off_reports_only() -> None:
    t = run({}, {**ALL_CLEAN, "198.51.100.70": "listed"}, DrainSettings(auto_drain=False))
    assert t.states["198.51.100.70"].status == IN_SERVICE
    assert [a.kind for a in t.actions] == ["listed_no_drain"] and not t.changed


def test_removed_ip_is_forgotten_and_state_roundtrips() -> None:
    s = run({}, {**ALL_CLEAN, "198.51.100.70": "listed"}).states
    again = {ip: IpState.from_dict(st.as_dict()) for ip, st in s.items()}
    assert again == s
    t = run(again, ALL_CLEAN, members=POOL[1:])
    assert "198.51.100.70" not in t.states
    assert [a.kind for a in t.actions] == ["forget"]
