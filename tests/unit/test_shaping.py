"""sendfleet.core.shaping: provider classes (validation naming the key, merge, round trip), classification by MX
suffix, reply rules, the (IP, class) path states, the sliding window, the weighted choice and warm-up caps."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sendfleet.core import shaping
from sendfleet.core.shaping import (
    Member,
    PathState,
    ShapingError,
    Window,
    choose,
    classify,
    daily_caps,
    match_rule,
    merge,
    parse_classes,
    react,
)

NOW = 1_800_000_000.0  # a whole minute: 30,000,000 x 60

BASE: dict[str, Any] = {
    "gmail": {
        "description": "Gmail and Google Workspace",
        "mx_suffixes": ["google.com", "googlemail.com"],
        "limits": {"connections": 5, "messages_per_connection": 50,
                   "messages_per_minute": None, "messages_per_hour": None},
        "warmup_share": 0.5,
        "sources": {"mx_suffixes": "https://support.google.com/a/answer/174125"},
        "rules": [
            {"name": "gmail-rate", "code": 421, "enhanced": "4.7.28", "text": "(?i)unusual rate",
             "action": "suspend", "duration": "1h", "source": "https://support.google.com/mail/answer/81126"},
            {"name": "gmail-slow", "code": 421, "action": "throttle", "duration": "15m",
             "limits": {"connections": 1, "messages_per_minute": 10}},
            {"name": "gmail-spam", "enhanced": "5.7.1", "action": "drain"},
        ],
    },
    "other": {
        "description": "every other destination",
        "mx_suffixes": [],
        "limits": {"connections": 10, "messages_per_connection": 100,
                   "messages_per_minute": None, "messages_per_hour": 1000},
        "warmup_share": 1.0,
        "rules": [{"name": "blocked", "text": "(?i)spamhaus", "action": "drain"}],
    },
}


def base() -> dict[str, Any]:
    return copy.deepcopy(BASE)


CLASSES = parse_classes(base())
GMAIL = CLASSES["gmail"]
SUSPEND, THROTTLE, DRAIN = GMAIL.rules


def raises_naming(key: str, data: Any, **kw: Any) -> str:
    with pytest.raises(ShapingError) as info:
        parse_classes(data, **kw)
    message = str(info.value)
    assert key in message, message
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------ parse_classes


def test_a_valid_set_parses() -> None:
    assert list(CLASSES) == ["gmail", "other"]  # other last
    assert GMAIL.mx_suffixes == ("google.com", "googlemail.com")
    assert GMAIL.limits == shaping.Limits(5, 50, None, None)
    assert GMAIL.warmup_share == 0.5
    assert GMAIL.sources == {"mx_suffixes": "https://support.google.com/a/answer/174125"}
    expected = shaping.Rule("gmail-rate", "suspend", 421, "4.7.28", "(?i)unusual rate", 3600, {},
                            "https://support.google.com/mail/answer/81126")
    assert expected == SUSPEND
    assert THROTTLE.duration == 900
    assert THROTTLE.limits == {"connections": 1, "messages_per_minute": 10}
    assert DRAIN.duration is None and DRAIN.enhanced == "5.7.1"
    assert CLASSES["other"].limits == shaping.Limits(10, 100, None, 1000)
    assert CLASSES["other"].mx_suffixes == ()


def test_a_class_inherits_the_limits_it_does_not_give_from_other() -> None:
    data = base()
    data["gmail"]["limits"] = {"connections": 2}
    data["gmail"].pop("warmup_share")
    data["gmail"].pop("description")
    c = parse_classes(data)["gmail"]
    assert c.limits == shaping.Limits(2, 100, None, 1000)
    assert c.warmup_share == 1.0
    assert c.description == "gmail"


def test_suffixes_are_normalised() -> None:
    data = base()
    data["gmail"]["mx_suffixes"] = [" Google.COM. ", "googlemail.com"]
    assert parse_classes(data)["gmail"].mx_suffixes == ("google.com", "googlemail.com")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation of the data: set the value at a dotted path (list indexes as numbers)."""

    def apply(data: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node: Any = data
        for part in head:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node: Any = data
        for part in head:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[last]

    return apply


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("negative limit", _set("gmail.limits.connections", -1), "provider_classes.gmail.limits.connections"),
    ("zero limit", _set("gmail.limits.messages_per_connection", 0),
     "provider_classes.gmail.limits.messages_per_connection"),
    ("bool limit", _set("gmail.limits.connections", True), "provider_classes.gmail.limits.connections"),
    ("str limit", _set("gmail.limits.connections", "5"), "provider_classes.gmail.limits.connections"),
    ("zero optional limit", _set("gmail.limits.messages_per_minute", 0),
     "provider_classes.gmail.limits.messages_per_minute"),
    ("float limit", _set("other.limits.messages_per_hour", 1.5), "provider_classes.other.limits.messages_per_hour"),
    ("unknown limit", _set("gmail.limits.per_day", 10), "provider_classes.gmail.limits.per_day"),
    ("limits not a mapping", _set("gmail.limits", [5]), "provider_classes.gmail.limits"),
    ("missing other", _drop("other"), "provider_classes.other"),
    ("other not a mapping", _set("other", None), "provider_classes.other"),
    ("other without connections", _drop("other.limits.connections"), "provider_classes.other.limits.connections"),
    ("class without suffixes", _set("gmail.mx_suffixes", []), "provider_classes.gmail.mx_suffixes"),
    ("class without the suffix key", _drop("gmail.mx_suffixes"), "provider_classes.gmail.mx_suffixes"),
    ("other with suffixes", _set("other.mx_suffixes", ["example.net"]), "provider_classes.other.mx_suffixes"),
    ("suffix not a host name", _set("gmail.mx_suffixes.1", "not a host"), "provider_classes.gmail.mx_suffixes[1]"),
    ("suffixes not a list", _set("gmail.mx_suffixes", "google.com"), "provider_classes.gmail.mx_suffixes"),
    ("bad class name", _set("g_mail", BASE["gmail"] | {"mx_suffixes": ["x.example"]}), "provider_classes: 'g_mail'"),
    ("class name too long", _set("a" * 17, BASE["gmail"] | {"mx_suffixes": ["x.example"]}),
     f"provider_classes: '{'a' * 17}'"),
    ("class not a mapping", _set("gmail", ["google.com"]), "provider_classes.gmail"),
    ("unknown class key", _set("gmail.weight", 3), "provider_classes.gmail.weight"),
    ("zero warmup share", _set("gmail.warmup_share", 0), "provider_classes.gmail.warmup_share"),
    ("warmup share above 1", _set("gmail.warmup_share", 1.5), "provider_classes.gmail.warmup_share"),
    ("bool warmup share", _set("gmail.warmup_share", True), "provider_classes.gmail.warmup_share"),
    ("rules not a list", _set("gmail.rules", {"name": "x"}), "provider_classes.gmail.rules"),
    ("sources not a mapping", _set("gmail.sources", ["x"]), "provider_classes.gmail.sources"),
    ("rule not a mapping", _set("gmail.rules.0", "gmail-rate"), "provider_classes.gmail.rules[0]"),
    ("rule without a match", _set("gmail.rules.2", {"name": "x", "action": "drain"}),
     "provider_classes.gmail.rules[2]"),
    ("bad action", _set("gmail.rules.0.action", "bounce"), "provider_classes.gmail.rules[0].action"),
    ("no action", _drop("gmail.rules.0.action"), "provider_classes.gmail.rules[0].action"),
    ("drain with a duration", _set("gmail.rules.2.duration", "1h"), "provider_classes.gmail.rules[2].duration"),
    ("suspend without duration", _drop("gmail.rules.0.duration"), "provider_classes.gmail.rules[0].duration"),
    ("throttle without duration", _drop("gmail.rules.1.duration"), "provider_classes.gmail.rules[1].duration"),
    ("bad duration", _set("gmail.rules.0.duration", "1w"), "provider_classes.gmail.rules[0].duration"),
    ("throttle without limits", _drop("gmail.rules.1.limits"), "provider_classes.gmail.rules[1].limits"),
    ("throttle with empty limits", _set("gmail.rules.1.limits", {}), "provider_classes.gmail.rules[1].limits"),
    ("throttle limit zero", _set("gmail.rules.1.limits.messages_per_minute", 0),
     "provider_classes.gmail.rules[1].limits.messages_per_minute"),
    ("throttle limit null", _set("gmail.rules.1.limits.messages_per_minute", None),
     "provider_classes.gmail.rules[1].limits.messages_per_minute"),
    ("throttle unknown limit", _set("gmail.rules.1.limits.burst", 3), "provider_classes.gmail.rules[1].limits.burst"),
    ("limits on a suspend", _set("gmail.rules.0.limits", {"connections": 1}),
     "provider_classes.gmail.rules[0].limits"),
    ("limits on a drain", _set("gmail.rules.2.limits", {"connections": 1}), "provider_classes.gmail.rules[2].limits"),
    ("regex that does not compile", _set("gmail.rules.0.text", "(unbalanced"), "provider_classes.gmail.rules[0].text"),
    ("enhanced with two parts", _set("gmail.rules.0.enhanced", "4.7"), "provider_classes.gmail.rules[0].enhanced"),
    ("enhanced of class 3", _set("gmail.rules.0.enhanced", "3.7.28"), "provider_classes.gmail.rules[0].enhanced"),
    ("enhanced with four parts", _set("gmail.rules.0.enhanced", "4.7.28.1"),
     "provider_classes.gmail.rules[0].enhanced"),
    ("code below 200", _set("gmail.rules.0.code", 199), "provider_classes.gmail.rules[0].code"),
    ("code above 599", _set("gmail.rules.0.code", 600), "provider_classes.gmail.rules[0].code"),
    ("code as text", _set("gmail.rules.0.code", "421"), "provider_classes.gmail.rules[0].code"),
    ("code as bool", _set("gmail.rules.0.code", True), "provider_classes.gmail.rules[0].code"),
    ("duplicate rule names", _set("gmail.rules.1.name", "gmail-rate"), "provider_classes.gmail.rules[1].name"),
    ("bad rule name", _set("gmail.rules.0.name", "Gmail Rate"), "provider_classes.gmail.rules[0].name"),
    ("rule without a name", _drop("gmail.rules.0.name"), "provider_classes.gmail.rules[0].name"),
    ("unknown rule key", _set("gmail.rules.0.severity", "high"), "provider_classes.gmail.rules[0].severity"),
    ("class key in a class's own rule", _set("gmail.rules.0.class", "gmail"), "provider_classes.gmail.rules[0].class"),
]


