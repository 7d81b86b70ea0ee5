"""The strategy sendfleet's playbooks run with (ansible.cfg: `strategy = sendfleet_linear`).

Ansible's `linear` strategy, carried by Mitogen when the `mitogen` package is installed (pinned in
pyproject.toml): the same semantics (serial batches, max_fail_percentage, unreachable hosts, check mode),
but one persistent Python interpreter per host instead of a new one for every task. On the lab that halves
an idempotent `site.yml` (3 senders: 69.6 s -> 34.6 s; bench/RESULTS.md, converge section), which is what a
converge of an already converged fleet mostly is: Ansible's per-task overhead, not work.

Without Mitogen (e.g. Ansible from the distribution), this is plain `linear`, with a warning. Set
ANSIBLE_STRATEGY=linear to run without it on purpose (e.g. to rule it out when debugging).
"""

from __future__ import annotations

from ansible.utils.display import Display

try:
    from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule
except ImportError:  # pragma: no cover - depends on the installation
    Display().warning("sendfleet_linear: the mitogen package is not installed; running Ansible's plain linear "
                      "strategy (slower). Install it with `pip install -e .` (pyproject.toml pins it).")
    from ansible.plugins.strategy.linear import StrategyModule

__all__ = ["StrategyModule"]
