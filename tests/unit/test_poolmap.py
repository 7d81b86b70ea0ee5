"""sendfleet.core.poolmap: the pools' transport selection (names, randmap layout, drained weights, shares, limits)
as the postfix role writes it and the monitor rewrites it, with the limits' baselines."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sendfleet.core import poolmap

MAPS = (
    "pipemap:{regexp:/etc/postfix/sender_pool_marketing.regexp, randmap:{sf_a, sf_b}}, "
    "pipemap:{regexp:/etc/postfix/sender_pool_transactional.regexp, randmap:{sf_c, sf_d, sf_e}}, "
    "regexp:/etc/postfix/sender_pool_unavailable.regexp"
)
POOLS = {"marketing": [("sf_a", 1), ("sf_b", 1)], "transactional": [("sf_c", 1), ("sf_d", 1), ("sf_e", 1)]}


def test_equal_weights_leave_the_value_unchanged() -> None:
    assert poolmap.rewrite_pool_maps(MAPS, POOLS) == MAPS


def test_drained_member_leaves_only_its_pool() -> None:
    out = poolmap.rewrite_pool_maps(MAPS, {**POOLS, "transactional": [("sf_c", 1), ("sf_d", 0), ("sf_e", 1)]})
    assert poolmap.randmap_members(out) == [["sf_a", "sf_b"], ["sf_c", "sf_e"]]
    assert out.endswith("regexp:/etc/postfix/sender_pool_unavailable.regexp")


def test_weights_repeat_members_and_restore_brings_back() -> None:
    weighted = {**POOLS, "transactional": [("sf_c", 1), ("sf_d", 3), ("sf_e", 3)]}
    out = poolmap.rewrite_pool_maps(MAPS, weighted)
    members = poolmap.randmap_members(out)[1]
    assert sorted(members) == ["sf_c", "sf_d", "sf_d", "sf_d", "sf_e", "sf_e", "sf_e"]
    drained = poolmap.rewrite_pool_maps(out, {**POOLS, "transactional": [("sf_c", 0), ("sf_d", 1), ("sf_e", 1)]})
    assert poolmap.randmap_members(drained)[1] == ["sf_d", "sf_e"]
    back = poolmap.rewrite_pool_maps(drained, POOLS)
    assert sorted(poolmap.randmap_members(back)[1]) == ["sf_c", "sf_d", "sf_e"]


def test_all_drained_pool_waits() -> None:
    out = poolmap.rewrite_pool_maps(MAPS, {**POOLS, "marketing": [("sf_a", 0), ("sf_b", 0)]})
    assert poolmap.randmap_members(out)[0] == [poolmap.ALL_DRAINED + "marketing"]
    back = poolmap.rewrite_pool_maps(out, POOLS)
    assert back == MAPS


def test_transport_names() -> None:
    assert poolmap.transport_name("198.51.100.72") == "sf_198_51_100_72"
    assert poolmap.transport_name("2001:db8:5f::48", "x") == "x_20010db8005f00000000000000000048"
    assert poolmap.slug("2001:db8:5f::48") == "20010db8005f00000000000000000048"


IPS = [
    {"ip": "198.51.100.72", "pool": "transactional"},
    {"ip": "198.51.100.73", "pool": "transactional", "weight": 2},
    {"ip": "198.51.100.96", "pool": "marketing", "weight": 0},
]


def test_pool_maps_weights_and_drained_pools() -> None:
    assert poolmap.pools_in_service(IPS) == ["transactional"]
    assert poolmap.pool_maps(IPS) == [
        "pipemap:{regexp:/etc/postfix/sender_pool_transactional.regexp, "
        "randmap:{sf_198_51_100_72, sf_198_51_100_73, sf_198_51_100_73}}"
    ]
    assert poolmap.pool_maps(IPS, "x", "/t")[0].startswith("pipemap:{regexp:/t/sender_pool_transactional.regexp, "
                                                          "randmap:{x_198_51_100_72, ")
    with pytest.raises(ValueError, match="marketing"):
        poolmap.pool_randmap(IPS, "marketing")


def test_weights_repeat_in_place_in_the_inventorys_order() -> None:
    ips = [{"ip": "198.51.100.70", "pool": "t", "weight": 3}, {"ip": "198.51.100.71", "pool": "t", "weight": 1},
           {"ip": "198.51.100.72", "pool": "t", "weight": 2}]
    assert poolmap.pool_randmap(ips, "t") == (
        "randmap:{sf_198_51_100_70, sf_198_51_100_70, sf_198_51_100_70, sf_198_51_100_71, "
        "sf_198_51_100_72, sf_198_51_100_72}"
    )
    # an entry's own transport (warm-up plan, monitor config) is used as it is
    assert poolmap.pool_weights([{"ip": "198.51.100.70", "pool": "t", "transport": "z_1", "weight": 2}]) == {
        "t": [("z_1", 2)]
    }


def test_drain_and_shares() -> None:
    drained = poolmap.drain(IPS, {"198.51.100.73"})
    assert [poolmap.weight_of(e) for e in drained] == [1, 0, 0]
    assert IPS[1]["weight"] == 2  # copies: the input is left as it was
    assert poolmap.pools_in_service(drained) == ["transactional"]
    assert poolmap.pools_in_service(poolmap.drain(IPS, {"198.51.100.72", "198.51.100.73"})) == []
    assert poolmap.shares([("h", "t"), ("h", "t"), ("h", "m")], [1, 3, 0]) == [0.25, 0.75, 0.0]
    assert poolmap.shares([("h", "t"), ("g", "t")], [2, 5]) == [1.0, 1.0]


def test_transport_params_own_limits_win_over_the_defaults() -> None:
    defaults = {"concurrency_limit": 5, "rate_delay": "0s", "recipient_limit": 50, "initial_concurrency": 2}
    assert poolmap.transport_params("sf_a", {}, defaults) == {
        "sf_a_destination_concurrency_limit": "5",
        "sf_a_destination_rate_delay": "0s",
        "sf_a_destination_recipient_limit": "50",
    }
    assert list(poolmap.transport_params("sf_a", {"concurrency_limit": 1, "rate_delay": 129}, defaults).items()) == [
        ("sf_a_destination_concurrency_limit", "1"),
        ("sf_a_destination_rate_delay", "129s"),
        ("sf_a_destination_recipient_limit", "50"),
    ]


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 4), st.booleans()), min_size=1, max_size=10)
)
def test_the_monitors_rewrite_gives_what_the_postfix_role_writes(entries: list[tuple[str, int, bool]]) -> None:
    """The two writers of main.cf: the role writes the plan with the drained IPs at 0 (pool_maps after drain),
    the monitor rewrites the role's undrained value with the same drained IPs (rewrite_pool_maps). Where every
    pool keeps an IP in service both give the same value, so a site.yml run after a drain changes nothing."""
    ips = [{"ip": f"198.51.100.{i}", "pool": pool, "weight": w} for i, (pool, w, _) in enumerate(entries)]
    drained = {e["ip"] for e, (_, _, out) in zip(ips, entries, strict=True) if out}
    after = poolmap.drain(ips, drained)
    assume(set(poolmap.pools_in_service(after)) == {e["pool"] for e in ips})
    role = ", ".join(poolmap.pool_maps(after))
    monitor = poolmap.rewrite_pool_maps(", ".join(poolmap.pool_maps(ips)), poolmap.pool_weights(after))
    assert monitor == role
    # and restoring them gives the role's undrained value back
    assert poolmap.rewrite_pool_maps(role, poolmap.pool_weights(ips)) == ", ".join(poolmap.pool_maps(ips))


def test_filters_return_what_the_core_returns() -> None:
    """main.cf.j2 and vars/main.yml of the postfix role call these filters: they are the core's functions."""
    from tests.unit.plugins import load_plugin

    net = load_plugin("filter", "sendfleet_net")
    warm = load_plugin("filter", "sendfleet_warmup")
    assert net.sf_transport("198.51.100.72", "x") == poolmap.transport_name("198.51.100.72", "x")
    assert net.sf_slug("2001:db8::1") == poolmap.slug("2001:db8::1")
    assert net.sf_pool_maps(IPS, "x", "/t") == poolmap.pool_maps(IPS, "x", "/t")
    assert net.sf_pools_in_service(IPS) == poolmap.pools_in_service(IPS)
    assert net.sf_pool_randmap(IPS, "transactional") == poolmap.pool_randmap(IPS, "transactional")
    assert warm.sf_apply_drained(IPS, ["198.51.100.72"]) == poolmap.drain(IPS, {"198.51.100.72"})
    limits = {"concurrency_limit": 5, "rate_delay": "0s", "recipient_limit": 50}
    entry = {"ip": "198.51.100.72", "limits": {"rate_delay": 34}}
    assert net.sf_transport_params(entry, "sf", limits) == poolmap.transport_params("sf_198_51_100_72",
                                                                                    {"rate_delay": 34}, limits)
    plan = warm.sf_warmup_plan(IPS, "h", {}, "2026-12-02", "x")
    assert [e["transport"] for e in plan] == [poolmap.transport_name(e["ip"], "x") for e in IPS]