@pytest.mark.parametrize(("mutate", "key"), [(m, k) for _, m, k in BAD], ids=[n for n, _, _ in BAD])
def test_every_bad_input_names_its_key(mutate: Callable[[dict[str, Any]], None], key: str) -> None:
    data = base()
    mutate(data)
    raises_naming(key, data)


def test_the_regex_error_says_it_does_not_compile() -> None:
    data = base()
    data["gmail"]["rules"][0]["text"] = "(unbalanced"
    assert "does not compile" in raises_naming("provider_classes.gmail.rules[0].text", data)


def test_a_suffix_owned_by_two_classes_names_both() -> None:
    data = base()
    data["yahoo"] = {"mx_suffixes": ["yahoodns.net", "GOOGLE.com."]}
    message = raises_naming("provider_classes.yahoo.mx_suffixes[1]", data)
    assert "already a suffix of class gmail" in message


def test_the_key_prefix_is_the_callers() -> None:
    data = base()
    data["gmail"]["limits"]["connections"] = 0
    raises_naming("hosts.yml: provider_classes.gmail.limits.connections", data, where="hosts.yml: provider_classes")


def test_not_a_mapping_at_all() -> None:
    raises_naming("provider_classes", ["gmail"])


# ------------------------------------------------------------------------------------- shaping_rules (extra)

