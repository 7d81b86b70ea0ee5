"""The playbooks' strategy (ansible.cfg: strategy = sendfleet_linear) is Ansible's linear carried by Mitogen."""

from __future__ import annotations

import configparser
from pathlib import Path

from tests.unit.plugins import load_plugin

REPO = Path(__file__).resolve().parents[2]


def test_ansible_cfg_selects_the_sendfleet_strategy() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "ansible.cfg")
    assert cfg["defaults"]["strategy"] == "sendfleet_linear"
    assert (REPO / cfg["defaults"]["strategy_plugins"] / "sendfleet_linear.py").is_file()


def test_the_strategy_is_linear_on_mitogen_not_the_fallback() -> None:
    module = load_plugin("strategy", "sendfleet_linear")
    bases = {f"{cls.__module__}.{cls.__name__}" for cls in module.StrategyModule.__mro__}
    assert "ansible.plugins.strategy.linear.StrategyModule" in bases
    assert "ansible_mitogen.strategy.StrategyMixin" in bases, "mitogen is not installed: pip install -e ."
