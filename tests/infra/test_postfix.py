"""Postfix as the inventory designs it: one transport per in-service sending IP (bind address, HELO = PTR),
pools routing each sender domain to its own pool's transports, the DKIM milter with tempfail, TLS, a clean
`postfix check`, and a queue that drains."""

from __future__ import annotations

import json
import re
from typing import Any

from sendfleet.core import poolmap
from tests.infra.conftest import Expect, master_maxproc, master_overrides, postconf, transports_by_ip


def test_postfix_check_clean(host: Any, expect: Expect) -> None:
    res = host.run("postfix check")
    assert res.rc == 0 and not res.stderr.strip(), (
        f"{expect.name}: `postfix check` exited {res.rc} (expected 0 and no output): {res.stderr.strip()}"
    )


def test_transports_match_in_service_ips(host: Any, expect: Expect) -> None:
    """master.cf has a transport bound to each in-service sending IP and to no other address."""
    bound = transports_by_ip(host)
    wanted = {str(s.ip): s for s in expect.in_service}
    problems = [
        f"{ip} (pool {s.pool}, ptr {s.ptr}): no master.cf transport binds to it (expected one: it passes FCrDNS)"
        for ip, s in wanted.items()
        if ip not in bound
    ]
    for ip, service in bound.items():
        if ip in wanted:
            continue
        sip = next((s for s in expect.sending_ips if str(s.ip) == ip), None)
        why = (
            f"it fails the FCrDNS gate: {expect.gate[ip].detail}"
            if sip is not None
            else "it is not a sending IP of this host in the inventory"
        )
        problems.append(f"{ip}: transport {service} binds to it but it must not be in service: {why}")
    assert not problems, f"{expect.name}:\n  - " + "\n  - ".join(problems)


def test_transport_helo_names(host: Any, expect: Expect) -> None:
    """Each transport says HELO with its IP's PTR name (the inventory's helo, default the ptr)."""
    overrides = master_overrides(host)
    bound = transports_by_ip(host)
    problems = []
    for s in expect.in_service:
        service = bound.get(str(s.ip))
        if service is None:
            continue  # reported by test_transports_match_in_service_ips
        helo = next((o.get("smtp_helo_name") for k, o in overrides.items() if k.split("/")[0] == service), None)
        if helo != s.helo:
            problems.append(f"{s.ip}: transport {service} has smtp_helo_name={helo}, expected {s.helo}")
    assert not problems, f"{expect.name}: " + "; ".join(problems)


def test_a_transport_per_provider_class_holds_its_limits(host: Any, expect: Expect) -> None:
    """Each in-service IP has one transport per provider class (class other excepted): bound to the IP, HELO = its
    PTR, at most the class's connections (maxproc) and messages per connection, per destination at most the class's
    connections."""
    overrides = master_overrides(host)
    maxproc = master_maxproc(host)
    own = transports_by_ip(host)
    conf = postconf(host)
    # a throttle of the shaper in force lowers a path's connections per destination (the agent's local fact)
    fact = host.file("/etc/ansible/facts.d/sendfleet_monitor.fact")
    throttled = (json.loads(fact.content_string).get("throttled") or {}) if fact.exists else {}
    problems = []
    for s in expect.in_service:
        if str(s.ip) not in own:
            continue  # reported by test_transports_match_in_service_ips
        prefix = own[str(s.ip)].rsplit("_" + poolmap.slug(s.ip), 1)[0]
        for name, pclass in expect.inv.classes.items():
            if name == "other":
                continue
            t = poolmap.class_transport_name(s.ip, name, prefix)
            o = overrides.get(f"{t}/unix")
            if o is None:
                problems.append(f"{s.ip}: no transport {t} for class {name}")
                continue
            bind = o.get("smtp_bind_address6" if s.ip.version == 6 else "smtp_bind_address")
            checks = [("bind address", bind, str(s.ip)), ("smtp_helo_name", o.get("smtp_helo_name"), s.helo),
                      ("maxproc", maxproc.get(t), str(pclass.limits.connections)),
                      ("smtp_connection_reuse_count_limit", o.get("smtp_connection_reuse_count_limit"),
                       str(pclass.limits.messages_per_connection)),
                      ("destination_concurrency_limit", conf.get(f"{t}_destination_concurrency_limit"),
                       str(min(pclass.limits.connections, throttled.get(f"{s.ip} {name}", 10**6))))]
            problems += [f"{t}: {what} {got}, expected {want}" for what, got, want in checks if got != want]
    assert not problems, f"{expect.name}:\n  - " + "\n  - ".join(problems)


