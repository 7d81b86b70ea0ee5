"""Configuration and data files of the lab's servers, as text. Pure: no I/O.

Knot (authoritative, RFC 2136 with TSIG), rbldnsd (blocklists with real-world semantics), unbound (the
resolver of every lab host: lab zones only), apt-cacher-ng (hosts' package proxy) and the sink MX (Postfix).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from sendfleet.lab import alertrecorder, sinkpolicy
from sendfleet.lab.config import (
    BLOCKLIST_ZONES,
    HOST_DOMAIN,
    OFF_APP_FIRST,
    OFF_APP_LAST,
    OFF_APT_CACHE,
    OFF_AUTH_DNS,
    OFF_BRIDGE,
    OFF_OUTSIDER,
    OFF_RBLDNSD,
    OFF_RESOLVER,
    RECIPIENT_DOMAINS,
    RECIPIENT_MX,
    SENDER_DOMAINS,
    TSIG_ALGORITHM,
    TSIG_KEY_NAME,
    LabConfig,
)

#: The poor neighbourhood the lab's blocklist seeds: 16 of 256 addresses listed (6.25 % > 5 %).
POOR_NEIGHBOURHOOD = "198.18.7.0/24"
ZONE_TTL = 5  # the lab changes DNS under running tests: keep caches short


def _service_names(cfg: LabConfig) -> list[tuple[str, int]]:
    names = [("gw", OFF_BRIDGE), ("ns", OFF_AUTH_DNS), ("rbl", OFF_RBLDNSD), ("resolver", OFF_RESOLVER)]
    names.append(("apt", OFF_APT_CACHE))
    names += [(f"app{o - OFF_APP_FIRST + 1}", o) for o in range(OFF_APP_FIRST, OFF_APP_LAST + 1)]
    names.append(("outsider", OFF_OUTSIDER))
    return names


def _soa(zone: str, serial: int) -> str:
    return (
        f"$ORIGIN {zone}.\n$TTL {ZONE_TTL}\n"
        f"@ SOA ns.{HOST_DOMAIN}. hostmaster.{HOST_DOMAIN}. {serial} 60 30 3600 {ZONE_TTL}\n"
        f"@ NS ns.{HOST_DOMAIN}.\n"
    )


def zone_files(cfg: LabConfig, serial: int) -> dict[str, str]:
    """Zone name -> zone file text for every zone Knot serves."""
    zones: dict[str, str] = {}
    lab = [_soa(HOST_DOMAIN, serial)]
    for name, off in _service_names(cfg):
        lab.append(f"{name} A {cfg.v4(off)}\n")
        if off <= OFF_APT_CACHE:
            lab.append(f"{name} AAAA {cfg.v6(off)}\n")
    for host in cfg.hosts:
        lab.append(f"{host.name} A {host.ipv4}\n{host.name} AAAA {host.ipv6}\n")
    for bl in BLOCKLIST_ZONES:  # delegated to rbldnsd
        lab.append(f"{bl.removesuffix('.' + HOST_DOMAIN)} NS rbl.{HOST_DOMAIN}.\n")
    zones[HOST_DOMAIN] = "".join(lab)
    for domain in SENDER_DOMAINS:
        zones[domain] = _soa(domain, serial) + f"@ MX 10 sink.{HOST_DOMAIN}.\n"
    sink = cfg.host("sink")
    for domain in RECIPIENT_DOMAINS:
        zones[domain] = _soa(domain, serial) + f"@ MX 10 {RECIPIENT_MX[domain]}.\n"
    for mx in sorted(set(RECIPIENT_MX.values())):  # each MX host's address records, in the zone it belongs to
        zone = mx_zone(mx)
        zones[zone] += f"{mx}. A {sink.ipv4}\n{mx}. AAAA {sink.ipv6}\n"
    rev = [_soa(cfg.reverse_zone, serial)]
    rev6 = [_soa(cfg.reverse_zone6, serial)]
    named = [(f"{n}.{HOST_DOMAIN}", off) for n, off in _service_names(cfg)]
    for fqdn, off in named:
        rev.append(f"{ipaddress.ip_address(cfg.v4(off)).reverse_pointer}. PTR {fqdn}.\n")
        if off <= OFF_APT_CACHE:
            rev6.append(f"{ipaddress.ip_address(cfg.v6(off)).reverse_pointer}. PTR {fqdn}.\n")
    for host in cfg.hosts:
        rev.append(f"{ipaddress.ip_address(host.ipv4).reverse_pointer}. PTR {host.fqdn}.\n")
        rev6.append(f"{ipaddress.ip_address(host.ipv6).reverse_pointer}. PTR {host.fqdn}.\n")
    zones[cfg.reverse_zone] = "".join(rev)
    zones[cfg.reverse_zone6] = "".join(rev6)
    return zones


def mx_zone(mx: str) -> str:
    """The recipient zone that holds an MX host's address records."""
    for domain in RECIPIENT_DOMAINS:
        if mx == domain or mx.endswith("." + domain):
            return domain
    raise ValueError(f"RECIPIENT_MX: {mx} is in none of the recipient zones {', '.join(RECIPIENT_DOMAINS)}")