EXTRA = {"class": "gmail", "name": "local-slow", "code": 421, "action": "throttle", "duration": "10m",
         "limits": {"messages_per_minute": 5}}


def test_extra_rules_come_before_the_class_rules() -> None:
    classes = parse_classes(base(), rules=[EXTRA])
    assert [r.name for r in classes["gmail"].rules] == ["local-slow", "gmail-rate", "gmail-slow", "gmail-spam"]
    assert [r.name for r in classes["other"].rules] == ["blocked"]
    # a 421 4.7.28 "unusual rate" reply matches both gmail-rate and local-slow: the extra rule wins
    hit = match_rule(classes["gmail"].rules, 421, "4.7.28", "Our system has detected an unusual rate")
    assert hit is not None and hit.name == "local-slow"
    assert match_rule(GMAIL.rules, 421, "4.7.28", "Our system has detected an unusual rate") == SUSPEND


def test_an_extra_rule_with_an_unknown_class_lists_the_known_classes() -> None:
    message = raises_naming("shaping_rules[1].class", base(), rules=[EXTRA, EXTRA | {"class": "yahoo"}])
    assert "'yahoo'" in message
    assert "(known: gmail, other)" in message


def test_an_extra_rule_without_a_class() -> None:
    extra = {k: v for k, v in EXTRA.items() if k != "class"}
    raises_naming("shaping_rules[0].class", base(), rules=[extra])


def test_an_extra_rule_for_a_class_set_to_null_is_unknown() -> None:
    data = base() | {"yahoo": None}
    message = raises_naming("inv: shaping_rules[0].class", data, rules=[EXTRA | {"class": "yahoo"}],
                            rules_where="inv: shaping_rules")
    assert "(known: gmail, other)" in message


def test_an_extra_rule_with_a_class_that_is_not_a_name() -> None:
    raises_naming("shaping_rules[0].class", base(), rules=[EXTRA | {"class": ["gmail"]}])


def test_extra_rules_are_validated_like_a_class_rule() -> None:
    raises_naming("shaping_rules[0].action", base(), rules=[EXTRA | {"action": "bounce"}])
    raises_naming("shaping_rules[0].mood", base(), rules=[EXTRA | {"mood": "bad"}])
    raises_naming("shaping_rules", base(), rules={"gmail": EXTRA})


def test_an_extra_rule_named_like_a_class_rule_names_the_class_rule() -> None:
    message = raises_naming("gmail", base(), rules=[EXTRA | {"name": "gmail-slow"}])
    assert "gmail-slow" in message
    # the duplicate is the class's own rules[1] (the extra rule comes first, at shaping_rules[0])
    assert "provider_classes.gmail.rules[1].name" in message
    # two extra rules of one class with one name: the second one's key
    raises_naming("shaping_rules[2].name", base(), rules=[EXTRA, EXTRA | {"class": "other"}, EXTRA])
    # a duplicate among the class's own rules keeps its index with extra rules in front
    data = base()
    data["gmail"]["rules"][2]["name"] = "gmail-rate"
    raises_naming("provider_classes.gmail.rules[2].name", data, rules=[EXTRA])


# ------------------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(("value", "seconds"), [
    ("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172_800), (3600, 3600), ("45", 45), (" 2H ", 7200), (1, 1),
])
def test_durations(value: Any, seconds: int) -> None:
    assert shaping.parse_duration(value, "x") == seconds


@pytest.mark.parametrize("value", ["0s", 0, -1, "-5m", "1w", "h", "1.5h", "", True, None, "1 h 2m", 1.5])
def test_bad_durations_name_the_key(value: Any) -> None:
    with pytest.raises(ShapingError, match=r"^provider_classes\.gmail\.rules\[0\]\.duration: "):
        shaping.parse_duration(value, "provider_classes.gmail.rules[0].duration")


@pytest.mark.parametrize(("seconds", "text"), [(90, "90s"), (900, "15m"), (3600, "1h"), (172_800, "2d"),
                                               (5400, "90m"), (1, "1s")])
def test_format_duration_is_read_back(seconds: int, text: str) -> None:
    assert shaping.format_duration(seconds) == text
    assert shaping.parse_duration(text, "x") == seconds


# ------------------------------------------------------------------------------------------------- merge


def test_merge_key_by_key_and_limits_key_by_key() -> None:
    default = base()
    before = copy.deepcopy(default)
    override = {"gmail": {"limits": {"connections": 2, "messages_per_minute": 30}, "warmup_share": 0.25}}
    out = merge(default, override)
    assert out["gmail"]["limits"] == {"connections": 2, "messages_per_connection": 50,
                                      "messages_per_minute": 30, "messages_per_hour": None}
    assert out["gmail"]["warmup_share"] == 0.25
    assert out["gmail"]["description"] == BASE["gmail"]["description"]
    assert out["gmail"]["rules"] == BASE["gmail"]["rules"]
    assert out["other"] == BASE["other"]
    assert default == before  # the default is not modified
    assert parse_classes(out)["gmail"].limits == shaping.Limits(2, 50, 30, None)


def test_merge_null_removes_a_class() -> None:
    out = merge(base(), {"gmail": None, "absent": None})
    assert list(out) == ["other"]
    assert list(parse_classes(out)) == ["other"]


def test_merge_replaces_rules_suffixes_and_sources() -> None:
    rules = [{"name": "only", "code": 550, "action": "drain"}]
    out = merge(base(), {"gmail": {"rules": rules, "mx_suffixes": ["google.com"], "sources": {"x": "y"}}})
    assert out["gmail"]["rules"] == rules
    assert out["gmail"]["mx_suffixes"] == ["google.com"]
    assert out["gmail"]["sources"] == {"x": "y"}
    assert [r.name for r in parse_classes(out)["gmail"].rules] == ["only"]


