"""`inventories/lab/`, written by `sendfleet lab up`: the hosts and how to reach them, the resolver and
the TSIG key of the lab's update server. The files people edit (pools.yml) are written only when missing;
vetted_ips.yml and host_vars/ belong to `sendfleet vet --admit` and `sendfleet pool assign`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from sendfleet import yamlfile
from sendfleet.lab import alertrecorder
from sendfleet.lab.config import (
    HOST_DOMAIN,
    RECIPIENT_DOMAINS,
    SENDER_DOMAINS,
    TSIG_ALGORITHM,
    TSIG_KEY_NAME,
    LabConfig,
)
from sendfleet.lab.system import run

HEADER = "# written by `sendfleet lab up`; rewritten on every `lab up`: do not edit\n"


def ensure_ssh_key(state_dir: Path) -> Path:
    """The lab's SSH key lives with the lab (its hosts trust it); inventories get a copy."""
    key = state_dir / "ssh" / "lab_ed25519"
    if not key.exists():
        key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sendfleet-lab", "-f", str(key)])
    os.chmod(key, 0o600)
    return key


def inventory_key(inventory_dir: Path) -> Path:
    return inventory_dir / ".ssh" / "lab_ed25519"


def copy_ssh_key(key: Path, inventory_dir: Path) -> Path:
    dest = inventory_key(inventory_dir)
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for src, dst in ((key, dest), (key.with_suffix(".pub"), dest.with_suffix(".pub"))):
        data = src.read_bytes()
        if not dst.exists() or dst.read_bytes() != data:
            tmp = dst.with_name(f".{dst.name}.tmp")
            tmp.write_bytes(data)
            os.chmod(tmp, 0o600)
            os.replace(tmp, dst)
    return dest


def write_inventory(cfg: LabConfig, lab_key: Path, tsig_secret: str) -> None:
    inv = cfg.inventory_dir
    key = copy_ssh_key(lab_key, inv)
    senders = {h.name: {"ansible_host": h.ipv4, "host_ipv6": h.ipv6} for h in cfg.hosts if h.role == "sender"}
    def group(role: str) -> dict[str, Any]:
        return {h.name: {"ansible_host": h.ipv4, "host_ipv6": h.ipv6} for h in cfg.hosts if h.role == role}

    hosts: dict[str, Any] = {"all": {"children": {
        "senders": {"hosts": senders}, "sinks": {"hosts": group("sink")}, "feedback": {"hosts": group("feedback")},
        "monitoring": {"hosts": group("monitoring")},
    }}}
    yamlfile.write_atomic(inv / "hosts.yml", HEADER + yamlfile.dumps(hosts))
    lab_vars: dict[str, Any] = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(key.resolve()),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        "ansible_python_interpreter": "/usr/bin/python3",
        "lab": True,
        "dns_resolver": cfg.resolver,
        "host_domain": HOST_DOMAIN,
        "lab_network": cfg.network,
        "lab_network6": cfg.network6,
        "lab_candidate_range": cfg.candidate_range,
        "lab_app_addresses": cfg.app_addresses,
        "lab_outsider_address": cfg.outsider,
        "lab_sink_host": "sink",
        "lab_sink_address": cfg.host("sink").ipv4,
        "lab_recipient_domains": list(RECIPIENT_DOMAINS),
        "lab_apt_proxy": f"http://{cfg.apt_cache}:3142",
        "lab_blocklist_server": cfg.rbldnsd,
        "lab_feedback_address": cfg.host("fb").ipv4,
        # the monitoring host scrapes every node exporter; short cycles so that a test sees an alert within seconds,
        # and the lab's alert recorder on the sink receives them
        "base_monitoring_networks": [f"{cfg.host('mon').ipv4}/32"],
        "monitoring_scrape_interval": "5s",
        "monitoring_evaluation_interval": "5s",
        "monitoring_alert_receivers": [
            {"name": "lab", "webhook": {"url": f"http://{cfg.host('sink').ipv4}:{alertrecorder.ALERT_PORT}/"}}],
        "monitoring_alert_route": {"group_wait": "2s", "group_interval": "5s", "repeat_interval": "1m"},
        "monitoring_dns_drift_interval": "30s",
        # the senders' checks often enough that a stopped monitor is stale within a minute and a held queue ages
        # past its threshold in one; rate alerts from a handful of messages
        "dnsbl_monitor_interval": "20s",
        "dnsbl_monitor_timer_jitter": "2s",
        "dnsbl_monitor_delivery_interval": "10s",
        "dnsbl_monitor_queue_age_threshold": 60,
        "dnsbl_monitor_alert_min_volume": {"deferral": 5, "bounce": 5, "complaint": 20},
    }
    yamlfile.write_atomic(inv / "group_vars/all/lab.yml", HEADER + yamlfile.dumps(lab_vars))
    update_vars = {
        "dns_update_server": cfg.auth_dns,
        "dns_update_port": 53,
        "dns_tsig_key_name": TSIG_KEY_NAME,
        "dns_tsig_algorithm": TSIG_ALGORITHM,
        "dns_tsig_secret": tsig_secret,
        "dns_zones": cfg.authoritative_zones,
    }
    yamlfile.write_atomic(inv / "group_vars/all/dns_update.yml", HEADER + yamlfile.dumps(update_vars), mode=0o600)
    yamlfile.write_atomic(inv / "group_vars/all/shaping.yml", HEADER + SHAPING_TEXT)
    # the senders' read-only login to the feedback host's suppression list: derived from the lab's own secret
    lookup = hashlib.sha256(f"suppression-lookup:{tsig_secret}".encode()).hexdigest()[:32]
    yamlfile.write_atomic(inv / "group_vars/all/feedback.yml",
                          HEADER + yamlfile.dumps({"suppression_lookup_password": lookup}), mode=0o600)
    pools = inv / "group_vars/all/pools.yml"
    if not pools.exists():
        yamlfile.write_atomic(pools, pools_text(cfg))


