"""Dual DKIM signing, RSA + Ed25519 (RFC 8463), on the lab (the opendkim role's optional part).

The lab's inventory signs with RSA only. This test gives news.test an Ed25519 selector in the inventory
(`ed25519_selectors`), converges, and checks: the Ed25519 record is published, a message from news.test
carries two signatures that both verify (dkimpy) against lab DNS, shop.test keeps one, and a second run
changes nothing. It then puts the inventory back and converges again: the second OpenDKIM instance is gone
and news.test is signed by RSA alone. The inventory is restored even when the test fails.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest
import yaml

from tests.lab.helpers import (
    converge,
    host_address,
    make_message,
    resolver,
    run_playbook,
    submit,
    txt_lookup,
    wait_for,
)

pytestmark = pytest.mark.lab

DOMAIN = "news.test"
SELECTOR = "e2026a"


def signatures(raw: bytes) -> list[str]:
    """The a= of each DKIM-Signature header, top first."""
    found = re.findall(rb"^DKIM-Signature:(.*?)(?=^\S)", raw, re.M | re.S)
    return [m.group(1).decode() for sig in found if (m := re.search(rb"\ba=([a-z0-9-]+)", sig))]


@pytest.fixture
def dual_signing(converged: Any) -> Iterator[Any]:
    pools = Path(converged.inventory_dir) / "group_vars" / "all" / "pools.yml"
    original = pools.read_bytes()
    data = yaml.safe_load(original)
    data["sender_domains"][DOMAIN]["ed25519_selectors"] = [SELECTOR]
    pools.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        yield converged
    finally:
        pools.write_bytes(original)
        restored = run_playbook(converged.inventory_dir, "site.yml")
        assert restored.returncode == 0, "site.yml after restoring the inventory failed:\n" + restored.stdout[-5000:]


def send_and_fetch(lab: Any, host: str, run: str) -> dict[str, Any]:
    inv = lab.inventory_dir
    tags = {d: f"dual-{run}-{d}" for d in ("shop.test", DOMAIN)}
    submit(host_address(inv, host), [make_message(f"probe@{d}", "inbox@gmail.test", t) for d, t in tags.items()])
    got = {m.header("X-Sendfleet-Tag"): m for m in wait_for(f"dual-{run}-", len(tags))}
    assert set(got) == set(tags.values()), f"not every message reached the sink: {sorted(got)}"
    return {d: got[t] for d, t in tags.items()}


def test_ed25519_dual_signing_converges_verifies_and_retires(dual_signing: Any) -> None:
    lab = dual_signing
    inv = Path(lab.inventory_dir)
    txt = txt_lookup(resolver(lab.resolver))

    converge(inv)
    record = txt(f"{SELECTOR}._domainkey.{DOMAIN}")
    assert record is not None and b"k=ed25519" in record, f"Ed25519 record not published: {record!r}"
    key_file = inv / "dkim" / DOMAIN / f"{SELECTOR}.pem"
    assert b"BEGIN PRIVATE KEY" in key_file.read_bytes() and oct(key_file.stat().st_mode)[-3:] == "600"
    assert lab.ssh("mta1", "systemctl is-active opendkim-ed25519").stdout.strip() == "active"

    again = converge(inv)
    assert not again, f"second run with dual signing is not idempotent: {again}"

    run = uuid.uuid4().hex[:8]
    got = send_and_fetch(lab, "mta1", run)
    news = got[DOMAIN].raw
    algos = signatures(news)
    assert sorted(algos) == ["ed25519-sha256", "rsa-sha256"], f"{DOMAIN}: signatures {algos}"
    for idx in range(len(algos)):
        assert dkim.DKIM(news).verify(idx=idx, dnsfunc=txt), f"{DOMAIN}: signature {idx} ({algos[idx]}) does not verify"
    assert signatures(got["shop.test"].raw) == ["rsa-sha256"], "shop.test has no Ed25519 selector: one signature"


def test_retired_dual_signing_leaves_rsa_only(converged: Any) -> None:
    """Runs after the test above restored the inventory (and converged): no second instance, one signature."""
    lab = converged
    out = lab.ssh("mta1", "systemctl is-active opendkim-ed25519; test -e /etc/opendkim-ed25519.conf && echo conf; "
                  "grep -c ed25519 /etc/postfix/main.cf", check=False).stdout.split()
    assert out[0] != "active" and "conf" not in out and out[-1] == "0", f"Ed25519 instance left behind: {out}"
    got = send_and_fetch(lab, "mta1", uuid.uuid4().hex[:8])
    assert signatures(got[DOMAIN].raw) == ["rsa-sha256"], f"{DOMAIN} still dual-signed after retirement"
