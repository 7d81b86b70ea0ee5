"""plugins/filter/sendfleet_net.py: the address filters the roles build Postfix and nftables config from."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.plugins import load_plugin

net = load_plugin("filter", "sendfleet_net")


def test_versions() -> None:
    assert net.sf_ipversion("198.51.100.72") == 4
    assert net.sf_ipversion("2001:db8:5f::48") == 6
    assert net.sf_ipversion("198.51.100.300") == 0
    assert net.sf_ipversion("198.51.100.0/24") == 0
    assert net.sf_netversion("198.51.100.0/24") == 4
    assert net.sf_netversion("2001:db8:5f::/64") == 6
    assert net.sf_netversion("not-a-net") == 0


def test_postfix_network_syntax() -> None:
    assert net.sf_postfix_net("2001:db8:5f::/64") == "[2001:db8:5f::]/64"
    assert net.sf_postfix_net("198.51.100.32/29") == "198.51.100.32/29"


def test_family_and_duplicates() -> None:
    nets = ["198.51.100.0/29", "2001:db8:5f::/64", "198.51.100.32/29"]
    assert net.sf_family(nets, 4) == ["198.51.100.0/29", "198.51.100.32/29"]
    assert net.sf_family(nets, 6) == ["2001:db8:5f::/64"]
    assert net.sf_duplicates(["a", "b", "a", "c", "b"]) == ["a", "b"]
    assert net.sf_in_networks(["198.51.100.33", "198.51.100.40"], ["198.51.100.32/29"]) == ["198.51.100.33"]


def test_seconds() -> None:
    assert net.sf_seconds("0s") == 0
    assert net.sf_seconds("2m") == 120
    assert net.sf_seconds("1h") == 3600
    assert net.sf_seconds("7") == 7


@given(st.lists(st.tuples(st.integers(0, 255), st.sampled_from(["a", "b", "c"]), st.integers(0, 3)), max_size=12))
def test_pool_maps_list_each_transport_weight_times(entries: list[tuple[int, str, int]]) -> None:
    """Through the filter the template calls (sendfleet.core.poolmap underneath, tests/unit/test_poolmap.py)."""
    ips = [{"ip": f"198.51.100.{octet}", "pool": pool, "weight": w} for octet, pool, w in entries]
    maps = net.sf_pool_maps(ips)
    pools = net.sf_pools_in_service(ips)
    assert len(maps) == len(pools)
    for pool, line in zip(pools, maps, strict=True):
        members = line.split("randmap:{", 1)[1].rstrip("}").split(", ")
        for octet, p, _w in entries:
            if p == pool:
                expected = sum(wt for o, pp, wt in entries if pp == pool and o == octet)
                assert members.count(f"sf_198_51_100_{octet}") == expected




def test_transport_params_take_a_class_other_throttle() -> None:
    entry = {"ip": "198.51.100.71", "pool": "t"}
    defaults = {"concurrency_limit": 6, "rate_delay": "0s", "recipient_limit": 50}
    assert net.sf_transport_params(entry, "sf", defaults)["sf_198_51_100_71_destination_concurrency_limit"] == "6"
    throttled = {"198.51.100.71 other": 2, "198.51.100.71 gmail": 1}
    out = net.sf_transport_params(entry, "sf", defaults, throttled)
    assert out["sf_198_51_100_71_destination_concurrency_limit"] == "2"
