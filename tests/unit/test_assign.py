"""Handing vetted IPs to sender hosts: pure planning."""

from __future__ import annotations

from sendfleet.core.assign import plan_assignments, ptr_name


def test_ptr_names() -> None:
    assert ptr_name("o{octet}.{host}.{domain}", "198.51.100.72", "mta1", "lab.test") == "o72.mta1.lab.test"
    assert ptr_name("o{octet}.{host}.{domain}", "2001:db8:5f::1:a", "mta1", "lab.test") == "oa.mta1.lab.test"
    assert ptr_name("{ip}.{domain}", "198.51.100.72", "mta1", "lab.test") == "198-51-100-72.lab.test"


def test_fills_each_host_up_to_its_share_and_never_reuses_an_ip() -> None:
    vetted = {"transactional": ["198.51.100.64", "198.51.100.65", "198.51.100.69", "198.51.100.70"],
              "marketing": ["198.51.100.96"]}
    in_use = {"mta1": [("198.51.100.64", "transactional")], "mta2": []}
    plan = plan_assignments(senders=["mta1", "mta2"], vetted=vetted, in_use=in_use, per_host=2,
                            pools=["transactional", "marketing"], ptr_template="o{octet}.{host}.{domain}",
                            domain="lab.test")
    got = [(a.host, a.ip, a.pool) for a in plan]
    assert got == [
        ("mta1", "198.51.100.65", "transactional"),
        ("mta2", "198.51.100.69", "transactional"),
        ("mta2", "198.51.100.70", "transactional"),
        ("mta1", "198.51.100.96", "marketing"),
    ]
    assert plan[0].as_entry() == {"ip": "198.51.100.65", "pool": "transactional", "ptr": "o65.mta1.lab.test"}


def test_assigning_again_changes_nothing() -> None:
    vetted = {"transactional": ["198.51.100.64", "198.51.100.65"]}
    in_use = {"mta1": [("198.51.100.64", "transactional"), ("198.51.100.65", "transactional")]}
    assert plan_assignments(senders=["mta1"], vetted=vetted, in_use=in_use, per_host=2, pools=["transactional"],
                            ptr_template="o{octet}.{host}.{domain}", domain="lab.test") == []


def test_an_ip_on_another_host_is_not_handed_out() -> None:
    vetted = {"marketing": ["198.51.100.96", "198.51.100.97"]}
    in_use = {"mta1": [("198.51.100.96", "transactional")], "mta2": []}
    plan = plan_assignments(senders=["mta2"], vetted=vetted, in_use=in_use, per_host=2, pools=["marketing"],
                            ptr_template="o{octet}.{host}.{domain}", domain="lab.test", warmup_start="2026-11-27")
    assert [(a.ip, a.warmup_start) for a in plan] == [("198.51.100.97", "2026-11-27")]