# The lab's providers answer from MX hosts under their lab zones (mx1.l.gmail.test ...); small limits so that a test
# sees them in force; lab rules with short durations so that a test sees a path resume by itself (matched before
# the shipped rules of the class, which stay as they are).
SHAPING_TEXT = """provider_classes:
  gmail:
    mx_suffixes: [gmail.test]
    limits: {connections: 2, messages_per_connection: 20}
  yahoo:
    mx_suffixes: [yahoo.test]
    limits: {connections: 3, messages_per_connection: 20}
  outlook:
    mx_suffixes: [outlook.test]
    limits: {connections: 3, messages_per_connection: 50}
  other:
    limits: {connections: 6, messages_per_connection: 100}
shaping_rules:
  - class: gmail
    name: lab-gmail-unusual-rate
    code: 421
    enhanced: 4.7.28
    action: suspend
    duration: 90s
    source: the lab (a suspension a test can wait out; the shipped rules for this reply throttle)
"""


def pools_text(cfg: LabConfig) -> str:
    shop, news = SENDER_DOMAINS
    return f"""# The lab's sending pools and sender domains: written once by `sendfleet lab up`, then yours to edit.
# vetted_ips.yml (beside this file) is written by `sendfleet vet --admit`; host_vars/*.yml by
# `sendfleet pool assign`.
pools:
  transactional: {{}}
  marketing: {{}}
sender_domains:
  {shop}:
    pool: transactional
    selectors: [s2026a]
    dmarc: {{p: none, rua: "mailto:dmarc@bounces.{shop}"}}
    tls_rpt: {{rua: "mailto:tlsrpt@bounces.{shop}"}}
  {news}:
    pool: marketing
    selectors: [s2026a]
    dmarc: {{p: none, rua: "mailto:dmarc@bounces.{news}"}}
    tls_rpt: {{rua: "mailto:tlsrpt@bounces.{news}"}}
# addresses allowed to submit mail to the senders (the lab's app addresses)
app_networks: [{cfg.app_network}]
# addresses allowed to SSH in
admin_networks: [{cfg.v4(0)}/29, {cfg.network6}]
"""