def test_merge_adds_a_class_and_keeps_a_bad_one_for_validation() -> None:
    yahoo = {"mx_suffixes": ["yahoodns.net"], "limits": {"connections": 3}}
    out = merge(base(), {"yahoo": yahoo, "gmail": "nonsense"})
    assert out["yahoo"] == yahoo
    assert out["gmail"] == "nonsense"
    raises_naming("provider_classes.gmail", out)


def test_merge_without_override_is_a_copy() -> None:
    default = base()
    out = merge(default, None)
    assert out == default
    out["gmail"]["warmup_share"] = 0.1
    assert default["gmail"]["warmup_share"] == 0.5


# ------------------------------------------------------------------------------------------- round trip


def test_as_data_round_trip_of_the_example() -> None:
    classes = parse_classes(base(), rules=[EXTRA])
    data = shaping.as_data(classes)
    assert parse_classes(data) == classes
    # plain data: YAML and JSON take it as it is
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert json.loads(json.dumps(data)) == data


_NAMES = st.from_regex(r"[a-z][a-z0-9]{0,15}", fullmatch=True).filter(lambda n: n != shaping.OTHER)
_SUFFIXES = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\.[a-z]{2,6}){1,2}", fullmatch=True)
_TEXTS = st.sampled_from(["(?i)unusual rate", "blocked", r"\d+ messages", "^421 ", "try (again|later)"])


@st.composite
def _limits(draw: st.DrawFn) -> dict[str, Any]:
    optional = st.none() | st.integers(1, 100_000)
    return {"connections": draw(st.integers(1, 100)), "messages_per_connection": draw(st.integers(1, 1000)),
            "messages_per_minute": draw(optional), "messages_per_hour": draw(optional)}


@st.composite
def _rule(draw: st.DrawFn, name: str) -> dict[str, Any]:
    action = draw(st.sampled_from(shaping.ACTIONS))
    rule: dict[str, Any] = {"name": name, "action": action}
    parts = draw(st.sets(st.sampled_from(["code", "enhanced", "text"]), min_size=1))
    if "code" in parts:
        rule["code"] = draw(st.integers(200, 599))
    if "enhanced" in parts:
        rule["enhanced"] = draw(st.from_regex(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True))
    if "text" in parts:
        rule["text"] = draw(_TEXTS)
    if action != "drain":
        rule["duration"] = draw(st.integers(1, 10**6) | st.sampled_from(["90s", "15m", "1h", "2d"]))
    if action == "throttle":
        keys = draw(st.sets(st.sampled_from(shaping.THROTTLE_KEYS), min_size=1))
        rule["limits"] = {k: draw(st.integers(1, 1000)) for k in sorted(keys)}
    if draw(st.booleans()):
        rule["source"] = draw(st.text(min_size=1, max_size=20))
    return rule


@st.composite
def _class(draw: st.DrawFn, suffixes: list[str]) -> dict[str, Any]:
    names = draw(st.lists(st.from_regex(r"[a-z0-9][a-z0-9-]{0,10}", fullmatch=True), unique=True, max_size=4))
    spec: dict[str, Any] = {"mx_suffixes": suffixes, "limits": draw(_limits()),
                            "rules": [draw(_rule(n)) for n in names]}
    if draw(st.booleans()):
        spec["description"] = draw(st.text(min_size=1, max_size=20))
    if draw(st.booleans()):
        spec["warmup_share"] = draw(st.floats(min_value=0.01, max_value=1.0))
    if draw(st.booleans()):
        spec["sources"] = {"limits": draw(st.text(max_size=20))}
    return spec


@st.composite
def _data(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(_NAMES, unique=True, max_size=4))
    suffixes = draw(st.lists(_SUFFIXES, unique=True, min_size=2 * len(names), max_size=2 * len(names)))
    data = {n: draw(_class(suffixes[2 * i: 2 * i + draw(st.integers(1, 2))])) for i, n in enumerate(names)}
    data[shaping.OTHER] = draw(_class([]))
    return data


@settings(max_examples=150, deadline=None)
@given(_data())
def test_as_data_round_trip(data: dict[str, Any]) -> None:
    classes = parse_classes(data)
    assert parse_classes(shaping.as_data(classes)) == classes
    assert set(classes) == set(data)


# ------------------------------------------------------------------------------------------------ classify


def _classes(*pairs: tuple[str, list[str]]) -> dict[str, shaping.ProviderClass]:
    data: dict[str, Any] = {n: {"mx_suffixes": s} for n, s in pairs}
    data["other"] = BASE["other"]
    return parse_classes(data)


@pytest.mark.parametrize(("host", "klass"), [
    ("google.com", "gmail"),
    ("aspmx.l.google.com", "gmail"),
    ("ALT1.ASPMX.L.Google.COM.", "gmail"),
    ("gmail-smtp-in.l.googlemail.com", "gmail"),
    ("notgoogle.com", "other"),
    ("mx.notgoogle.com", "other"),
    ("google.com.evil.example", "other"),
    ("google.co", "other"),
    ("oogle.com", "other"),
])
def test_classify_by_suffix_not_substring(host: str, klass: str) -> None:
    assert classify([host], CLASSES) == klass


def test_classify_longest_suffix_wins_in_either_order() -> None:
    both = _classes(("olc", ["olc.protection.outlook.com"]), ("outlook", ["protection.outlook.com"]))
    for classes in (both, dict(reversed(list(both.items())))):
        assert classify(["contoso-com.mail.protection.outlook.com"], classes) == "outlook"
        assert classify(["contoso-com.olc.protection.outlook.com"], classes) == "olc"
        assert classify(["olc.protection.outlook.com"], classes) == "olc"
        assert classify(["xolc.protection.outlook.com"], classes) == "outlook"


