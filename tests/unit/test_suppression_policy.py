"""sendfleet.core.suppression: which feedback events suppress a recipient, for how long, and what an entry says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sendfleet.core.feedback import Bounce, Complaint
from sendfleet.core.suppression import (
    Entry,
    Event,
    Policy,
    PolicyError,
    address_key,
    bounce_event,
    complaint_event,
    decide,
    manual_entry,
    merge,
    parse_policy,
)

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
POLICY = Policy(soft_bounces=3, soft_window_days=7, hard_expiry_days=None, complaint_expiry_days=None,
                soft_expiry_days=30)


def soft(at: datetime, action: str = "failed") -> Event:
    return Event(at, "bounce", "soft", action, "5.2.2", "552 5.2.2 Mailbox full", "dsn from mx.b.test")


def test_a_hard_bounce_suppresses_at_once_for_good() -> None:
    b = Bounce("Alice@gmail.test", "shop.test", "failed", "5.1.1", "hard", "550-5.1.1 The email account ... does "
               "not exist", "gmail-smtp-in.l.google.com", None, "mta1.shop.test")
    entry = decide("Alice@Gmail.TEST", bounce_event(b, T0), [], POLICY)
    assert entry == Entry("Alice@gmail.test", "hard-bounce", "dsn from gmail-smtp-in.l.google.com", T0, None,
                          "5.1.1 550-5.1.1 The email account ... does not exist")


def test_hard_expiry_days() -> None:
    ev = Event(T0, "bounce", "hard", "failed", "5.1.1", "550 5.1.1 unknown", "dsn")
    entry = decide("a@b.test", ev, [], Policy(hard_expiry_days=90))
    assert entry is not None and entry.expires == T0 + timedelta(days=90)


def test_a_complaint_suppresses_at_once() -> None:
    c = Complaint("carol@yahoo.test", "shop.test", "198.51.100.70", "abuse", "arf.mail.yahoo.com", None)
    entry = decide("carol@yahoo.test", complaint_event(c, T0), [], POLICY)
    assert entry is not None
    assert (entry.reason, entry.source, entry.expires, entry.detail) == (
        "complaint", "arf from arf.mail.yahoo.com", None, "abuse complaint")
    entry = decide("carol@yahoo.test", complaint_event(c, T0), [], Policy(complaint_expiry_days=365))
    assert entry is not None and entry.expires == T0 + timedelta(days=365)


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure"])
def test_complaints_that_are_not_complaints_do_not_suppress(feedback_type: str) -> None:
    assert decide("a@b.test", Event(T0, "complaint", feedback_type=feedback_type), [], POLICY) is None


def test_a_block_never_suppresses_however_many() -> None:
    block = Event(T0, "bounce", "block", "failed", "5.7.26", "550-5.7.26 unauthenticated", "dsn")
    earlier = [Event(T0 - timedelta(hours=h), "bounce", "block", "failed", "5.7.26", "", "dsn") for h in range(1, 9)]
    assert decide("a@b.test", block, earlier, POLICY) is None


def test_soft_bounces_suppress_at_the_threshold_within_the_window() -> None:
    first, second, third = soft(T0 - timedelta(days=5)), soft(T0 - timedelta(days=1)), soft(T0)
    assert decide("a@b.test", second, [first], POLICY) is None  # 2 of 3
    entry = decide("a@b.test", third, [first, second], POLICY)
    assert entry is not None
    assert (entry.reason, entry.created, entry.expires) == ("soft-bounces", T0, T0 + timedelta(days=30))
    assert entry.detail == "3 soft bounces in 7 days, last: 5.2.2 552 5.2.2 Mailbox full"


def test_the_new_event_among_the_recent_ones_counts_once() -> None:
    first, second, third = soft(T0 - timedelta(days=2)), soft(T0 - timedelta(days=1)), soft(T0)
    assert decide("a@b.test", second, [first, second], POLICY) is None
    assert decide("a@b.test", third, [first, second, third], POLICY) is not None


def test_old_soft_bounces_delayed_dsns_and_later_events_do_not_count() -> None:
    outside = soft(T0 - timedelta(days=7))  # exactly the window's length ago: out
    delayed = [soft(T0 - timedelta(hours=h), "delayed") for h in range(1, 6)]
    later = soft(T0 + timedelta(hours=1))  # after the event being decided
    assert decide("a@b.test", soft(T0), [outside, *delayed, later, soft(T0 - timedelta(days=3))], POLICY) is None
    assert decide("a@b.test", soft(T0), [soft(T0 - timedelta(days=6, hours=23)), soft(T0 - timedelta(days=3))],
                  POLICY) is not None


def test_a_delayed_dsn_never_suppresses() -> None:
    assert decide("a@b.test", soft(T0, "delayed"), [soft(T0 - timedelta(hours=1))] * 5, POLICY) is None


def test_naive_times_are_utc() -> None:
    ev = Event(datetime(2026, 12, 2, 10, 0), "bounce", "hard", "failed", "5.1.1", "", "dsn")
    entry = decide("a@b.test", ev, [], POLICY)
    assert entry is not None and entry.created == T0 and entry.created.tzinfo is not None


def test_a_bad_address_is_refused() -> None:
    with pytest.raises(PolicyError, match="not a mail address"):
        decide("not an address", soft(T0), [], POLICY)
    assert address_key("<Alice@Gmail.TEST>") == "alice@gmail.test"


def test_parse_policy() -> None:
    assert parse_policy(None) == Policy()
    assert parse_policy({"soft_bounces": 5, "hard_expiry_days": 365, "soft_expiry_days": None}) == Policy(
        soft_bounces=5, hard_expiry_days=365, soft_expiry_days=None)
    assert parse_policy(Policy(2, 3, 4, 5, 6).as_dict()) == Policy(2, 3, 4, 5, 6)


@pytest.mark.parametrize(("raw", "error"), [
    ({"soft_bounces": 0}, r"policy\.soft_bounces: expected a whole number"),
    ({"soft_bounces": None}, r"policy\.soft_bounces: expected a whole number 1-36500, got None"),
    ({"soft_window_days": "7"}, r"policy\.soft_window_days"),
    ({"hard_expiry_days": True}, r"policy\.hard_expiry_days: expected a whole number 1-36500 or null"),
    ({"soft_bounce": 3}, r"policy\.soft_bounce: unknown key"),
    ([1, 2], r"policy: expected a mapping"),
])
def test_parse_policy_names_the_bad_key(raw: object, error: str) -> None:
    with pytest.raises(PolicyError, match=error):
        parse_policy(raw)


def test_manual_entry() -> None:
    entry = manual_entry("Bob@Example.TEST", T0, detail="asked by phone")
    assert entry == Entry("Bob@example.test", "manual", "operator", T0, None, "asked by phone")
    imported = manual_entry("c@d.test", T0, reason="import", source="import:old.csv", expires=T0 + timedelta(days=1))
    assert (imported.reason, imported.source, imported.expires) == ("import", "import:old.csv", T0 + timedelta(days=1))
    with pytest.raises(PolicyError, match="reason"):
        manual_entry("c@d.test", T0, reason="because")
    with pytest.raises(PolicyError, match="is not after"):
        manual_entry("c@d.test", T0, expires=T0)


def test_merge_keeps_the_longer_lasting_entry() -> None:
    soft_entry = Entry("a@b.test", "soft-bounces", "dsn", T0, T0 + timedelta(days=30), "x")
    hard_entry = Entry("a@b.test", "hard-bounce", "dsn", T0 + timedelta(days=1), None, "y")
    later = T0 + timedelta(days=2)
    assert merge(None, soft_entry, later) == soft_entry
    assert merge(soft_entry, hard_entry, later) == hard_entry
    assert merge(hard_entry, soft_entry, later) == hard_entry
    same_end = Entry("a@b.test", "complaint", "arf", T0 + timedelta(days=1), T0 + timedelta(days=30), "z")
    assert merge(soft_entry, same_end, later) == soft_entry  # a tie keeps the old one
    # an expired entry gives way to anything
    assert merge(soft_entry, same_end, T0 + timedelta(days=31)) == same_end
    assert soft_entry.active(T0 + timedelta(days=29)) and not soft_entry.active(T0 + timedelta(days=30))
