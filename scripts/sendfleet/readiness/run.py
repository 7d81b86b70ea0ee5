"""Run readiness: rounds of tagged messages per (host, domain) until every IP of the pool has been seen at
the receiving side (or a cap is reached), then evidence and verdicts.

Why rounds: a pool picks one of its per-IP transports at random per message (Postfix `randmap`), so a
given IP cannot be aimed at from outside without changing the MTA's configuration (which would test
something else than what production runs). Two messages per IP per round, up to `cap_per_ip` per IP: with
3 IPs and a cap of 12, the chance that a working IP is never picked is below 1e-5.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sendfleet.core.readiness import (
    Report,
    Route,
    Submission,
    build_report,
    make_tag,
    messages_for_round,
    recipient_for,
)
from sendfleet.readiness.collect import Collector
from sendfleet.readiness.evidence import Collected, DnsView, gather
from sendfleet.readiness.submit import Outgoing, compose, submit

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    recipient: str  # template with {tag}
    source: str | None = None  # local address to submit from (one of the app networks)
    port: int = 25
    from_local: str = "readiness"
    wait: float = 90.0  # seconds to wait, per round, for the accepted messages to arrive
    cap_per_ip: int = 12
    rounds: int = 6
    poll: float = 1.0


def run(
    routes: Sequence[Route],
    collector: Collector,
    view: DnsView,
    options: Options,
    progress: Progress | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Report:
    say = progress or (lambda _msg: None)
    run_id = secrets.token_hex(4)
    serial = 0
    submissions: list[Submission] = []
    route_of_tag: dict[str, Route] = {}
    arrived: dict[str, Collected] = {}
    pending: set[str] = set()
    sent: dict[tuple[str, str], int] = {}
    active = {(r.host, r.domain) for r in routes}
    waited = 0.0

    def seen_ips(route: Route) -> set[str]:
        return {
            m.client_ip
            for t, m in arrived.items()
            if route_of_tag[t].host == route.host and route_of_tag[t].domain == route.domain
        }

    for round_no in range(1, options.rounds + 1):
        batch: list[tuple[Route, list[Outgoing]]] = []
        for route in routes:
            key = (route.host, route.domain)
            if key not in active:
                continue
            n = messages_for_round(route, seen_ips(route), sent.get(key, 0), options.cap_per_ip)
            if n == 0:
                active.discard(key)
                continue
            outgoing = []
            for _ in range(n):
                serial += 1
                tag = make_tag(run_id, serial)
                route_of_tag[tag] = route
                outgoing.append(
                    compose(tag, route.host, route.domain, options.from_local, recipient_for(options.recipient, tag))
                )
            batch.append((route, outgoing))
        if not batch:
            break
        round_tags: set[str] = set()
        for route, outgoing in batch:
            key = (route.host, route.domain)
            results = submit(route.address, options.port, outgoing, source=options.source)
            submissions += results
            sent[key] = sent.get(key, 0) + len(outgoing)
            accepted = {s.tag for s in results if s.accepted}
            if not accepted:
                active.discard(key)  # refused or unreachable: more messages would not tell more
            round_tags |= accepted
        pending |= round_tags
        say(
            f"round {round_no}: submitted {sum(len(o) for _, o in batch)} message(s) on {len(batch)} route(s), "
            f"{len(round_tags)} accepted; waiting for them at {collector.description}"
        )
        start = clock()
        while pending & round_tags and clock() - start < options.wait:
            sleep(options.poll)
            got = collector.collect(pending)
            arrived.update(got)
            pending -= set(got)
        waited = max(waited, clock() - start)
        for route, _ in batch:
            key = (route.host, route.domain)
            route_tags = {t for t in round_tags if route_of_tag[t].host == route.host
                          and route_of_tag[t].domain == route.domain}
            if route_tags and not (route_tags & set(arrived)):
                active.discard(key)  # nothing of this round arrived: waiting longer would not help
    if pending:  # a last look for late arrivals of earlier rounds
        got = collector.collect(pending)
        arrived.update(got)
        pending -= set(got)

    say(f"{len(arrived)} message(s) arrived; checking them through {view.where}")
    evidence = [
        gather(view, msg, route_of_tag[tag].host, route_of_tag[tag].domain) for tag, msg in sorted(arrived.items())
    ]
    return build_report(routes, submissions, evidence, waited=options.wait)
