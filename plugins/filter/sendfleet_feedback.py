"""Filters of the feedback loop (bounce domains, the suppression lookup): thin calls into the sendfleet
package, whose model and store are the one home of these rules."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

try:
    from sendfleet.core.inventory import bounce_domains_of
except ImportError as err:  # pragma: no cover - the controller's environment is wrong
    raise ImportError(f"the sendfleet Python package is not importable by {sys.executable}: {err}") from err


def sf_bounce_domains(sender_domains: Any, feedback_mx: Any = None) -> dict[str, str]:
    """Sender domain -> bounce domain (the VERP return path's domain); `feedback_mx`: the fleet's feedback MX
    hosts (or the hosts of group feedback): without any, only domains that name a bounce_domain get one."""
    domains = sender_domains if isinstance(sender_domains, Mapping) else {}
    return bounce_domains_of(domains, bool(feedback_mx))


def sf_suppression_query(_: Any = None) -> str:
    """The query the senders' Postfix map runs at RCPT (pgsql_table(5)), from the feedback store."""
    from sendfleet.feedback.store import LOOKUP_QUERY

    return LOOKUP_QUERY


def sf_host_addresses(hosts: Any, hostvars: Any) -> list[str]:
    """The address Ansible reaches each host at (ansible_host, else its name) as a host CIDR: the source address
    of the host's own connections (e.g. the senders' suppression lookups)."""
    import ipaddress

    out: list[str] = []
    for name in hosts or []:
        seen = hostvars[str(name)]
        address = str(seen.get("ansible_host") or name)
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            continue  # a name: the caller lists networks itself
        out.append(f"{ip}/{ip.max_prefixlen}")
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"sf_bounce_domains": sf_bounce_domains, "sf_suppression_query": sf_suppression_query,
                "sf_host_addresses": sf_host_addresses}
