"""The feedback processor's textfile, rendered by sendfleet.core.metrics like every other textfile of the fleet:
its samples parse back with core.metrics.parse (label values with quotes, backslashes and newlines included) and
each sample line is the line core.metrics.render writes for it. The database is a stub here; the same text from
a real PostgreSQL is read in tests/local/test_feedback_store.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sendfleet.core import metrics, suppression
from sendfleet.feedback import config, processor, store

ODD = 'we"ird\\domain\nname'
COUNTED = [
    ("sendfleet_feedback_bounces_total",
     {"sender_domain": "d0.test", "ip": "198.51.100.70", "provider": "gmail", "class": "hard"}, 3),
    ("sendfleet_feedback_bounces_total",  # a sender domain since removed from the configuration
     {"sender_domain": ODD, "ip": "198.51.100.9", "provider": "gmail", "class": "soft"}, 2),
    ("sendfleet_feedback_messages_total", {"kind": "dsn", "outcome": "stored"}, 7),
]


@pytest.fixture()
def cfg(tmp_path: Path) -> config.Config:
    return config.from_data({
        "database": "dbname=x", "dead_letter_dir": str(tmp_path / "dl"), "textfile_dir": str(tmp_path),
        "bounce_domains": {"bounces.d0.test": "d0.test"}, "fleet_ips": ["198.51.100.70"],
    }, tmp_path / "feedback.yml")


@pytest.fixture()
def text(cfg: config.Config, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(store, "counters", lambda conn: COUNTED)
    monkeypatch.setattr(store, "active_by_reason", lambda conn: {"hard": 4, "complaint": 1})
    monkeypatch.setattr(store, "state", lambda conn, key: 1764676800.0 if key == "last_processed" else None)
    return processor.render_metrics(cfg, None)  # type: ignore[arg-type]


def test_the_samples_parse_back_with_core_metrics(cfg: config.Config, text: str) -> None:
    parsed = metrics.parse(text)
    bounces = {tuple(sorted(lbl.items())): v
               for lbl, v in metrics.samples_of(parsed, "sendfleet_feedback_bounces_total")}
    assert bounces[tuple(sorted(COUNTED[0][1].items()))] == 3
    assert bounces[tuple(sorted(COUNTED[1][1].items()))] == 2  # the odd label value, unescaped as it was
    assert sum(bounces.values()) == 5 and len(bounces) == 2 * 2 * len(cfg.classes) * 3 + 1  # (D+1)(I+1)C x 3, ODD's
    assert metrics.samples_of(parsed, "sendfleet_feedback_messages_total") == [
        ({"kind": k, "outcome": o}, 7.0 if (k, o) == ("dsn", "stored") else 0.0) for k, o in processor.MESSAGE_SERIES]
    assert sorted(metrics.samples_of(parsed, "sendfleet_suppression_entries"), key=str) == sorted(
        (({"reason": r}, {"hard": 4.0, "complaint": 1.0}.get(r, 0.0)) for r in suppression.REASONS), key=str)
    assert parsed[("sendfleet_feedback_last_processed_timestamp_seconds", ())] == 1764676800.0


def test_every_line_is_the_one_core_metrics_renders(text: str) -> None:
    kinds = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert kinds == {"sendfleet_feedback_messages_total": "counter", "sendfleet_feedback_bounces_total": "counter",
                     "sendfleet_feedback_complaints_total": "counter", "sendfleet_suppression_entries": "gauge",
                     "sendfleet_feedback_last_processed_timestamp_seconds": "gauge"}
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    for (name, labels), value in metrics.parse(text).items():
        family = metrics.Family(name, "", kinds[name])
        family.add(value, **dict(labels))  # labels in name order, as the processor writes them
        line: Any = metrics.render([family]).splitlines()[-1]
        assert line in samples, line
    assert len(samples) == len(metrics.parse(text))  # no series twice