def knot_conf(cfg: LabConfig, run_dir: Path, tsig_secret: str) -> str:
    zones = "".join(f"  - domain: {z}\n" for z in cfg.authoritative_zones)
    return f"""# written by `sendfleet lab up`
server:
    rundir: "{run_dir}"
    listen: [ {cfg.auth_dns}@53, {cfg.v6(OFF_AUTH_DNS)}@53 ]
    tcp-idle-timeout: 10

log:
  - target: stderr
    any: info

database:
    storage: "{run_dir}/db"

key:
  - id: {TSIG_KEY_NAME}
    algorithm: {TSIG_ALGORITHM}
    secret: {tsig_secret}

acl:
  - id: lab_update
    key: {TSIG_KEY_NAME}
    action: [update, transfer]
  - id: lab_transfer
    address: [ {cfg.network}, {cfg.network6}, 127.0.0.0/8 ]
    action: transfer

template:
  - id: default
    storage: "{run_dir}/zones"
    file: "%s.zone"
    acl: [ lab_update, lab_transfer ]
    semantic-checks: off
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
    serial-policy: unixtime

zone:
{zones}"""


def rbldnsd_data(cfg: LabConfig) -> dict[str, str]:
    """Dataset file name -> content, seeded with real-world semantics (the return codes real lists use)."""

    def cand(off: int) -> str:
        return cfg.v4(off)

    poor = ipaddress.ip_network(POOR_NEIGHBOURHOOD)
    zen4 = [
        ":127.0.0.2:Listed in zen.lab.test, see https://lab.test/zen?$",
        "127.0.0.2 :127.0.0.2:RFC 5782 test entry",
        f"{cand(66)} :127.0.0.2:SBL: snowshoe spam source",
        f"{cand(67)} :127.0.0.4:XBL: infected host",
        f"{cand(71)} :127.0.0.10:PBL: ISP policy, not a mail server",
        f"{cand(68)} :127.255.255.254:Query refused: open or public resolver",
        *(f"{poor[i]} :127.0.0.3:CSS: snowshoe neighbour" for i in range(1, 17)),
    ]
    zen6 = [
        ":127.0.0.2:Listed in zen.lab.test",
        "::ffff:7f00:2/128 :127.0.0.2:RFC 5782 test entry",
    ]
    l2 = [
        ":127.0.0.2:Net listed by l2.lab.test: too many L1 hits in this allocation",
        "127.0.0.2 :127.0.0.2:RFC 5782 test entry",
        f"{ipaddress.ip_network(cand(120) + '/29')}",
    ]
    dbl = [
        ":127.0.1.2:Domain listed by dbl.lab.test",
        "test :127.0.1.2:RFC 5782 test entry",
        "spammy.test :127.0.1.2:spam domain",
    ]
    origin = [
        f"{cfg.network} :127.0.0.2:64500 | {cfg.network} | ZZ | lab | 2026-01-01",
        "198.18.0.0/15 :127.0.0.2:64501 | 198.18.0.0/15 | ZZ | lab | 2026-01-01",
    ]
    asn = [
        "AS64500 :127.0.0.2:64500 | ZZ | lab | 2026-01-01 | SENDFLEET-LAB, ZZ",
        "AS64501 :127.0.0.2:64501 | ZZ | lab | 2026-01-01 | BENCH-NET, ZZ",
    ]
    return {
        "zen4": "\n".join(zen4) + "\n",
        "zen6": "\n".join(zen6) + "\n",
        "l2": "\n".join(l2) + "\n",
        "dbl": "\n".join(dbl) + "\n",
        "origin": "\n".join(origin) + "\n",
        "asn": "\n".join(asn) + "\n",
    }


