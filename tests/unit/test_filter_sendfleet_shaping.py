"""The postfix role's provider-class filters: transports per (IP, class) and their main.cf limits."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from tests.unit.plugins import load_plugin

f = load_plugin("filter", "sendfleet_shaping")

IPS = [{"ip": "198.51.100.71", "pool": "t", "ptr": "o71.lab.test"},
       {"ip": "2001:db8::5", "pool": "t", "ptr": "o5.lab.test", "limits": {"concurrency_limit": 1, "rate_delay": 129}}]


def classes(**override: object) -> dict[str, object]:
    return f.sf_provider_classes({"gmail": {"mx_suffixes": ["gmail.test"], "limits": {"connections": 3}}, **override})


def test_the_shipped_classes_with_an_override_and_extra_rules() -> None:
    c = f.sf_provider_classes({"gmail": {"limits": {"connections": 3}}, "mailru": None},
                              [{"class": "gmail", "name": "mine", "code": 421, "action": "suspend", "duration": "5m"}])
    assert c["gmail"]["limits"]["connections"] == 3 and "google.com" in c["gmail"]["mx_suffixes"]
    assert "mailru" not in c and "other" in c
    assert c["gmail"]["rules"][0]["name"] == "mine"


RULE = {"name": "x", "action": "suspend", "duration": "1h"}


@pytest.mark.parametrize(("override", "rules", "named"), [
    ({"gmail": {"limits": {"connections": -1}}}, None, "provider_classes.gmail.limits.connections"),
    (None, [{**RULE, "class": "nosuch", "code": 421}], "shaping_rules[0].class"),
    (None, [{**RULE, "class": "gmail", "text": "("}], "shaping_rules[0].text"),
])
def test_bad_data_fails_with_its_key(override: object, rules: object, named: str) -> None:
    with pytest.raises(AnsibleFilterError, match=named.replace("[", r"\[").replace("]", r"\]")):
        f.sf_provider_classes(override, rules)


def test_one_transport_per_ip_and_class_other_excepted() -> None:
    c = classes()
    ts = f.sf_class_transports(IPS, c)
    names = {t["name"] for t in ts}
    assert "sf_198_51_100_71_gmail" in names and not any(n.endswith("_other") for n in names)
    assert len(ts) == 2 * (len(c) - 1)
    gmail = next(t for t in ts if t["name"] == "sf_198_51_100_71_gmail")
    assert (gmail["maxproc"], gmail["reuse"], gmail["ptr"], gmail["v6"]) == (
        3, c["gmail"]["limits"]["messages_per_connection"], "o71.lab.test", False)
    assert any(t["v6"] and t["name"].startswith("sf_20010db8") for t in ts)


def test_limits_warmup_and_throttles() -> None:
    c = classes()
    p = f.sf_class_transport_params(IPS, c, "sf", 50, {"198.51.100.71 gmail": 1})
    assert p["sf_198_51_100_71_gmail_destination_concurrency_limit"] == "1"  # throttled
    assert p["sf_198_51_100_71_yahoo_destination_concurrency_limit"] == str(c["yahoo"]["limits"]["connections"])
    v6 = "sf_20010db8000000000000000000000005_gmail"
    assert p[f"{v6}_destination_concurrency_limit"] == "1"  # warming: the plan's concurrency
    assert p[f"{v6}_destination_rate_delay"] == "129s"
    assert p["sf_198_51_100_71_gmail_destination_recipient_limit"] == "50"