def test_transport_limit_params() -> None:
    assert poolmap.transport_limit_params("sf_a", {"concurrency_limit": 1, "rate_delay": 129}) == {
        "sf_a_destination_concurrency_limit": "1",
        "sf_a_destination_rate_delay": "129s",
    }


def test_params_remember_and_restore_their_baseline() -> None:
    current = {"sf_a_destination_rate_delay": "0s", "sf_a_destination_concurrency_limit": "10"}
    desired = {"sf_a_destination_rate_delay": "129s", "sf_a_destination_concurrency_limit": "1"}
    plan = poolmap.plan_params(current, {}, desired)
    assert plan.changes == desired
    # applied; later the IP is warm: back to the baseline values
    applied = dict(desired)
    back = poolmap.plan_params(applied, plan.record, {})
    assert back.changes == current and back.record == {}
    # the postfix role re-templated main.cf meanwhile (values back to its own): nothing to undo
    again = poolmap.plan_params(current, plan.record, {})
    assert again.changes == {}
    # a parameter that did not exist before is removed again
    plan2 = poolmap.plan_params({"x": None}, {}, {"x": "1"})
    assert poolmap.plan_params({"x": "1"}, plan2.record, {}).changes == {"x": None}


def test_class_transport_names() -> None:
    assert poolmap.class_transport_name("198.51.100.70", "gmail") == "sf_198_51_100_70_gmail"
    assert poolmap.class_transport_name("2001:db8:5f::48", "abc", "x") == "x_20010db8005f00000000000000000048_abc"
    # class other travels on the IP's own transport
    assert poolmap.class_transport_name("198.51.100.70", "other") == poolmap.transport_name("198.51.100.70")
    for bad in ("", "Gmail", "g_mail", "g-mail", "1and1", "a" * 17):
        with pytest.raises(ValueError, match="provider class"):
            poolmap.class_transport_name("198.51.100.70", bad)