def rbldnsd_zone_args() -> list[str]:
    """rbldnsd's zone:dataset:file arguments for the files of `rbldnsd_data`."""
    return [
        "zen.lab.test:ip4set:zen4",
        "zen.lab.test:ip6trie:zen6",
        "l2.lab.test:ip4trie:l2",
        "dbl.lab.test:dnset:dbl",
        "origin.asn.lab.test:ip4trie:origin",
        "asn.lab.test:dnset:asn",
    ]


def unbound_conf(cfg: LabConfig, run_dir: Path) -> str:
    lines = [
        "# written by `sendfleet lab up`: answers the lab zones and nothing outside them",
        "server:",
        f"    interface: {cfg.resolver}",
        f"    interface: {cfg.v6(OFF_RESOLVER)}",
        "    port: 53",
        "    do-daemonize: no",
        '    username: ""',
        '    chroot: ""',
        f'    directory: "{run_dir}"',
        f'    pidfile: "{run_dir}/unbound.pid"',
        "    use-syslog: no",
        "    verbosity: 1",
        '    module-config: "iterator"',
        "    num-threads: 1",
        "    access-control: 0.0.0.0/0 refuse",
        "    access-control: ::/0 refuse",
        f"    access-control: {cfg.network} allow",
        f"    access-control: {cfg.network6} allow",
        "    access-control: 127.0.0.0/8 allow",
        "    cache-max-ttl: 2",
        "    cache-max-negative-ttl: 1",
        "    infra-host-ttl: 5",
        "    qname-minimisation: no",
        '    local-zone: "." refuse',
    ]
    zones = [*cfg.authoritative_zones, *BLOCKLIST_ZONES]
    for zone in zones:
        lines.append(f'    local-zone: "{zone}." transparent')
        lines.append(f'    domain-insecure: "{zone}."')
    for zone in cfg.authoritative_zones:
        lines += ["stub-zone:", f'    name: "{zone}."', f"    stub-addr: {cfg.auth_dns}"]
    for zone in BLOCKLIST_ZONES:
        lines += ["stub-zone:", f'    name: "{zone}."', f"    stub-addr: {cfg.rbldnsd}"]
    return "\n".join(lines) + "\n"


def acng_conf(cfg: LabConfig, cache_dir: Path, log_dir: Path) -> str:
    # The stock remap config sends deb.debian.org to a mirror list this machine cannot reach (503):
    # map both archives to the machine's own Debian sources instead.
    return f"""# written by `sendfleet lab up`
CacheDir: {cache_dir}
LogDir: {log_dir}
SupportDir: /usr/lib/apt-cacher-ng
BindAddress: {cfg.apt_cache}
Port: 3142
Remap-debrep: deb.debian.org/debian ; http://deb.debian.org/debian
Remap-secdeb: deb.debian.org/debian-security security.debian.org/debian-security ; http://deb.debian.org/debian-security
ReportPage: acng-report.html
ExThreshold: 4
PassThroughPattern: ^$
ForeGround: 1
"""


# ---- the sink MX --------------------------------------------------------------------------------
SINK_SPOOL = "/var/spool/sink"
SINK_STORE = "/usr/local/bin/sink-store"