def test_the_shaper_is_asked_at_rcpt(host: Any, expect: Expect) -> None:
    """smtpd asks the shaper (policy service) at RCPT, right after the suppression lookup when the fleet has one
    (a suppressed recipient is refused before any IP is chosen), and the shaper answers on its port."""
    restrictions = postconf(host).get("smtpd_recipient_restrictions", "")
    policy = expect.var("postfix", "postfix_shaping_policy")
    lookup = "check_recipient_access proxy:pgsql:/etc/postfix/suppression.cf, "
    rest = restrictions.removeprefix(lookup)
    assert rest.startswith(f"check_policy_service {policy}"), (
        f"{expect.name}: smtpd_recipient_restrictions = {restrictions!r}, expected check_policy_service {policy} first"
        " (after the suppression lookup, if any)")
    assert host.service("sendfleet-shaper").is_running, f"{expect.name}: sendfleet-shaper is not running"
    port = policy.rsplit(":", 1)[-1]
    assert host.socket(f"tcp://127.0.0.1:{port}").is_listening, f"{expect.name}: nothing listens on {policy}"


_RANDMAP = re.compile(r"randmap:\{([^}]*)\}")


def _lookup_chain(host: Any, tables: list[str], key: str) -> tuple[str | None, str | None]:
    """Postfix's first-match over a list of lookup tables: (table, result)."""
    for table in tables:
        res = host.run("postmap -q %s %s", key, table)
        if res.rc == 0 and res.stdout.strip():
            return table, res.stdout.strip()
    return None, None


def _split_tables(value: str) -> list[str]:
    """`a, pipemap:{x, y}, b` -> ['a', 'pipemap:{x, y}', 'b'] (commas inside braces kept)."""
    out, depth, cur = [], 0, ""
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch in ", \t" and depth == 0:
            if cur:
                out.append(cur)
            cur = ""
            continue
        cur += ch
    if cur:
        out.append(cur)
    return out


#: Written on each sender by the DNSBL monitor (roles/dnsbl_monitor): the IPs it drained (listed on a blocklist).
MONITOR_FACT = "/etc/ansible/facts.d/sendfleet_monitor.fact"


def _drained(host: Any) -> set[str]:
    fact = host.file(MONITOR_FACT)
    if not fact.exists:
        return set()
    return {str(ip) for ip in json.loads(fact.content_string or "{}").get("drained", [])}


def test_pools_route_each_domain(host: Any, expect: Expect) -> None:
    """sender_dependent_default_transport_maps sends each sender domain to a random choice among exactly
    the in-service transports of its pool on this host (less the IPs the DNSBL monitor drained)."""
    value = postconf(host, "sender_dependent_default_transport_maps")["sender_dependent_default_transport_maps"]
    tables = _split_tables(value)
    bound = transports_by_ip(host)
    drained = _drained(host)
    problems = []
    for domain in expect.domains_here():
        wanted = {
            bound[str(s.ip)]
            for s in expect.in_service
            if s.pool == domain.pool and str(s.ip) in bound and str(s.ip) not in drained
        }
        table, result = _lookup_chain(host, tables, f"readiness@{domain.name}")
        if table is None:
            problems.append(f"{domain.name}: no pool map matches its senders (expected pool {domain.pool})")
            continue
        members = _RANDMAP.findall(table)
        chosen = {m.strip() for m in members[0].split(",")} if members else {str(result).split(":")[0]}
        if chosen != wanted:
            problems.append(
                f"{domain.name} (pool {domain.pool}) goes to {', '.join(sorted(chosen))}; expected "
                f"exactly {', '.join(sorted(wanted)) or 'none'}"
                + (f" (drained by the DNSBL monitor: {', '.join(sorted(drained))})" if drained else "")
            )
        if result not in wanted and str(result).split(":")[0] not in wanted:
            problems.append(f"{domain.name}: a lookup chose {result}, not a transport of pool {domain.pool}")
    assert not problems, f"{expect.name}: " + "; ".join(problems)


