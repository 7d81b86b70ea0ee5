"""Warm-up and drain filters for the sendfleet roles. The schedule is sendfleet.core.warmup (the same pure
function as `sendfleet warmup plan`), so re-running site.yml advances every IP's weight and limits; transport
names and drained weights are sendfleet.core.poolmap's (as the monitor agent applies them).

- ``sending_ips | sf_warmup_plan(host, settings, today, prefix)`` -> the entries with ``transport``,
  ``weight`` (randmap entries, normalised per pool on this host), ``limits`` ({concurrency_limit,
  rate_delay}) and ``warmup`` ({day, warm, hourly, label, share}).
- ``plan | sf_warmup_restarts(recorded)`` -> {ip: restart date} to keep on the host: an IP idle longer than
  ``restart_after_idle_days`` (``last_sent`` from the host's delivery counts) warms up again from that day.
- ``sending_ips | sf_apply_drained(drained)`` -> the entries with ``weight: 0`` for the drained IPs
  (e.g. ``ansible_local.sendfleet_monitor.drained``), so a template that honours ``weight`` leaves them out.
"""

from __future__ import annotations

import sys
from datetime import date
from typing import Any

try:
    from sendfleet.core import poolmap, warmup
except ImportError as err:  # the collection's requirement: the package, installed for ansible-playbook's Python
    raise ImportError(f"{__name__}: the sendfleet Python package is not installed for {sys.executable} "
                      "(pip install the sendfleet repository or its wheel there)") from err


def _start(entry: dict[str, Any], restarts: dict[str, date]) -> date | None:
    """The inventory's warmup_start, or a later restart recorded on the host after an idle period."""
    return warmup.start_with_restart(warmup.as_date(entry.get("warmup_start")), restarts.get(str(entry["ip"])))


def sf_warmup_plan(
    sending_ips: Any,
    host: str = "",
    settings: Any = None,
    today: Any = None,
    prefix: str = "sf",
    last_sent: Any = None,
    restarts: Any = None,
) -> list[dict[str, Any]]:
    """`last_sent`: ip -> last successful delivery (date or Unix seconds; the host's delivery.json), for
    the idle restart; `restarts`: ip -> date of a restart recorded before (kept on the host)."""
    cfg = warmup.settings_from(settings or {})
    day = warmup.as_date(today) or date.today()
    entries = [dict(e) for e in sending_ips or []]
    again = {str(k): d for k, v in (restarts or {}).items() if (d := warmup.as_date(v)) is not None}
    sent = {str(k): d for k, v in (last_sent or {}).items() if (d := warmup.recorded_day(v)) is not None}
    plans = warmup.plan_pool_members(
        [(str(e["ip"]), str(e["pool"]), host, _start(e, again)) for e in entries],
        day,
        cfg,
        sent,
    )
    out = []
    for entry, plan in zip(entries, plans, strict=True):
        stage = plan.stage
        entry.update(
            {
                "transport": poolmap.transport_name(entry["ip"], prefix),
                "weight": plan.weight,
                "limits": stage.limits.as_dict(),
                "warmup": {
                    "day": stage.day,
                    "warm": stage.warm,
                    "label": stage.label,
                    "hourly": stage.hourly,
                    "share": round(plan.share, 4),
                    "start": stage.start.isoformat() if stage.start else None,
                    "restarted": stage.restarted,
                },
            }
        )
        out.append(entry)
    return out


def sf_warmup_restarts(plan: Any, restarts: Any = None) -> dict[str, str]:
    """The restarts to keep on the host: the recorded ones of IPs still planned, plus today's new ones."""
    ips = {str(e["ip"]) for e in plan or []}
    out = {str(k): str(v) for k, v in (restarts or {}).items() if str(k) in ips}
    for e in plan or []:
        w = e.get("warmup") or {}
        if w.get("restarted") and w.get("start"):
            out[str(e["ip"])] = str(w["start"])
    return dict(sorted(out.items()))


def sf_apply_drained(sending_ips: Any, drained: Any) -> list[dict[str, Any]]:
    return poolmap.drain(sending_ips or [], drained or [])


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "sf_warmup_plan": sf_warmup_plan,
            "sf_warmup_restarts": sf_warmup_restarts,
            "sf_apply_drained": sf_apply_drained,
        }