def test_classify_follows_the_mx_order() -> None:
    classes = _classes(("gmail", ["google.com"]), ("outlook", ["protection.outlook.com"]))
    assert classify(["mx.example.net", "aspmx.l.google.com"], classes) == "gmail"
    assert classify(["a.mail.protection.outlook.com", "aspmx.l.google.com"], classes) == "outlook"
    assert classify(["aspmx.l.google.com", "a.mail.protection.outlook.com"], classes) == "gmail"
    assert classify(iter(["mx1.example.net", "mx2.example.net"]), classes) == "other"
    assert classify([], classes) == "other"


# ---------------------------------------------------------------------------------------------- match_rule


def test_every_given_part_must_match() -> None:
    text = "4.7.28 Our system has detected an Unusual Rate of unsolicited mail"
    assert match_rule([SUSPEND], 421, "4.7.28", text) == SUSPEND
    assert match_rule([SUSPEND], 450, "4.7.28", text) is None
    assert match_rule([SUSPEND], 421, "4.7.0", text) is None
    assert match_rule([SUSPEND], 421, None, text) is None
    assert match_rule([SUSPEND], 421, "4.7.28", "try again later") is None
    assert match_rule([SUSPEND], None, "4.7.28", text) is None


def test_enhanced_is_exact_and_absent_parts_match_anything() -> None:
    assert match_rule([DRAIN], 550, "5.7.1", "") == DRAIN
    assert match_rule([DRAIN], 421, "5.7.1", "anything") == DRAIN
    assert match_rule([DRAIN], 550, "5.7.10", "") is None
    assert match_rule([DRAIN], 550, "5.7.", "") is None
    assert match_rule([DRAIN], 550, "15.7.1", "") is None
    text_only = parse_classes(base())["other"].rules[0]
    assert match_rule([text_only], None, None, "listed at SPAMHAUS zen") == text_only
    assert match_rule([text_only], 250, "2.0.0", "ok") is None


def test_first_match_wins() -> None:
    # gmail-rate and gmail-slow both match this reply; the order of the list decides
    reply = (421, "4.7.28", "unusual rate")
    assert match_rule(GMAIL.rules, *reply) == SUSPEND
    assert match_rule([THROTTLE, SUSPEND], *reply) == THROTTLE
    assert match_rule(GMAIL.rules, 421, "4.7.0", "slow down") == THROTTLE
    assert match_rule([], *reply) is None


# --------------------------------------------------------------------------------------------------- react

A, B, C = "198.51.100.70", "198.51.100.71", "198.51.100.72"
KA = shaping.key(A, "gmail")


def test_suspend_sets_state_and_until() -> None:
    states: dict[str, PathState] = {}
    out, event = react(states, A, "gmail", SUSPEND, "421 4.7.28 unusual rate", NOW, [A, B], {A: True, B: True})
    assert states == {}  # the input is not modified
    s = out[KA]
    assert (s.status, s.until, s.since, s.rule, s.by, s.blocked) == ("suspended", NOW + 3600, NOW, "gmail-rate",
                                                                       "rule", False)
    assert s.reply == "421 4.7.28 unusual rate"
    assert s.active(NOW + 3599) and not s.active(NOW + 3600)
    assert (event.kind, event.ip, event.klass, event.rule, event.until) == ("suspend", A, "gmail", "gmail-rate",
                                                                             NOW + 3600)
    assert "1h" in event.reason


def test_suspending_the_last_usable_ip_is_blocked() -> None:
    for pool, usable in (([A], {A: True}), ([A, B], {A: True, B: False}), ([A, B, C], {A: True})):
        out, event = react({}, A, "gmail", SUSPEND, "421 unusual rate", NOW, pool, usable)
        s = out[KA]
        assert s.status == "normal" and s.blocked and s.rule == "gmail-rate" and s.since == NOW
        assert not s.active(NOW)
        assert event.kind == "blocked" and event.until is None
        assert "NOT suspended" in event.reason and "last usable IP" in event.message()


def test_suspend_last_suspends_the_last_usable_ip() -> None:
    out, event = react({}, A, "gmail", SUSPEND, "421", NOW, [A], {A: True}, suspend_last=True)
    assert out[KA].status == "suspended" and not out[KA].blocked
    assert event.kind == "suspend"


def test_a_blocked_path_is_suspended_once_another_ip_is_usable() -> None:
    out, _ = react({}, A, "gmail", SUSPEND, "421", NOW, [A, B], {A: True, B: False})
    out, event = react(out, A, "gmail", SUSPEND, "421", NOW + 60, [A, B], {A: True, B: True})
    assert event.kind == "suspend"
    assert out[KA].status == "suspended" and not out[KA].blocked and out[KA].until == NOW + 60 + 3600


def test_throttle_stores_its_limits() -> None:
    out, event = react({}, A, "gmail", THROTTLE, "421 4.7.0 slow down", NOW, [A], {A: True})
    s = out[KA]
    assert (s.status, s.until, s.limits) == ("throttled", NOW + 900, {"connections": 1, "messages_per_minute": 10})
    assert event.kind == "throttle" and event.until == NOW + 900
    assert "messages_per_minute 10" in event.reason


def test_a_throttle_does_not_weaken_an_active_suspension() -> None:
    states, _ = react({}, A, "gmail", SUSPEND, "421", NOW, [A, B], {A: True, B: True})
    out, event = react(states, A, "gmail", THROTTLE, "421 slow", NOW + 10, [A, B], {A: True, B: True})
    assert out == states
    assert event.kind == "hold" and event.until == NOW + 3600
    # once the suspension is over, the throttle applies
    out, event = react(states, A, "gmail", THROTTLE, "421 slow", NOW + 3600, [A, B], {A: True, B: True})
    assert out[KA].status == "throttled" and event.kind == "throttle"


