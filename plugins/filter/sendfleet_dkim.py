"""DKIM filters for the opendkim role.

- ``sender_domains | sf_dkim_keys`` -> every key a sender needs, ``[{domain, selector, type}]`` with ``type`` ``rsa``
  (the domain's ``selectors``) or ``ed25519`` (its ``ed25519_selectors``, RFC 8463), sorted by domain.
- ``sender_domains | sf_dkim_signers(type)`` -> ``{domain: selector}``: the selector that signs each domain's mail
  with keys of that type (``signing_selector`` / ``ed25519_signing_selector``, else the first of the list);
  domains without a key of that type are left out.
"""

from __future__ import annotations

from typing import Any

_LISTS = {"rsa": ("selectors", "signing_selector"), "ed25519": ("ed25519_selectors", "ed25519_signing_selector")}


def _selectors(conf: Any, key_type: str) -> list[str]:
    if not isinstance(conf, dict):
        return []
    value = conf.get(_LISTS[key_type][0]) or []
    return [str(value)] if isinstance(value, str) else [str(s) for s in value]


def sf_dkim_keys(domains: Any) -> list[dict[str, str]]:
    keys: list[dict[str, str]] = []
    for domain in sorted(domains or {}):
        for key_type in ("rsa", "ed25519"):
            keys += [{"domain": str(domain), "selector": sel, "type": key_type}
                     for sel in _selectors(domains[domain], key_type)]
    return keys


def sf_dkim_signers(domains: Any, key_type: str = "rsa") -> dict[str, str]:
    if key_type not in _LISTS:
        raise ValueError(f"sf_dkim_signers: key type {key_type!r} (rsa or ed25519)")
    signers: dict[str, str] = {}
    for domain in sorted(domains or {}):
        selectors = _selectors(domains[domain], key_type)
        if selectors:
            signers[str(domain)] = str(domains[domain].get(_LISTS[key_type][1]) or selectors[0])
    return signers


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"sf_dkim_keys": sf_dkim_keys, "sf_dkim_signers": sf_dkim_signers}