def test_split_transport() -> None:
    assert poolmap.split_transport("sf_198_51_100_70_gmail") == ("198.51.100.70", "gmail")
    assert poolmap.split_transport("sf_198_51_100_70") == ("198.51.100.70", "other")
    assert poolmap.split_transport("sf_20010db8005f00000000000000000048") == ("2001:db8:5f::48", "other")
    # a class that looks like hex digits still ends an IPv6 slug at its 32nd digit
    assert poolmap.split_transport("sf_20010db8005f00000000000000000048_abc") == ("2001:db8:5f::48", "abc")
    assert poolmap.split_transport("x_0_0_0_0_a", "x") == ("0.0.0.0", "a")
    assert poolmap.split_transport("sf_198_51_100_70_gmail", "x") is None
    for name in (
        "smtp", "relay", "sf_", "sf_a", "sf_198_51_100", "sf_198_51_100_256", "sf_198_51_100_070",
        "sf_198_51_100_70_", "sf_198_51_100_70__gmail", "sf_198_51_100_70_Gmail", "sf_198_51_100_70_g-mail",
        "sf_198_51_100_70_other", "sf_198_51_100_70_gmail_x", "sf_20010DB8005F00000000000000000048",
        "sf_20010db8005f0000000000000000004", "sf_20010db8005f000000000000000000480", "sf_198_51_100_70_" + "a" * 17,
    ):
        assert poolmap.split_transport(name) is None, name


@given(
    st.one_of(
        st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i))),
        st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i))),
    ),
    st.from_regex(r"\A[a-z][a-z0-9]{0,15}\Z") | st.sampled_from(["abc", "f", "deadbeef", "a0", "other"]),
    st.sampled_from(["sf", "x", "sf2"]),
)
def test_class_transport_names_round_trip(ip: str, klass: str, prefix: str) -> None:
    name = poolmap.class_transport_name(ip, klass, prefix)
    assert poolmap.split_transport(name, prefix) == (ip, klass)
    assert len(name) <= len(prefix) + 1 + 32 + 1 + 16