def test_main_settings(host: Any, expect: Expect) -> None:
    """Host name, relay networks, the DKIM milter with tempfail, TLS in both directions."""
    values = postconf(
        host,
        "myhostname",
        "mynetworks",
        "smtpd_milters",
        "non_smtpd_milters",
        "milter_default_action",
        "smtp_tls_security_level",
        "smtpd_tls_security_level",
        "smtp_tls_loglevel",
        "smtpd_tls_cert_file",
        "smtpd_tls_key_file",
        "smtp_bind_address",
        "smtp_helo_name",
        "smtpd_relay_restrictions",
    )
    want_tls = expect.var("postfix", "postfix_smtp_tls_security_level")
    checks = [
        ("myhostname", values["myhostname"] == expect.fqdn, expect.fqdn),
        ("milter_default_action", values["milter_default_action"] == "tempfail", "tempfail"),
        ("smtpd_milters", values["smtpd_milters"].startswith(("unix:", "local:")), "the OpenDKIM UNIX socket"),
        ("non_smtpd_milters", bool(values["non_smtpd_milters"]), "the milter too (locally submitted mail)"),
        ("smtp_tls_security_level", values["smtp_tls_security_level"] == want_tls, want_tls),
        ("smtpd_tls_security_level", values["smtpd_tls_security_level"] in ("may", "encrypt"), "may"),
        ("smtp_tls_loglevel", values["smtp_tls_loglevel"] not in ("", "0"), ">= 1"),
        ("smtp_bind_address", values["smtp_bind_address"] == "", "empty (each transport binds its own IP)"),
        ("smtpd_relay_restrictions", "reject_unauth_destination" in values["smtpd_relay_restrictions"],
         "ends in reject_unauth_destination (no open relay)"),
    ]
    problems = [f"{k} = {values[k]!r}, expected {want}" for k, ok, want in checks if not ok]
    nets = values["mynetworks"].replace(",", " ").split()
    for net in expect.app_networks:
        if net not in nets and f"[{net.split('/')[0]}]/{net.split('/')[1]}" not in nets:
            problems.append(f"mynetworks = {values['mynetworks']!r}, expected to contain app network {net}")
    for key in ("smtpd_tls_cert_file", "smtpd_tls_key_file"):
        if not values[key] or not host.file(values[key]).exists:
            problems.append(f"{key} = {values[key]!r}: file missing (expected a certificate/key for STARTTLS)")
    assert not problems, f"{expect.name}: " + "; ".join(problems)


def test_milter_socket(host: Any, expect: Expect) -> None:
    milter = postconf(host, "smtpd_milters")["smtpd_milters"].split(",")[0].strip()
    assert milter.startswith("unix:"), f"{expect.name}: smtpd_milters = {milter!r}, expected unix:<socket>"
    path = "/var/spool/postfix" + milter[len("unix:"):] if not milter[5:].startswith("/var/") else milter[5:]
    sock = host.file(path)
    assert sock.exists and sock.is_socket, f"{expect.name}: milter socket {path} missing (is opendkim running?)"
    groups = host.user("postfix").groups
    assert sock.group in groups or sock.mode & 0o006, (
        f"{expect.name}: postfix (groups {groups}) cannot reach {path} (group {sock.group}, mode {sock.mode:o})"
    )


def test_oldest_deferred_mail(host: Any, expect: Expect) -> None:
    """The queue drains: no deferred message older than infra_max_deferred_age (inventory, default 3600 s)."""
    limit = int(expect.host.vars.get("infra_max_deferred_age", 3600))
    now = int(host.check_output("date +%s"))
    old = []
    for line in host.check_output("postqueue -j").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        if item.get("queue_name") != "deferred":
            continue
        age = now - int(item.get("arrival_time", now))
        if age > limit:
            reasons = {r.get("delay_reason", "") for r in item.get("recipients", [])}
            old.append(f"{item.get('queue_id')} from {item.get('sender')} ({age} s): {'; '.join(sorted(reasons))}")
    assert not old, (
        f"{expect.name}: {len(old)} deferred message(s) older than {limit} s (infra_max_deferred_age):\n  - "
        + "\n  - ".join(old[:20])
    )