SINK_STORE_SCRIPT = r'''#!/usr/bin/python3
"""Store one delivered message with what the sink saw of its sender (written by `sendfleet lab up`).

Called by Postfix's pipe(8): sink-store CLIENT_ADDRESS HELO SENDER QUEUE_ID RECIPIENT...
Writes NAME.eml (raw, with the sink's own Received header on top) and NAME.json, atomically.
"""
import json, os, re, sys, time

client, helo, sender, queue_id, *rcpts = sys.argv[1:]
raw = sys.stdin.buffer.read()
head = raw.split(b"\n\n", 1)[0].decode("utf-8", "replace")
first_received = re.split(r"\n(?=\S)", head.replace("\r", ""))
first = next((h for h in first_received if h.lower().startswith("received:")), "")
tls = re.search(r"using (TLSv[\d.]+|SSLv\d) with cipher (\S+)", first)
spool = "/var/spool/sink"
name = "%.6f-%s" % (time.time(), queue_id)
for ext, data in (("eml", raw), ("json", None)):
    if data is None:
        data = json.dumps({
            "id": name, "queue_id": queue_id, "client_ip": client, "helo": helo,
            "mail_from": sender, "rcpt_to": rcpts,
            "tls_protocol": tls.group(1) if tls else None, "tls_cipher": tls.group(2) if tls else None,
            "received_at": time.time(), "eml": name + ".eml",
        }).encode()
    tmp = os.path.join(spool, ".%s.%s.tmp" % (name, ext))
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, os.path.join(spool, "%s.%s" % (name, ext)))
'''


SINK_POLICY_SCRIPT = "/usr/local/lib/sink-policy/sinkpolicy.py"
SINK_POLICY = f"check_policy_service inet:127.0.0.1:{sinkpolicy.POLICY_PORT}"
SINK_POLICY_UNIT = f"""# written by `sendfleet lab up`: the sink's policy service (see sinkpolicy.py)
[Unit]
Description=lab sink policy service
Before=postfix.service

[Service]
Type=notify
ExecStart=/usr/bin/python3 {SINK_POLICY_SCRIPT} {sinkpolicy.REPLY_TABLE}
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""

ALERT_RECORDER_SCRIPT = "/usr/local/lib/alert-recorder/alertrecorder.py"
ALERT_RECORDER_UNIT = f"""# written by `sendfleet lab up`: the lab's Alertmanager receiver (see alertrecorder.py)
[Unit]
Description=lab alert recorder (Alertmanager webhook receiver)
After=network.target

[Service]
Type=simple
ExecStart=/usr/bin/python3 {ALERT_RECORDER_SCRIPT} --port {alertrecorder.ALERT_PORT} --file {alertrecorder.ALERT_FILE}
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


def sink_main_cf(cfg: LabConfig) -> str:
    domains = ", ".join([*RECIPIENT_DOMAINS, *SENDER_DOMAINS])
    return f"""# written by `sendfleet lab up`: the lab's receiving MX
compatibility_level = 3.6
myhostname = sink.{HOST_DOMAIN}
mydomain = {HOST_DOMAIN}
myorigin = $myhostname
mydestination =
inet_interfaces = all
inet_protocols = all
mynetworks = 127.0.0.0/8 [::1]/128
relay_domains = {domains}
transport_maps = texthash:/etc/postfix/sink_transport
# the policy service (sink-policy, scripts/sendfleet/lab/sinkpolicy.py): replies per client IP and recipient,
# and the concurrency records (a transaction starts at MAIL, so MAIL is not delayed to RCPT)
smtpd_delay_reject = no
smtpd_sender_restrictions = {SINK_POLICY}
smtpd_recipient_restrictions = reject_unauth_destination, {SINK_POLICY}
smtpd_end_of_data_restrictions = {SINK_POLICY}
smtpd_tls_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem
smtpd_tls_key_file = /etc/ssl/private/ssl-cert-snakeoil.key
smtpd_tls_security_level = may
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
smtpd_peername_lookup = no
sinkstore_destination_recipient_limit = 50
sinkstore_destination_concurrency_limit = 20
default_process_limit = 100
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
anvil_rate_time_unit = 60s
message_size_limit = 52428800
maillog_file = /var/log/postfix.log
biff = no
"""


SINK_MASTER_CF_EXTRA = f"""
# written by `sendfleet lab up`: every accepted message is stored with what the sink saw
sinkstore unix  -       n       n       -       -       pipe
  flags=R user=sinkstore argv={SINK_STORE} ${{client_address}} ${{client_helo}} ${{sender}} ${{queue_id}} ${{recipient}}
"""


def sink_transport(cfg: LabConfig) -> str:
    return "".join(f"{d} sinkstore:\n" for d in [*RECIPIENT_DOMAINS, *SENDER_DOMAINS])
