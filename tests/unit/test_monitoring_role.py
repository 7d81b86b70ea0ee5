"""The monitoring role's configuration files, rendered by ansible-playbook (the venv's) on this machine with the
role's defaults and vars (`include_role ... tasks_from: checks, public: true`: the role's checks run, its variables
stay visible), written to a temporary folder only: nothing is installed or started.

prometheus.yml and alertmanager.yml are then read back as YAML and, when Debian's promtool and amtool are installed
on this machine (`apt-get install prometheus prometheus-alertmanager`), checked by them as the role's `validate:`
and handlers check them on the monitoring host; prometheus.yml is checked with the role's shipped rule files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "monitoring"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
FILES = ("prometheus.yml", "alertmanager.yml", "prometheus.default", "prometheus-alertmanager.default",
         "sendfleet-dnsdrift.service", "sendfleet-dnsdrift.timer")

INVENTORY: dict[str, Any] = {"all": {
    "vars": {"admin_networks": ["198.51.100.0/29", "2001:db8:5f::/64"], "ansible_connection": "local",
             "ansible_python_interpreter": sys.executable},
    "children": {
        "senders": {"hosts": {"mta1": {"ansible_host": "198.51.100.10"}, "mta2": {"ansible_host": "2001:db8:5f::11"},
                              "mta3": {}}},
        "feedback": {"hosts": {"fb": {"ansible_host": "198.51.100.21"}}},
        # mon is also a sender here: it is scraped once, labelled with the first scrape group it is in
        "monitoring": {"hosts": {"mon": {"ansible_host": "198.51.100.22"}}},
        "sinks": {"hosts": {"sink": {"ansible_host": "198.51.100.20"}}},
    }}}
INVENTORY["all"]["children"]["senders"]["hosts"]["mon"] = {}

# What the lab inventory sets (docs/monitoring.md).
LAB_VARS: dict[str, Any] = {
    "monitoring_alert_receivers": [{"name": "lab", "webhook": {"url": "http://198.51.100.20:9095/"}}],
    "monitoring_alert_route": {"group_wait": "2s", "group_interval": "5s", "repeat_interval": "1m"},
    "monitoring_scrape_interval": "5s",
    "monitoring_evaluation_interval": "5s",
}


def render(tmp: Path, extra: dict[str, Any], rules_from: Path = ROLE / "files" / "rules"
           ) -> subprocess.CompletedProcess[str]:
    """Render the role's templates for host mon into tmp/out, with the rule files of rules_from copied to tmp/rules;
    extra vars as -e (as an inventory would set them)."""
    (tmp / "out").mkdir(exist_ok=True)
    (tmp / "hosts.yml").write_text(yaml.safe_dump(INVENTORY))  # sorted: mon is the first sender
    rules = tmp / "rules"
    rules.mkdir(exist_ok=True)
    for path in rules_from.glob("*.yml"):
        shutil.copy(path, rules / path.name)
    (tmp / "extra.json").write_text(json.dumps({
        "monitoring_listen_address": "198.51.100.22", "monitoring_rules_dir": str(rules), **extra}))
    tasks: list[dict[str, Any]] = [
        {"name": "The role's checks and variables", "ansible.builtin.include_role": {
            "name": "monitoring", "tasks_from": "checks", "public": True}},
        *({"name": f"Render {name}", "ansible.builtin.template": {
            "src": f"{ROLE}/templates/{name}.j2", "dest": f"{tmp}/out/{name}", "mode": "0600"}} for name in FILES),
        {"name": "Write the firewall statements", "ansible.builtin.copy": {
            "content": "{{ monitoring_nftables_input | to_json }}", "dest": f"{tmp}/out/nftables.json",
            "mode": "0600"}},
    ]
    (tmp / "render.yml").write_text(yaml.safe_dump([{"name": "Render", "hosts": "mon", "gather_facts": False,
                                                      "tasks": tasks}], sort_keys=False))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(tmp / "hosts.yml"), "-e", f"@{tmp / 'extra.json'}",
                           str(tmp / "render.yml")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("monitoring")
    proc = render(tmp, LAB_VARS)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return tmp / "out"


def test_prometheus_scrapes_every_host_of_the_scrape_groups_once(lab: Path) -> None:
    conf = yaml.safe_load((lab / "prometheus.yml").read_text())
    assert conf["global"] == {"scrape_interval": "5s", "evaluation_interval": "5s"}
    assert conf["rule_files"] == [str(lab.parent / "rules") + "/*.yml"]
    assert conf["alerting"] == {"alertmanagers": [{"static_configs": [{"targets": ["198.51.100.22:9093"]}]}]}
    jobs = {job["job_name"]: job for job in conf["scrape_configs"]}
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["198.51.100.22:9090"]
    node = [(c["targets"], c["labels"]) for c in jobs["node"]["static_configs"]]
    assert node == [
        (["198.51.100.22:9100"], {"host": "mon", "group": "senders"}),  # once, with its first group
        (["198.51.100.10:9100"], {"host": "mta1", "group": "senders"}),
        (["[2001:db8:5f::11]:9100"], {"host": "mta2", "group": "senders"}),
        (["mta3:9100"], {"host": "mta3", "group": "senders"}),  # no ansible_host: the inventory name
        (["198.51.100.21:9100"], {"host": "fb", "group": "feedback"}),
    ]


def test_alertmanager_sends_every_alert_to_every_receiver_resolved_too(lab: Path) -> None:
    conf = yaml.safe_load((lab / "alertmanager.yml").read_text())
    assert conf["route"] == {"group_by": ["alertname", "host"], "group_wait": "2s", "group_interval": "5s",
                             "repeat_interval": "1m", "receiver": "lab",
                             "routes": [{"receiver": "lab", "continue": True}]}
    assert conf["receivers"] == [
        {"name": "lab", "webhook_configs": [{"url": "http://198.51.100.20:9095/", "send_resolved": True}]}]


def test_command_lines_bind_the_host_address_and_keep_no_cluster(lab: Path) -> None:
    prom = (lab / "prometheus.default").read_text()
    assert ("--web.listen-address=198.51.100.22:9090" in prom and "--storage.tsdb.retention.time=15d" in prom
            and "--config.file=/etc/prometheus/prometheus.yml" in prom)
    am = (lab / "prometheus-alertmanager.default").read_text()
    assert "--web.listen-address=198.51.100.22:9093" in am and am.rstrip().endswith('--cluster.listen-address="')


def test_firewall_statements_open_both_ports_to_the_admin_networks(lab: Path) -> None:
    assert json.loads((lab / "nftables.json").read_text()) == [
        "ip saddr { 198.51.100.0/29 } tcp dport { 9090, 9093 } accept",
        "ip6 saddr { 2001:db8:5f::/64 } tcp dport { 9090, 9093 } accept",
    ]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_prometheus_yml_with_the_shipped_rules(lab: Path) -> None:
    proc = subprocess.run(["promtool", "check", "config", str(lab / "prometheus.yml")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shipped = sorted((ROLE / "files" / "rules").glob("*.yml"))
    assert all(f"Checking {lab.parent / 'rules' / p.name}" in proc.stdout + proc.stderr for p in shipped), proc.stdout


@pytest.mark.skipif(shutil.which("amtool") is None,
                    reason="amtool not installed (apt-get install prometheus-alertmanager)")
def test_amtool_accepts_alertmanager_yml_with_email_and_webhook_receivers(tmp_path: Path) -> None:
    receivers = [
        {"name": "ops", "email": {"to": "ops@example.net", "from": "alertmanager@example.net",
                                  "smarthost": "smtp.example.net:587", "auth_username": "am",
                                  "auth_password": "secret"},
         "matchers": ['severity="critical"']},
        {"name": "hook", "webhook": {"url": "https://hooks.example.net/am", "max_alerts": 10}},
    ]
    proc = render(tmp_path, {"monitoring_alert_receivers": receivers})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = tmp_path / "out" / "alertmanager.yml"
    check = subprocess.run(["amtool", "check-config", str(out)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Found:\n - global config\n - route\n" in check.stdout and " - 2 receivers" in check.stdout, check.stdout
    conf = yaml.safe_load(out.read_text())
    assert conf["route"]["routes"] == [{"receiver": "ops", "continue": True, "matchers": ['severity="critical"']},
                                       {"receiver": "hook", "continue": True}]
    assert conf["route"]["group_wait"] == "30s" and conf["route"]["repeat_interval"] == "4h"
    assert conf["receivers"][0]["email_configs"] == [{
        "to": "ops@example.net", "from": "alertmanager@example.net", "smarthost": "smtp.example.net:587",
        "auth_username": "am", "auth_password": "secret", "send_resolved": True}]
    assert conf["receivers"][1]["webhook_configs"] == [
        {"url": "https://hooks.example.net/am", "max_alerts": 10, "send_resolved": True}]


@pytest.mark.parametrize(("receivers", "message"), [
    ([], "monitoring_alert_receivers is empty"),
    ([{"name": "both", "webhook": {"url": "http://a.test/"}, "email": {
        "to": "a@b.test", "from": "c@d.test", "smarthost": "mx.test:25"}}], "got email and webhook"),
    ([{"name": "bad", "webhook": {"url": "ftp://a.test/"}}], "(ftp://a.test/)"),
    ([{"name": "bad", "email": {"to": "ops", "from": "c@d.test", "smarthost": "mx.test"}}], "(ops, c@d.test, mx.test)"),
    ([{"name": "twice", "webhook": {"url": "http://a.test/"}}, {"name": "twice", "webhook": {"url": "http://b.test/"}}],
     "entry twice: needs a unique name"),
])
def test_bad_receivers_are_refused_in_one_line(tmp_path: Path, receivers: list[dict[str, Any]], message: str) -> None:
    proc = render(tmp_path, {"monitoring_alert_receivers": receivers})
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-4000:]
    assert not (tmp_path / "out" / "alertmanager.yml").exists()


def test_bad_durations_are_refused(tmp_path: Path) -> None:
    proc = render(tmp_path, {**LAB_VARS, "monitoring_alert_route": {"group_wait": "2 seconds"}})
    assert proc.returncode != 0
    assert "durations are Prometheus durations" in proc.stdout and "2 seconds" in proc.stdout, proc.stdout[-4000:]


def exec_start(unit: Path) -> list[str]:
    (line,) = [ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=").split()


def test_dns_drift_check_asks_the_system_resolver_without_dns_resolver(lab: Path) -> None:
    assert exec_start(lab / "sendfleet-dnsdrift.service") == [
        "/opt/sendfleet/venv/bin/python", "-m", "sendfleet.monitor", "dnsdrift",
        "--plan", "/etc/sendfleet/dns-plan.json", "--textfile-dir", "/var/lib/prometheus/node-exporter",
        "--interval", "5min", "--port", "53"]
    timer = (lab / "sendfleet-dnsdrift.timer").read_text()
    assert "OnUnitActiveSec=5min\n" in timer and "WantedBy=timers.target" in timer


def test_dns_drift_check_asks_the_inventory_resolver_and_its_command_line_runs(tmp_path: Path) -> None:
    proc = render(tmp_path, {**LAB_VARS, "dns_resolver": ["198.51.100.53", "2001:db8:5f::53"],
                             "dns_resolver_port": 5353, "monitoring_dns_drift_interval": "10 s"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    argv = exec_start(tmp_path / "out" / "sendfleet-dnsdrift.service")
    assert argv[-5:] == ["10s", "--port", "5353", "--nameserver=198.51.100.53", "--nameserver=2001:db8:5f::53"]
    assert "OnUnitActiveSec=10 s\n" in (tmp_path / "out" / "sendfleet-dnsdrift.timer").read_text()
    # the command line as the unit runs it, with this Python and a plan of no record (no question asked)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"inventory": "inv", "records": [], "problems": [], "mta_sts_policies": {}}))
    argv = [sys.executable, *argv[1:]]
    argv[argv.index("--plan") + 1] = str(plan)
    argv[argv.index("--textfile-dir") + 1] = str(tmp_path / "textfile")
    run = subprocess.run(argv, cwd=REPO / "scripts", capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    prom = (tmp_path / "textfile" / "sendfleet_dns.prom").read_text()
    assert "sendfleet_dns_check_ok 1\n" in prom and "sendfleet_dns_check_interval_seconds 10\n" in prom


@pytest.mark.parametrize(("extra", "message"), [
    ({"monitoring_dns_drift_interval": "5 minutes"}, "got '5 minutes'"),
    ({"dns_resolver": "resolver.example.net"}, 'got ["resolver.example.net"]'),
    ({"monitoring_dns_drift_port": 0}, "monitoring_dns_drift_port 1..65535 (got 0)"),
    ({"monitoring_node_exporter": False}, "the check needs monitoring_node_exporter"),
])
def test_bad_dns_drift_settings_are_refused(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    proc = render(tmp_path, {**LAB_VARS, **extra})
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-4000:]


def test_the_playbook_passes_the_syntax_check(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(INVENTORY))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "--syntax-check", "-i", str(tmp_path / "hosts.yml"),
                           str(REPO / "playbooks" / "monitoring.yml")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