def test_a_suspension_overrides_a_throttle() -> None:
    states, _ = react({}, A, "gmail", THROTTLE, "421 slow", NOW, [A, B], {A: True, B: True})
    out, event = react(states, A, "gmail", SUSPEND, "421", NOW + 10, [A, B], {A: True, B: True})
    assert out[KA].status == "suspended" and out[KA].limits == {} and event.kind == "suspend"


@pytest.mark.parametrize("rule", [SUSPEND, THROTTLE], ids=["suspend", "throttle"])
def test_the_same_rule_again_holds_and_does_not_extend(rule: shaping.Rule) -> None:
    states, first = react({}, A, "gmail", rule, "421", NOW, [A, B], {A: True, B: True})
    out, event = react(states, A, "gmail", rule, "421 again", NOW + 300, [A, B], {A: True, B: True})
    assert out == states
    assert event.kind == "hold" and event.until == first.until
    assert rule.name in event.reason
    # after it ended (before expire ran), the same rule starts a new period
    assert rule.duration is not None
    later = NOW + rule.duration
    out, event = react(states, A, "gmail", rule, "421 again", later, [A, B], {A: True, B: True})
    assert event.kind == rule.action and out[KA].until == later + rule.duration


def test_a_rule_does_not_shorten_an_operator_suspension() -> None:
    states, _ = shaping.operator_set({}, A, "gmail", "suspended", NOW, None)
    out, event = react(states, A, "gmail", SUSPEND, "421 unusual rate", NOW + 10, [A, B], {A: False, B: True})
    assert event.kind == "hold"
    assert out[KA].until is None and out[KA].by == "operator"
    assert not shaping.expire(out, NOW + 10 * 86400)[1]


def test_a_suspension_is_extended_by_another_rule_but_never_shortened() -> None:
    day = {"class": "gmail", "name": "gmail-day", "code": 554, "action": "suspend", "duration": "1d"}
    long = parse_classes(base(), rules=[day])["gmail"].rules[0]
    states, _ = react({}, A, "gmail", long, "554", NOW, [A, B], {A: True, B: True})
    out, event = react(states, A, "gmail", SUSPEND, "421 unusual rate", NOW + 10, [A, B], {A: False, B: True})
    assert out == states and event.kind == "hold" and event.until == NOW + 86400
    states, _ = react({}, A, "gmail", SUSPEND, "421 unusual rate", NOW, [A, B], {A: True, B: True})
    out, event = react(states, A, "gmail", long, "554", NOW + 10, [A, B], {A: False, B: True})
    assert event.kind == "suspend" and out[KA].until == NOW + 10 + 86400 and out[KA].rule == "gmail-day"


def test_drain_is_reported_without_changing_states() -> None:
    states, _ = react({}, B, "gmail", THROTTLE, "421", NOW, [A, B], {A: True, B: True})
    out, event = react(states, A, "gmail", DRAIN, "550 5.7.1 blocked", NOW, [A, B], {A: True, B: True})
    assert out == states and KA not in out
    assert (event.kind, event.ip, event.rule, event.until) == ("drain", A, "gmail-spam", None)
    assert "drain" in event.reason


def test_a_long_reply_is_shortened() -> None:
    out, event = react({}, A, "gmail", THROTTLE, "x" * 1000, NOW, [A], {A: True})
    assert out[KA].reply == "x" * 297 + "..."
    assert event.reply == out[KA].reply
    assert "[reply: " in event.message()


# ----------------------------------------------------------------------------------------- expire, operator


def test_expire_resumes_after_until_and_keeps_active_paths() -> None:
    states, _ = react({}, A, "gmail", SUSPEND, "421", NOW, [A, B], {A: True, B: True})
    states, _ = react(states, B, "gmail", THROTTLE, "421", NOW, [A, B], {A: True, B: True})
    kb = shaping.key(B, "gmail")
    out, events = shaping.expire(states, NOW + 899)
    assert out == states and events == []
    out, events = shaping.expire(states, NOW + 900)
    assert list(out) == [KA]
    assert [(e.kind, e.ip, e.rule) for e in events] == [("expire", B, "gmail-slow")]
    assert "resumed" in events[0].reason
    out, events = shaping.expire(out, NOW + 3600)
    assert out == {} and [e.ip for e in events] == [A]
    assert kb not in out


def test_expire_drops_blocked_marks_after_an_hour() -> None:
    states, _ = react({}, A, "gmail", SUSPEND, "421", NOW, [A], {A: True})
    assert shaping.expire(states, NOW + 3600) == (states, [])
    assert shaping.expire(states, NOW + 3601) == ({}, [])


def test_operator_suspend_with_and_without_a_duration() -> None:
    out, event = shaping.operator_set({}, A, "gmail", "suspended", NOW, 3600)
    s = out[KA]
    assert (s.status, s.until, s.since, s.by, s.rule) == ("suspended", NOW + 3600, NOW, "operator", None)
    assert event.kind == "suspend" and event.until == NOW + 3600 and "for 1h" in event.reason
    assert shaping.expire(out, NOW + 3600)[0] == {}

    out, event = shaping.operator_set({}, A, "gmail", "suspended", NOW, None)
    assert out[KA].until is None and out[KA].active(NOW + 10**9)
    assert event.kind == "suspend" and event.until is None and "until resumed" in event.reason
    assert shaping.expire(out, NOW + 10**9) == (out, [])


def test_operator_throttle_and_resume() -> None:
    states, _ = react({}, A, "gmail", SUSPEND, "421", NOW, [A, B], {A: True, B: True})
    out, event = shaping.operator_set(states, B, "gmail", "throttled", NOW, 600, {"messages_per_minute": 3})
    assert out[shaping.key(B, "gmail")].limits == {"messages_per_minute": 3}
    assert event.kind == "throttle" and "for 10m" in event.reason
    out, event = shaping.operator_set(out, A, "gmail", "normal", NOW, None)
    assert KA not in out and shaping.key(B, "gmail") in out
    assert event.kind == "resume"
    again, event = shaping.operator_set(out, A, "gmail", "normal", NOW, None)
    assert again == out and event.kind == "resume"


