"""Address and Postfix filters for the sendfleet roles (stdlib `ipaddress` only: no ansible.utils collection here).
The pool-selection filters are thin wrappers of sendfleet.core.poolmap, the one home of those rules (the monitor
agent and `sendfleet warmup plan` call the same functions).

- ``value | sf_ipversion``  -> 4, 6, or 0 when ``value`` is not a single address.
- ``value | sf_netversion`` -> 4, 6, or 0 when ``value`` is not a network (host bits allowed).
- ``values | sf_family(4)``   -> the entries of ``values`` that are IPv4 (or 6) addresses/networks.
- ``value | sf_postfix_net`` -> a network in Postfix's mynetworks syntax (``[2001:db8::]/64`` for IPv6).
- ``value | sf_slug``       -> a transport-name-safe form of an address (``198_51_100_72``).
- ``ip | sf_transport(prefix)`` -> the Postfix transport name of a sending IP.
- ``sending_ips | sf_pool_randmap(pool, prefix)`` -> ``randmap:{...}`` of a pool's transports (weights repeat).
- ``sending_ips | sf_pools_in_service`` -> the pools with a positive total weight (0 = drained).
- ``sending_ips | sf_pool_maps(prefix)`` -> the sender_dependent_default_transport_maps entries, one per pool.
- ``entry | sf_transport_params(prefix, limits, throttled)`` -> {parameter: value} of the entry's transport limits
  in main.cf (a throttle of its class other path from the monitor's local fact lowers its connections).
- ``value | sf_seconds``     -> a Postfix time value (``2m``) in seconds.
- ``values | sf_duplicates`` -> the entries occurring more than once.
- ``ips | sf_in_networks(nets)`` -> the addresses of ``ips`` contained in one of ``nets``.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

try:
    from sendfleet.core import poolmap
except ImportError as err:  # the collection's requirement: the package, installed for ansible-playbook's Python
    raise ImportError(f"{__name__}: the sendfleet Python package is not installed for {sys.executable} "
                      "(pip install the sendfleet repository or its wheel there)") from err


def sf_ipversion(value: Any) -> int:
    try:
        return ipaddress.ip_address(str(value)).version
    except ValueError:
        return 0


def sf_netversion(value: Any) -> int:
    try:
        return ipaddress.ip_network(str(value), strict=False).version
    except ValueError:
        return 0


def sf_family(values: Any, version: int) -> list[str]:
    """The entries of ``values`` (addresses or networks) of IP version ``version``."""
    return [str(v) for v in values if sf_netversion(v) == int(version)]


def sf_postfix_net(value: Any) -> str:
    net = ipaddress.ip_network(str(value), strict=False)
    if net.version == 6:
        return f"[{net.network_address}]/{net.prefixlen}"
    return str(net)


def sf_slug(value: Any) -> str:
    return poolmap.slug(value)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def sf_seconds(value: Any) -> int:
    """A Postfix time value (``0``, ``1s``, ``2m``...) in seconds."""
    text = str(value).strip()
    if text and text[-1] in _UNITS:
        return int(text[:-1]) * _UNITS[text[-1]]
    return int(text)


def sf_in_networks(values: Any, networks: Any) -> list[str]:
    nets = [ipaddress.ip_network(str(n), strict=False) for n in networks]
    out = []
    for value in values:
        addr = ipaddress.ip_address(str(value))
        if any(addr.version == n.version and addr in n for n in nets):
            out.append(str(value))
    return out


def sf_duplicates(values: Any) -> list[str]:
    """The entries that occur more than once in ``values`` (as strings, sorted)."""
    seen: dict[str, int] = {}
    for value in values:
        seen[str(value)] = seen.get(str(value), 0) + 1
    return sorted(k for k, n in seen.items() if n > 1)


def sf_transport(ip: Any, prefix: str = "sf") -> str:
    """The Postfix transport name of a sending IP (``sf_198_51_100_72``)."""
    return poolmap.transport_name(ip, prefix)


def sf_pool_randmap(sending_ips: Any, pool: str, prefix: str = "sf") -> str:
    """``randmap:{...}`` over the transports of ``pool``, each repeated ``weight`` times (default 1)."""
    return poolmap.pool_randmap(sending_ips, pool, prefix)


def sf_pools_in_service(sending_ips: Any) -> list[str]:
    """The pools with a positive total weight in ``sending_ips`` (weight defaults to 1; 0 = drained)."""
    return poolmap.pools_in_service(sending_ips)


def sf_pool_maps(sending_ips: Any, prefix: str = "sf", table_dir: str = "/etc/postfix") -> list[str]:
    """One ``pipemap:{regexp:<pool senders>, randmap:{<pool transports>}}`` per pool in service."""
    return poolmap.pool_maps(sending_ips, prefix, table_dir)


def sf_transport_params(entry: Any, prefix: str, limits: Any, throttled: Any = None) -> dict[str, str]:
    """The main.cf limits of the entry's transport: its own warm-up ``limits`` where set, else ``limits``; a
    throttle of the shaper on its class other path (``throttled``: {"ip other": connections}, the monitor agent's
    local fact) lowers its connections."""
    transport = poolmap.transport_name(entry["ip"], prefix)
    out = poolmap.transport_params(transport, entry.get("limits") or {}, limits)
    conns = (throttled or {}).get(f"{entry['ip']} other")
    if conns is not None:
        param = f"{transport}_destination_concurrency_limit"
        out[param] = str(min(int(conns), int(out[param])))
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "sf_ipversion": sf_ipversion,
            "sf_netversion": sf_netversion,
            "sf_postfix_net": sf_postfix_net,
            "sf_family": sf_family,
            "sf_duplicates": sf_duplicates,
            "sf_slug": sf_slug,
            "sf_seconds": sf_seconds,
            "sf_transport": sf_transport,
            "sf_pool_randmap": sf_pool_randmap,
            "sf_pool_maps": sf_pool_maps,
            "sf_pools_in_service": sf_pools_in_service,
            "sf_transport_params": sf_transport_params,
            "sf_in_networks": sf_in_networks,
        }
