"""Provider-class filters for the sendfleet roles: thin wrappers of sendfleet.core.shaping (the one home of provider
classes, their limits and reply rules; the shaper on each sender and `sendfleet shaping` use the same module).

- ``provider_classes | sf_provider_classes(shaping_rules)`` -> the shipped classes with the inventory's
  ``provider_classes`` merged over them, validated, as plain data ({name: {mx_suffixes, limits, rules, ...}}).
  Bad data fails the task with the key named (playbooks/validate.yml runs the same model first).
- ``sending_ips | sf_class_transports(classes, prefix)`` -> one entry per (sending IP, provider class other than
  ``other``): {name, ip, ptr, class, v6, maxproc, reuse}, for master.cf.
- ``sending_ips | sf_class_transport_params(classes, prefix, recipient_limit)`` -> the main.cf limits of those
  transports ({parameter: value}); a warming IP's own limits of the day (``limits`` of the warm-up plan) win, and
  ``throttled`` ({"ip class": connections}, the monitor agent's local fact) lowers a throttled path's.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

try:
    from ansible.errors import AnsibleFilterError

    from sendfleet.core import poolmap, shaping
except ImportError as err:  # the collection's requirement: the package, installed for ansible-playbook's Python
    raise ImportError(f"{__name__}: the sendfleet Python package is not installed for {sys.executable} "
                      "(pip install the sendfleet repository or its wheel there)") from err


def _classes(data: Any) -> dict[str, shaping.ProviderClass]:
    try:
        return shaping.parse_classes(data)
    except shaping.ShapingError as err:
        raise AnsibleFilterError(str(err)) from None


def sf_provider_classes(override: Any = None, rules: Any = None) -> dict[str, Any]:
    """The validated provider classes (shipped default + the inventory's override and extra rules), plain data."""
    try:
        merged = shaping.merge(shaping.default_data(), override or {})
        return shaping.as_data(shaping.parse_classes(merged, rules=rules))
    except shaping.ShapingError as err:
        raise AnsibleFilterError(str(err)) from None


def sf_class_transports(sending_ips: Any, classes: Any, prefix: str = "sf") -> list[dict[str, Any]]:
    """One master.cf transport per (sending IP, provider class), `other` excepted (its mail uses the IP's own
    transport). maxproc = the class's connections: the cap of simultaneous connections of that IP to that class."""
    parsed = _classes(classes)
    out = []
    def order(entry: Any) -> tuple[int, int]:
        addr = ipaddress.ip_address(str(entry["ip"]))
        return addr.version, int(addr)

    for entry in sorted(sending_ips or [], key=order):
        for name, pclass in parsed.items():
            if name == shaping.OTHER:
                continue
            out.append({
                "name": poolmap.class_transport_name(entry["ip"], name, prefix),
                "ip": str(entry["ip"]),
                "ptr": str(entry["ptr"]),
                "class": name,
                "v6": ipaddress.ip_address(str(entry["ip"])).version == 6,
                "maxproc": pclass.limits.connections,
                "reuse": pclass.limits.messages_per_connection,
            })
    return out


def sf_class_transport_params(sending_ips: Any, classes: Any, prefix: str = "sf",
                              recipient_limit: int = 50, throttled: Any = None) -> dict[str, str]:
    """main.cf limits of the per-class transports: per destination at most the class's connections (the class's
    total is master.cf's maxproc), starting at min(2, connections)."""
    parsed = _classes(classes)
    out: dict[str, str] = {}
    limits = {str(e["ip"]): e.get("limits") or {} for e in sending_ips or []}
    for t in sf_class_transports(sending_ips, classes, prefix):
        conns = parsed[t["class"]].limits.connections
        out[f"{t['name']}_destination_concurrency_limit"] = str(conns)
        out[f"{t['name']}_initial_destination_concurrency"] = str(min(2, conns))
        out[f"{t['name']}_destination_recipient_limit"] = str(recipient_limit)
        # a warming IP's limits of the day (as on its own transport; the monitor agent applies the same)
        out.update(poolmap.transport_limit_params(t["name"], limits.get(t["ip"], {})))
        # a throttle of the shaper in force ("ip class" -> connections: the monitor agent's local fact)
        conns_now = (throttled or {}).get(shaping.key(t["ip"], t["class"]))
        if conns_now is not None:
            param = f"{t['name']}_destination_concurrency_limit"
            out[param] = str(min(int(conns_now), int(out[param])))
    return dict(sorted(out.items()))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "sf_provider_classes": sf_provider_classes,
            "sf_class_transports": sf_class_transports,
            "sf_class_transport_params": sf_class_transport_params,
        }
