"""One source of inventory rules: the same bad inventories are refused, with the same problem named, by
`sendfleet inventory check`, `sendfleet dns plan` and `ansible-playbook site.yml` (before any host is contacted).

Needs ansible-playbook (the venv) but no lab: the hosts' addresses are never reached, since site.yml stops in its
validation play, which runs on the controller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

REPO = Path(__file__).resolve().parents[2]

HOSTS = """all:
  vars:
    host_domain: fleet.test
  children:
    senders:
      hosts:
        mta1: {ansible_host: 198.51.100.250}
        mta2: {ansible_host: 198.51.100.251}
"""
POOLS = """pools: {transactional: {}, marketing: {}}
sender_domains:
  shop.test: {pool: transactional, selectors: [s2026a]}
  news.test: {pool: marketing, selectors: [s2026a]}
app_networks: [198.51.100.32/29]
admin_networks: [198.51.100.0/28]
dns_zones: [fleet.test, shop.test, news.test]
"""
VETTED = """vetted_ips:
  transactional: [{ip: 198.51.100.70}, {ip: 198.51.100.71}]
  marketing: [{ip: 198.51.100.80}]
"""
MTA1 = """sending_ips:
  - {ip: 198.51.100.70, pool: transactional, ptr: o70.mta1.fleet.test}
  - {ip: 198.51.100.80, pool: marketing, ptr: o80.mta1.fleet.test}
"""
MTA2 = """sending_ips:
  - {ip: 198.51.100.71, pool: transactional, ptr: o71.mta2.fleet.test}
