"""Rewriting a pool's randmap in main.cf and the transport limits with their baselines."""

from __future__ import annotations

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


def test_layout_matches_the_postfix_role() -> None:
    from tests.unit.plugins import load_plugin

    net = load_plugin("filter", "sendfleet_net")
    ips = [{"ip": "198.51.100.70", "pool": "t", "weight": 3}, {"ip": "198.51.100.71", "pool": "t", "weight": 1},
           {"ip": "198.51.100.72", "pool": "t", "weight": 2}]
    ours = poolmap.weighted_members([(net.sf_transport(e["ip"]), e["weight"]) for e in ips])
    assert "randmap:{" + ", ".join(ours) + "}" == net.sf_pool_randmap(ips, "t")


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
