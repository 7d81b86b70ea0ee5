"""plugins/filter/sendfleet_dkim.py: the keys and signing selectors the opendkim role writes its tables from."""

from __future__ import annotations

import pytest

from tests.unit.plugins import load_plugin

dkimf = load_plugin("filter", "sendfleet_dkim")

DOMAINS = {
    "shop.test": {"pool": "t", "selectors": ["s2026a", "s2026b"], "signing_selector": "s2026b",
                  "ed25519_selectors": ["e2026a", "e2026b"], "ed25519_signing_selector": "e2026b"},
    "news.test": {"pool": "m", "selectors": ["s1"]},
    "solo.test": {"pool": "m", "selectors": "s9", "ed25519_selectors": []},
}


def test_keys_list_every_selector_with_its_type() -> None:
    assert dkimf.sf_dkim_keys(DOMAINS) == [
        {"domain": "news.test", "selector": "s1", "type": "rsa"},
        {"domain": "shop.test", "selector": "s2026a", "type": "rsa"},
        {"domain": "shop.test", "selector": "s2026b", "type": "rsa"},
        {"domain": "shop.test", "selector": "e2026a", "type": "ed25519"},
        {"domain": "shop.test", "selector": "e2026b", "type": "ed25519"},
        {"domain": "solo.test", "selector": "s9", "type": "rsa"},
    ]
    assert dkimf.sf_dkim_keys({}) == [] and dkimf.sf_dkim_keys(None) == []


def test_signers_per_type() -> None:
    assert dkimf.sf_dkim_signers(DOMAINS) == {"news.test": "s1", "shop.test": "s2026b", "solo.test": "s9"}
    # only the domains that dual-sign have an Ed25519 signer
    assert dkimf.sf_dkim_signers(DOMAINS, "ed25519") == {"shop.test": "e2026b"}
    first = {"x.test": {"selectors": ["a"], "ed25519_selectors": ["b", "c"]}}
    assert dkimf.sf_dkim_signers(first, "ed25519") == {"x.test": "b"}
    with pytest.raises(ValueError, match="key type 'dsa'"):
        dkimf.sf_dkim_signers(DOMAINS, "dsa")