"""

#: (case, file -> replacement text, the problem every tool must name). The first row is a valid inventory.
CASES: list[tuple[str, dict[str, str], str]] = [
    ("valid", {}, ""),
    ("selector with an underscore",
     {"group_vars/all/pools.yml": POOLS.replace("shop.test: {pool: transactional, selectors: [s2026a]}",
                                                 "shop.test: {pool: transactional, selectors: [s_2026a]}")},
     "group_vars/all/pools.yml: sender_domains.shop.test.selectors[0]: 's_2026a' is not a valid DKIM selector"),
    ("domain without selectors",
     {"group_vars/all/pools.yml": POOLS.replace("news.test: {pool: marketing, selectors: [s2026a]}",
                                                 "news.test: {pool: marketing}")},
     "group_vars/all/pools.yml: sender_domains.news.test.selectors: missing"),
    ("signing selector not listed",
     {"group_vars/all/pools.yml": POOLS.replace("selectors: [s2026a]}\n  news",
                                                 "selectors: [s2026a], signing_selector: s2027}\n  news")},
     "sender_domains.shop.test.signing_selector: 's2027' is not one of its selectors"),
    ("a selector in both lists",
     {"group_vars/all/pools.yml": POOLS.replace("selectors: [s2026a]}\n  news",
                                                 "selectors: [s2026a], ed25519_selectors: [s2026a]}\n  news")},
     "sender_domains.shop.test.ed25519_selectors[0]: selector 's2026a' is listed twice"),
    ("domain of an unknown pool",
     {"group_vars/all/pools.yml": POOLS.replace("{pool: marketing, selectors", "{pool: bulk, selectors")},
     "group_vars/all/pools.yml: sender_domains.news.test.pool: unknown pool 'bulk'"),
    ("sender domain with an underscore",
     {"group_vars/all/pools.yml": POOLS.replace("news.test: {", "news_x.test: {")},
     "group_vars/all/pools.yml: sender_domains: 'news_x.test' is not a fully qualified name"),
    ("weight above 100",
     {"host_vars/mta2.yml": MTA2.replace("fleet.test}", "fleet.test, weight: 101}")},
     "host_vars/mta2.yml: sending_ips[0].weight: 101 is outside 1..100"),
    ("weight 0",
     {"host_vars/mta2.yml": MTA2.replace("fleet.test}", "fleet.test, weight: 0}")},
     "host_vars/mta2.yml: sending_ips[0].weight: 0 is outside 1..100"),
    ("PTR that is not fully qualified",
     {"host_vars/mta2.yml": MTA2.replace("o71.mta2.fleet.test", "o71")},
     "host_vars/mta2.yml: sending_ips[0].ptr: 'o71' is not a fully qualified name"),
    ("PTR with an underscore",
     {"host_vars/mta2.yml": MTA2.replace("o71.mta2.fleet.test", "o_71.mta2.fleet.test")},
     "host_vars/mta2.yml: sending_ips[0].ptr: 'o_71.mta2.fleet.test' is not a fully qualified name"),
    ("sending IP of an unknown pool",
     {"host_vars/mta2.yml": MTA2.replace("pool: transactional", "pool: bulk")},
     "host_vars/mta2.yml: sending_ips[0].pool: unknown pool 'bulk'"),
    ("sending IP not vetted",
     {"host_vars/mta2.yml": MTA2.replace("198.51.100.71", "198.51.100.72")},
     "host_vars/mta2.yml: sending_ips: 198.51.100.72 is not in vetted_ips[transactional]"),
    ("sending IP on two hosts",
     {"host_vars/mta2.yml": MTA2.replace("198.51.100.71", "198.51.100.70")},
     "host_vars/mta2.yml: sending_ips: 198.51.100.70 is also assigned to host mta1"),
    ("sender without host_domain",
     {"hosts.yml": HOSTS.replace("  vars:\n    host_domain: fleet.test\n", "")},
     "host_domain: missing: sender mta"),
    ("SASL asked for",
     {"group_vars/all/pools.yml": POOLS + "postfix_sasl: true\n"},
     "group_vars/all/pools.yml: postfix_sasl: the senders do not offer SASL authentication"),
    ("no admin_networks",
     {"group_vars/all/pools.yml": POOLS.replace("admin_networks: [198.51.100.0/28]\n", "")},
     "admin_networks: missing"),
    ("a shaping rule of an unknown class",
     {"group_vars/all/shaping.yml": "shaping_rules:\n  - {class: nosuch, name: r, code: 421, action: suspend, "
                                    "duration: 1h}\n"},
     "group_vars/all/shaping.yml: shaping_rules[0].class: unknown provider class 'nosuch'"),
    ("a reply regex that does not compile",
     {"group_vars/all/shaping.yml": "shaping_rules:\n  - {class: gmail, name: r, text: '([', action: suspend, "
                                    "duration: 1h}\n"},
     "group_vars/all/shaping.yml: shaping_rules[0].text: the regex does not compile"),
    ("a variable sendfleet no longer reads",
     {"group_vars/all/pools.yml": POOLS + "postfix_providers: {gmail: {domains: [gmail.com]}}\n"},
     "group_vars/all/pools.yml: postfix_providers: replaced by provider_classes"),
    ("a negative provider limit",
     {"group_vars/all/shaping.yml": "provider_classes:\n  gmail: {limits: {connections: -2}}\n"},
     "group_vars/all/shaping.yml: provider_classes.gmail.limits.connections: must be >= 1, got -2"),
]


def _key(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    for domain in ("shop.test", "news.test"):
        _key(root / domain / "s2026a.pem")
    return root


def inventory(root: Path, keys: Path, changes: dict[str, str]) -> Path:
    files = {"hosts.yml": HOSTS, "group_vars/all/pools.yml": POOLS, "group_vars/all/vetted_ips.yml": VETTED,
             "host_vars/mta1.yml": MTA1, "host_vars/mta2.yml": MTA2, **changes}
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "group_vars/all/keys.yml").write_text(f"dkim_keys_dir: {keys}\n")
    return root


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0", "NO_COLOR": "1"}
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize(("case", "changes", "problem"), CASES, ids=[c[0] for c in CASES])
def test_every_tool_refuses_the_same_inventory(
    tmp_path: Path, keys: Path, case: str, changes: dict[str, str], problem: str
) -> None:
    inv = inventory(tmp_path / "inv", keys, changes)

    check = run(sys.executable, "-m", "sendfleet", "inventory", "check", "-i", str(inv), "--format", "json")
    report = json.loads(check.stdout)
    plan = run(sys.executable, "-m", "sendfleet", "dns", "plan", "-i", str(inv))
    # the validation play alone when the inventory is valid: the rest of site.yml would contact the hosts
    playbook = "playbooks/validate.yml" if not problem else "site.yml"
    site = run(str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv / "hosts.yml"), playbook)

    if not problem:
        assert (check.returncode, report["problems"]) == (0, []), check.stdout
        assert plan.returncode == 0, plan.stderr
        assert site.returncode == 0, site.stdout[-3000:]
        return
    assert check.returncode == 1
    texts = [p["text"] for p in report["problems"]]
    assert texts and all(problem in text for text in texts), texts  # one per host for a per-host rule
    assert plan.returncode == 2 and plan.stdout == ""
    assert plan.stderr.count("\n") == 1 and problem in plan.stderr, plan.stderr
    assert site.returncode != 0
    assert problem in site.stdout, site.stdout[-3000:]
    # refused in the validation play, before any play that changes a host
    assert "PLAY [Publish the fleet's DNS records]" not in site.stdout
    assert "PLAY [Install the senders' packages]" not in site.stdout
    assert "changed=0" in site.stdout and "changed=1" not in site.stdout