@pytest.mark.parametrize("state", [
    PathState(A, "gmail"),
    PathState(A, "gmail", "suspended", NOW + 60, NOW, "gmail-rate", "421 x", {}, "rule", False),
    PathState(B, "other", "throttled", None, NOW, None, None, {"messages_per_minute": 3}, "operator", False),
    PathState(A, "gmail", "normal", None, NOW, "gmail-rate", "421", {}, "rule", True),
])
def test_path_state_round_trip(state: PathState) -> None:
    data = json.loads(json.dumps(state.as_dict()))
    assert PathState.from_dict(data) == state


def test_path_state_from_dict_with_an_unknown_status_is_normal() -> None:
    assert PathState.from_dict({"ip": A, "class": "gmail", "status": "exploded"}) == PathState(A, "gmail")


# -------------------------------------------------------------------------------------------------- Window


def test_window_counts_per_minute_and_per_hour() -> None:
    w = Window()
    w.add("k", NOW + 5, 3)
    w.add("k", NOW + 20)
    w.add("other", NOW + 20, 7)
    assert w.count("k", NOW + 30, 60) == 4
    assert w.count("k", NOW + 30, 3600) == 4
    assert w.count("other", NOW + 30, 60) == 7
    assert w.count("nothing", NOW + 30, 60) == 0


def test_window_previous_minute_weighted_at_boundaries() -> None:
    w = Window()
    w.add("k", NOW + 59, 4)  # minute 0
    assert w.count("k", NOW + 59.9, 60) == 4
    assert w.count("k", NOW + 60, 60) == 4  # at the boundary the whole previous minute is still in the window
    assert w.count("k", NOW + 75, 60) == 3  # 3/4 of it
    assert w.count("k", NOW + 90, 60) == 2
    assert w.count("k", NOW + 119, 60) == 1  # ceil(4/60)
    assert w.count("k", NOW + 120, 60) == 0
    assert w.count("k", NOW + 120, 3600) == 4
    assert w.count("k", NOW + 3600, 3600) == 4
    assert w.count("k", NOW + 3630, 3600) == 2
    assert w.count("k", NOW + 3660, 3600) == 0


def test_window_hour_of_steady_traffic() -> None:
    w = Window()
    for minute in range(62):
        w.add("k", NOW + minute * 60 + 1, 2)
    now = NOW + 61 * 60 + 30  # minutes 2..61 whole, half of minute 1
    assert w.count("k", now, 3600) == 2 * 60 + 1
    assert w.count("k", now, 60) == 2 + 1


def test_window_prunes_old_buckets() -> None:
    w = Window()
    for minute in range(600):
        w.add("k", NOW + minute * 60)
    # white box: the memory stays bounded by the hour it needs
    assert len(w._buckets["k"]) <= 61
    assert w.count("k", NOW + 600 * 60, 3600) == 60


# -------------------------------------------------------------------------------------------------- choose


def _limited(**limits: int | None) -> shaping.ProviderClass:
    data = base()
    data["gmail"]["limits"].update(limits)
    return parse_classes(data)["gmail"]


def _draws(members: list[Member], pclass: shaping.ProviderClass, n: int, *, states: Any = None,
           window: Window | None = None, today: Any = None, seed: int = 7) -> dict[str | None, int]:
    rng = random.Random(seed)
    counts: dict[str | None, int] = {}
    for _ in range(n):
        ip = choose(members, pclass, states or {}, window or Window(), today or {}, NOW, rng).ip
        counts[ip] = counts.get(ip, 0) + 1
    return counts


def test_choose_respects_the_weights() -> None:
    members = [Member(A, 1), Member(B, 3), Member(C, 6)]
    n = 10_000
    counts = _draws(members, GMAIL, n)
    total = sum(m.weight for m in members)
    for m in members:
        p = m.weight / total
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts.get(m.ip, 0) - n * p) < 4 * sd, (m.ip, counts)


def test_choose_equal_weights_pick_each() -> None:
    members = [Member(A, 1), Member(B, 1)]
    n = 4000
    counts = _draws(members, GMAIL, n, seed=11)
    sd = math.sqrt(n * 0.25)
    assert abs(counts[A] - n / 2) < 4 * sd


def test_a_drained_ip_is_never_chosen() -> None:
    assert _draws([Member(A, 0), Member(B, 1)], GMAIL, 500) == {B: 500}


def test_a_suspended_ip_is_never_chosen_for_its_class_only() -> None:
    states, _ = react({}, A, "gmail", SUSPEND, "421", NOW - 10, [A, B], {A: True, B: True})
    members = [Member(A, 5), Member(B, 1)]
    assert _draws(members, GMAIL, 500, states=states) == {B: 500}
    other = CLASSES["other"]
    assert set(_draws(members, other, 500, states=states)) == {A, B}
    # an ended suspension (expire not run yet) no longer holds
    ended = {KA: dataclasses.replace(states[KA], until=NOW)}
    assert set(_draws(members, GMAIL, 500, states=ended)) == {A, B}


def test_a_rate_limited_ip_is_not_chosen() -> None:
    pclass = _limited(messages_per_minute=3)
    w = Window()
    w.add(KA, NOW - 10, 3)
    members = [Member(A, 5), Member(B, 1)]
    assert _draws(members, pclass, 200, window=w) == {B: 200}
    w2 = Window()
    w2.add(KA, NOW - 10, 2)
    assert A in _draws(members, pclass, 200, window=w2)


def test_the_hourly_rate_holds_an_ip() -> None:
    pclass = _limited(messages_per_hour=100)
    w = Window()
    for minute in range(1, 51):
        w.add(KA, NOW - minute * 60, 2)
    assert _draws([Member(A, 5), Member(B, 1)], pclass, 200, window=w) == {B: 200}


