"""The recipient's provider class in the feedback processor: which reply rules classify a bounce once the MX lookup
told the class (the shaper's: the class's own, then `other`'s), and the bounded metric series."""

from __future__ import annotations

from pathlib import Path

from sendfleet.core import shaping
from sendfleet.core.feedback import Bounce, classify_bounce, reply_rules
from sendfleet.dns import mx
from sendfleet.feedback import config, processor

CLASSES = shaping.parse_classes(shaping.default_data())
ANVIL = "421 4.7.0 Error: too many connections from 198.51.100.70"  # Postfix anvil: rule other-rate-limited


def test_rules_for_a_class_are_its_own_then_others() -> None:
    gmail = shaping.rules_for(CLASSES, "gmail")
    assert gmail == (*CLASSES["gmail"].rules, *CLASSES["other"].rules)
    assert shaping.rules_for(CLASSES, "other") == CLASSES["other"].rules
    assert shaping.rules_for(CLASSES, "nosuchclass") == CLASSES["other"].rules
    assert reply_rules(CLASSES, "gmail") == gmail
    assert len(reply_rules(CLASSES)) == sum(len(c.rules) for c in CLASSES.values())  # class unknown: all


def test_a_known_class_keeps_others_generic_rules() -> None:
    # a 4xx would be soft; other's rate-limit rule makes it a block for a gmail-class recipient too
    assert classify_bounce("4.7.0", ANVIL, CLASSES, "gmail") == "block"
    assert classify_bounce("4.7.0", "421 4.7.0 try again", CLASSES, "gmail") == "soft"


def test_a_known_class_drops_the_other_providers_rules() -> None:
    s3150 = "550 5.0.0 Unfortunately, messages from [198.51.100.70] weren't sent. (S3150)"
    assert classify_bounce("5.0.0", s3150, CLASSES) == "block"  # class unknown: Microsoft's rule matches
    assert classify_bounce("5.0.0", s3150, CLASSES, "outlook") == "block"
    assert classify_bounce("5.0.0", s3150, CLASSES, "gmail") == "hard"  # a bare 5xx from Gmail's server


def _cfg(tmp_path: Path, domains: int, ips: int) -> config.Config:
    return config.from_data({
        "database": "dbname=x", "dead_letter_dir": str(tmp_path / "dl"), "textfile_dir": str(tmp_path),
        "bounce_domains": {f"bounces.d{n}.test": f"d{n}.test" for n in range(domains)},
        "fleet_ips": [f"198.51.100.{70 + n}" for n in range(ips)],
    }, tmp_path / "feedback.yml")


def test_with_class_reclassifies_failed_bounces_only(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, 1, 1)
    s3150 = "550 5.0.0 Messages from [198.51.100.70] weren't sent. (S3150)"
    failed = Bounce("a@gmail.test", "d0.test", "failed", "5.0.0", "block", s3150, None, None)
    assert processor.with_class(cfg, failed, "gmail").kind == "hard"
    assert processor.with_class(cfg, failed, "outlook") is failed
    delayed = Bounce("a@gmail.test", "d0.test", "delayed", "4.0.0", "soft", "421 [TSS04] deferred", None, None)
    assert processor.with_class(cfg, delayed, "yahoo") is delayed


def test_mx_classifier_tells_a_failed_lookup_from_class_other() -> None:
    hosts = {"gmail.test": ("alt1.gmail-smtp-in.l.google.com",), "small.test": ("mx.small.test",)}
    classify = processor.MxClassifier(
        CLASSES, lookup=lambda d: mx.MxAnswer(mx.OK, hosts[d]) if d in hosts else mx.MxAnswer(mx.FAILED))
    assert [classify(r) for r in ("a@Gmail.TEST", "b@small.test", "c@gone.test")] == ["gmail", "other", "other"]
    assert [classify.known(r) for r in ("a@gmail.test", "b@small.test", "c@gone.test")] == [True, True, False]


def test_metric_series_are_the_bounded_product(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, 3, 5)
    series = processor.metric_series(cfg)
    classes = len(cfg.classes)
    assert len(series["sendfleet_feedback_bounces_total"]) == 4 * 6 * classes * 3
    assert len(series["sendfleet_feedback_complaints_total"]) == 4 * 6 * classes
    assert len(series["sendfleet_feedback_messages_total"]) == len(processor.MESSAGE_SERIES) == 5
    labels = series["sendfleet_feedback_bounces_total"]
    assert {x["sender_domain"] for x in labels} == {"d0.test", "d1.test", "d2.test", "other"}
    assert {x["ip"] for x in labels} == {f"198.51.100.{70 + n}" for n in range(5)} | {"unknown"}
    assert {x["provider"] for x in labels} == set(CLASSES)
    assert {x["class"] for x in labels} == {"hard", "soft", "block"}
    assert len({tuple(sorted(x.items())) for x in labels}) == len(labels)  # no duplicate
