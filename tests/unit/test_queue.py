"""postqueue -j -> counts per queue, oldest age per queue, deferred messages per provider class."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from sendfleet.core import queue

NOW = 1_764_730_000.0


def entry(queue_name: str, qid: str, age: float, *rcpts: str, reason: str | None = None) -> str:
    recipients = [{"address": r, **({"delay_reason": reason} if reason else {})} for r in rcpts]
    return json.dumps({"queue_name": queue_name, "queue_id": qid, "arrival_time": int(NOW - age),
                       "message_size": 1834, "sender": "b+a=gmail.test@bounces.shop.test", "recipients": recipients})


def test_parse_lines_and_skip_what_is_not_an_entry() -> None:
    lines = [
        entry("active", "A1", 5, "a@gmail.test"),
        "",
        "postqueue: warning: Mail system is down -- accessing queue directly",  # not JSON
        json.dumps({"queue_name": "bogus", "queue_id": "X"}),  # not a queue
        json.dumps(["a", "list"]),
        json.dumps({"queue_name": "deferred", "queue_id": "D1", "arrival_time": "soon"}),  # bad time
        entry("deferred", "D2", 7200, "a@Gmail.Test", "b@gmail.test", "c@yahoo.test", reason="421 busy"),
    ]
    messages, bad = queue.parse(lines)
    assert bad == 4
    assert [m.queue_id for m in messages] == ["A1", "D2"]
    d2 = messages[1]
    assert d2.recipients == ("a@Gmail.Test", "b@gmail.test", "c@yahoo.test")
    assert d2.domains == ("gmail.test", "yahoo.test")
    assert d2.arrival == NOW - 7200 and d2.size == 1834


def test_summary_counts_ages_and_deferred_per_class() -> None:
    lines = [
        entry("active", "A1", 30, "a@gmail.test"),
        entry("deferred", "D1", 600, "a@gmail.test", "b@corp-on-google.test"),  # two domains, one class
        entry("deferred", "D2", 7200, "a@gmail.test", "c@yahoo.test"),  # counts for both classes
        entry("deferred", "D3", 60, "d@unknown.test"),  # not classified yet: other
        entry("deferred", "D4", 60, "e@old-class.test"),  # a class no longer configured: other
        entry("hold", "H1", 86400, "f@yahoo.test"),
    ]
    messages, _ = queue.parse(lines)
    classes = {"gmail.test": "gmail", "corp-on-google.test": "gmail", "yahoo.test": "yahoo",
               "old-class.test": "aol"}
    summary = queue.summarise(messages, NOW, classes, ("gmail", "yahoo", "outlook"))
    assert summary.messages == {"active": 1, "deferred": 4, "hold": 1, "incoming": 0, "maildrop": 0}
    assert summary.oldest_seconds == {"active": 30, "deferred": 7200, "hold": 86400, "incoming": 0, "maildrop": 0}
    assert summary.deferred_by_provider == {"gmail": 2, "yahoo": 1, "outlook": 0, "other": 2}
    assert queue.deferred_domains(messages) == ["gmail.test", "corp-on-google.test", "old-class.test",
                                                "unknown.test", "yahoo.test"]


def test_empty_queue_and_clock_skew() -> None:
    summary = queue.summarise([], NOW, {}, ())
    assert set(summary.messages.values()) == {0} and set(summary.oldest_seconds.values()) == {0.0}
    assert summary.deferred_by_provider == {"other": 0}
    future, _ = queue.parse([entry("incoming", "I1", -30, "a@b.test")])  # arrival after now: age 0, not negative
    assert queue.summarise(future, NOW, {}, ()).oldest_seconds["incoming"] == 0.0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parse_never_raises(line: str) -> None:
    messages, bad = queue.parse([line])
    assert len(messages) + bad <= 1