def test_a_capped_ip_is_not_chosen() -> None:
    members = [Member(A, 5, {"gmail": 40}), Member(B, 1)]
    assert _draws(members, GMAIL, 200, today={KA: 40}) == {B: 200}
    assert A in _draws(members, GMAIL, 200, today={KA: 39})
    # the cap is per class
    assert A in _draws(members, CLASSES["other"], 200, today={shaping.key(A, "other"): 40})


def test_every_ip_held_names_the_counts() -> None:
    pclass = _limited(messages_per_minute=1)
    d = "198.51.100.73"
    states, _ = react({}, B, "gmail", SUSPEND, "421", NOW - 10, [A, B], {A: True, B: True})
    w = Window()
    w.add(shaping.key(C, "gmail"), NOW - 5)
    members = [Member(A, 0), Member(B, 1), Member(C, 1), Member(d, 1, {"gmail": 10})]
    choice = choose(members, pclass, states, w, {shaping.key(d, "gmail"): 10}, NOW, random.Random(1))
    assert choice.ip is None
    assert choice.reason == "every IP of the pool is held for class gmail (1 cap, 1 drained, 1 rate, 1 suspended)"
    assert choose([], pclass, {}, Window(), {}, NOW, random.Random(1)) == shaping.Choice(
        None, "no sending IP in the pool")


def test_a_throttle_tightens_the_class_limits() -> None:
    states, _ = react({}, A, "gmail", THROTTLE, "421", NOW - 10, [A, B], {A: True, B: True})
    assert shaping.effective_limits(GMAIL, states[KA], NOW) == {
        "connections": 1, "messages_per_connection": 50, "messages_per_minute": 10, "messages_per_hour": None}
    # a throttle never loosens a class limit
    assert shaping.effective_limits(_limited(messages_per_minute=4, connections=1), states[KA], NOW) == {
        "connections": 1, "messages_per_connection": 50, "messages_per_minute": 4, "messages_per_hour": None}
    # ended throttle: the class limits
    assert shaping.effective_limits(GMAIL, states[KA], NOW + 900) == GMAIL.limits.as_dict()
    w = Window()
    w.add(KA, NOW - 5, 10)
    members = [Member(A, 5), Member(B, 1)]
    assert _draws(members, GMAIL, 200, states=states, window=w) == {B: 200}
    assert A in _draws(members, GMAIL, 200, window=w)  # without the throttle, no per-minute limit


def test_a_throttle_without_a_value_keeps_the_class_limit() -> None:
    state = PathState(A, "gmail", "throttled", None, NOW, None, None, {"messages_per_hour": None,
                                                                       "messages_per_minute": 5}, "operator")
    limits = shaping.effective_limits(_limited(messages_per_hour=100), state, NOW)
    assert limits["messages_per_hour"] == 100 and limits["messages_per_minute"] == 5


# ---------------------------------------------------------------------------------------------- daily_caps


def test_daily_caps() -> None:
    assert daily_caps(20, CLASSES) == {"gmail": 240, "other": 480}
    assert daily_caps(0.01, CLASSES) == {"gmail": 1, "other": 1}
    assert daily_caps(0, CLASSES) == {"gmail": 1, "other": 1}
    assert daily_caps(None, CLASSES) == {}
    assert daily_caps(10.3, CLASSES) == {"gmail": int(10.3 * 24 * 0.5), "other": int(10.3 * 24)}


def test_no_class_name_or_rule_name_with_a_trailing_newline() -> None:
    data = base()
    data["gmail\n"] = data.pop("gmail")
    raises_naming("provider_classes: 'gmail\\n' is not a class name", data)
    data = base()
    data["gmail"]["rules"][0]["name"] = "gmail-rate\n"
    raises_naming("provider_classes.gmail.rules[0].name", data)
    data = base()
    data["gmail"]["rules"][0]["enhanced"] = "4.7.28\n"
    raises_naming("provider_classes.gmail.rules[0].enhanced", data)


def test_a_throttle_cannot_change_messages_per_connection() -> None:
    rule = {"name": "r", "code": 421, "action": "throttle", "duration": "5m", "limits": {"messages_per_connection": 5}}
    with pytest.raises(shaping.ShapingError, match=r"rules\[0\]\.limits\.messages_per_connection: a throttle cannot"):
        shaping.parse_classes({"other": {"limits": {"connections": 2, "messages_per_connection": 10},
                                         "rules": [rule]}})


def test_a_refused_suspension_is_said_once_and_retried_when_another_ip_is_usable() -> None:
    rule = shaping.Rule("rate", "suspend", 421, "4.7.28", None, 600)
    states, e1 = shaping.react({}, "a", "gmail", rule, "421 4.7.28 x", 100.0, ["a", "b"], {"b": False})
    states, e2 = shaping.react(states, "a", "gmail", rule, "421 4.7.28 x", 101.0, ["a", "b"], {"b": False})
    assert (e1.kind, e2.kind) == ("blocked", "hold")
    states, e3 = shaping.react(states, "a", "gmail", rule, "421 4.7.28 x", 102.0, ["a", "b"], {"b": True})
    assert e3.kind == "suspend" and states[shaping.key("a", "gmail")].status == shaping.SUSPENDED


def test_a_milder_throttle_never_loosens_a_stricter_one() -> None:
    strict = shaping.Rule("strict", "throttle", 421, None, None, 1800, {"connections": 1, "messages_per_minute": 10})
    mild = shaping.Rule("mild", "throttle", 421, None, None, 900, {"connections": 2})
    states, _ = shaping.react({}, "a", "gmail", strict, "421 a", 0.0, ["a", "b"], {"b": True})
    states, event = shaping.react(states, "a", "gmail", mild, "421 b", 60.0, ["a", "b"], {"b": True})
    path = states[shaping.key("a", "gmail")]
    assert event.kind == "throttle"
    assert dict(path.limits) == {"connections": 1, "messages_per_minute": 10} and path.until == 1800.0
