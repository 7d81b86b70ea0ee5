"""Run the DNS side of `sendfleet vet`: zone health, the bulk blocklist scan (targets and their /24s),
listing reasons, PTRs and holders. Fills a pure `VetBook`; all verdicts are the core's.
"""

from __future__ import annotations

import asyncio
import ipaddress
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sendfleet.core.dnsnames import (
    QTYPE_A,
    QTYPE_PTR,
    QTYPE_TXT,
    question,
    question4,
    question_name,
    question_suffix,
    reverse_labels,
)
from sendfleet.core.holder import (
    AsnOrigin,
    PtrInfo,
    announced_covers,
    holder_warnings,
    parse_asname_txt,
    parse_origin_txt,
)
from sendfleet.core.ptrname import looks_generic
from sendfleet.core.resolvers import Resolver, resolv_conf_nameservers
from sendfleet.core.targets import TargetSet
from sendfleet.core.verdicts import (
    HEALTH_POINTS_DOMAIN,
    HEALTH_POINTS_V4,
    HEALTH_POINTS_V6,
    RCODE_NOERROR,
    RCODE_NXDOMAIN,
    RCODE_TIMEOUT,
    Outcome,
    Reply,
    ZoneHealth,
    ZoneStatus,
    rcode_name,
    zone_health,
)
from sendfleet.core.vetbook import Holder, VetBook
from sendfleet.core.zones import Kind, ZonesConfig
from sendfleet.dns.scanner import DEADLINE, BulkScanner, Query
from sendfleet.errors import CannotCheckError

#: Listing reasons asked (TXT) for at most this many listed (target, zone) pairs.
MAX_REASON_QUERIES = 20_000

Progress = Callable[[str, int, int], None]


def system_resolvers(path: Path = Path("/etc/resolv.conf")) -> list[Resolver]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return resolv_conf_nameservers(text)


@dataclass
class VetOptions:
    resolvers: Sequence[Resolver]
    timeout: float = DEADLINE  # per question: retried (paced by the loss seen) until then, else unknown
    threshold: float = 0.05
    accept_neighbourhood: bool = False
    ptr: bool = True
    asn: bool = True
    progress: Progress | None = None
    workers: int = 0  # processes for the bulk IPv4 scan; 0: 2 when it is big (>= 32,768 queries), else 1


@dataclass
class VetRun:
    book: VetBook
    health: list[ZoneHealth]
    scan: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def run_vet(targets: TargetSet, config: ZonesConfig, options: VetOptions) -> VetRun:
    """Zone health, then the bulk IPv4 scan (in worker processes when it is big), then the rest."""
    zones = config.enabled
    rates = [z.qps for z in zones]
    started = time.monotonic()
    scanner = BulkScanner(options.resolvers, deadline=options.timeout, rates=rates)
    book, health = asyncio.run(_health(scanner, targets, config, options))
    bases = list(targets.networks24())
    total = len(bases) * 256 * len(book.v4_ok)
    workers = options.workers if options.workers else (min(2, os.cpu_count() or 1) if total >= 32_768 else 1)
    workers = max(1, min(workers, len(bases)))
    if not total:
        main: dict[str, Any] = {"queries": 0, "seconds": 0.0}
    elif workers > 1:
        main = _parallel_v4(book, bases, options, rates, workers)
    else:
        main = asyncio.run(_scan_v4(scanner, book, bases, _reporter(options.progress, "blocklists", total)))
    if main["queries"] and main.get("timeouts", 0) >= main["queries"]:
        raise CannotCheckError("the resolver stopped answering: every blocklist query timed out")
    asyncio.run(_rest(scanner, book, targets, config, options))
    stats = scanner.stats.as_dict()
    for key in ("queries", "sent", "answers", "retries", "timeouts", "stray", "merged"):
        stats[key] += main.get(key, 0)
    stats["max_window"] = max(stats["max_window"], main.get("max_window", 0))
    stats["workers"] = workers
    stats["blocklist_queries"] = main["queries"]
    stats["blocklist_seconds"] = round(main["seconds"], 3)
    seconds = main["seconds"]
    stats["blocklist_queries_per_second"] = round(main["queries"] / seconds, 1) if seconds > 0 else 0.0
    stats["seconds"] = round(time.monotonic() - started, 3)  # every phase, wall clock
    stats["queries_per_second"] = round(stats["queries"] / stats["seconds"], 1) if stats["seconds"] > 0 else 0.0
    return VetRun(book, health, stats)


async def _health(
    scanner: BulkScanner, targets: TargetSet, config: ZonesConfig, options: VetOptions
) -> tuple[VetBook, list[ZoneHealth]]:
    zones = config.enabled

    # zone health (RFC 5782 §5): before anything else, so broken zones are never believed.
    health_replies: dict[tuple[int, str, bool], Reply] = {}

    def health_queries() -> Iterator[Query]:
        for zi, zone in enumerate(zones):
            families = [("domain", HEALTH_POINTS_DOMAIN)] if zone.kind is Kind.DOMAIN else [("ipv4", HEALTH_POINTS_V4)]
            if zone.kind is Kind.IP and zone.ipv6:
                families.append(("ipv6", HEALTH_POINTS_V6))
            for family, (pos, neg) in families:
                for point, positive in ((pos, True), (neg, False)):
                    if family == "domain":
                        name = f"{point}.{zone.name}"
                    else:
                        addr = ipaddress.ip_address(point)
                        name = f"{reverse_labels(addr.version, int(addr))}.{zone.name}"
                    yield question_name(name, QTYPE_A), zi, (zi, family, positive)

    def on_health(token: Any, reply: Reply) -> None:
        health_replies[token] = reply

    await scanner.run(health_queries(), on_health)
    health: list[ZoneHealth] = []
    health6: dict[str, ZoneHealth] = {}
    for zi, zone in enumerate(zones):
        families = sorted({f for (i, f, _) in health_replies if i == zi})
        checks = [(f, health_replies[(zi, f, True)], health_replies[(zi, f, False)]) for f in families]
        health.append(zone_health(zone, [c for c in checks if c[0] != "ipv6"]))
        if any(c[0] == "ipv6" for c in checks):
            health6[zone.name] = zone_health(zone, [c for c in checks if c[0] == "ipv6"])
    if all(r.rcode == RCODE_TIMEOUT for r in health_replies.values()):
        names = ", ".join(str(r) for r in options.resolvers)
        raise CannotCheckError(f"resolver {names} never answered ({len(health_replies)} queries timed out)")
    book = VetBook(
        targets,
        config,
        {h.zone: h for h in health},
        options.threshold,
        options.accept_neighbourhood,
        health6,
    )
    relevant: list[tuple[str, ZoneStatus]] = []
    if targets.ranges_of(4):
        relevant += [(z.name, book.health[z.name].status) for z in zones if z.kind is Kind.IP]
    if targets.ranges_of(6):
        relevant += [(f"{z.name} (IPv6)", book.status6(z)) for z in zones if z.kind is Kind.IP and z.ipv6]
    if targets.domains:
        relevant += [(z.name, book.health[z.name].status) for z in zones if z.kind is Kind.DOMAIN]
    if relevant and not any(status is ZoneStatus.OK for _, status in relevant):
        what = "; ".join(f"{name} {status.value}" for name, status in dict(relevant).items())
        raise CannotCheckError(f"no zone could be used, nothing vetted: {what}")
    return book, health


async def _scan_v4(
    scanner: BulkScanner, book: VetBook, bases: list[int], progress: Callable[[int], None] | None
) -> dict[str, Any]:
    """The bulk scan: every address of every /24 holding an IPv4 target, in each healthy zone.

    The answers go to one array of one-byte states, the /24s' blocks one after the other (a question's token is
    its index there): the scanner writes NXDOMAIN (clean) into it itself, the other answers go through the
    book's rules. The blocks are then the book's."""
    z4 = len(book.v4_ok)
    size = 256 * z4  # states of one /24
    group = {z.name: i for i, z in enumerate(book.config.enabled)}
    suffixes = [question_suffix(z.name) for z in book.v4_ok]
    groups4 = [group[z.name] for z in book.v4_ok]
    states = bytearray(len(bases) * size)
    record4 = book.record4
    blocks = book.blocks

    # question4(base + host, suffix) == heads[host] + question4(base, suffix)[len(heads[0]):]: the host's label,
    # then the /24's labels and the zone; built once per /24 and zone, one concatenation per question.
    heads = [question4(host, b"")[:-6] for host in range(256)]  # less the labels "0.0.0" of 0.0.0.host
    skip = len(heads[0])

    def v4_queries() -> Iterator[Query]:
        zones = list(enumerate(groups4))
        token = 0
        for base in bases:
            tails = [question4(base, suffix)[skip:] for suffix in suffixes]
            for head in heads:
                for zi, group in zones:
                    yield head + tails[zi], group, token + zi
                token += z4

    def on_v4(token: Any, reply: Reply) -> None:
        bi, slot = divmod(token, size)
        base = bases[bi]
        record4(base + slot // z4, slot % z4, reply)
        states[token] = blocks[base][slot]

    before = dict(scanner.stats.as_dict())
    elapsed = scanner.stats.elapsed
    await scanner.run(v4_queries(), on_v4, progress, nxdomain=(states, int(Outcome.CLEAN)))
    for bi, base in enumerate(bases):
        blocks[base] = states[bi * size : (bi + 1) * size]
    after = scanner.stats.as_dict()
    out: dict[str, Any] = {k: after[k] - before[k] for k in ("queries", "sent", "answers", "retries", "timeouts")}
    out["seconds"] = scanner.stats.elapsed - elapsed
    # counted here, not in the caller's totals
    for key in ("queries", "sent", "answers", "retries", "timeouts"):
        setattr(scanner.stats, key, getattr(scanner.stats, key) - out[key])
    out["max_window"] = scanner.stats.max_window
    return out


# -- the bulk scan in worker processes ------------------------------------------------------------------

_WORK: dict[str, Any] = {}


def _parallel_v4(
    book: VetBook, bases: list[int], options: VetOptions, rates: list[float | None], workers: int
) -> dict[str, Any]:
    """Split the /24s over `workers` forked processes, each with its own scanner and sockets (per-zone rate
    limits divided among them), and merge their one-byte states and details into the book."""
    chunks = [bases[i * len(bases) // workers : (i + 1) * len(bases) // workers] for i in range(workers)]
    ctx = multiprocessing.get_context("fork")
    counters = ctx.Array("q", workers, lock=False)
    _WORK.update(book=book, chunks=chunks, options=options, rates=[r / workers if r else r for r in rates])
    _WORK["counters"] = counters
    total = len(bases) * 256 * len(book.v4_ok)
    start = time.monotonic()
    try:
        with ctx.Pool(workers) as pool:
            pending = pool.map_async(_v4_worker, range(workers))
            while not pending.ready():
                if options.progress is not None:
                    options.progress("blocklists", sum(counters), total)
                pending.wait(0.1)
            results = pending.get()
    finally:
        _WORK.clear()
    seconds = time.monotonic() - start
    merged: dict[str, Any] = {"queries": 0, "sent": 0, "answers": 0, "retries": 0, "timeouts": 0, "max_window": 0}
    for blocks, details, stats in results:
        for base, states in blocks.items():
            book.blocks[base] = bytearray(states)
        book.details.update(details)
        for key in ("queries", "sent", "answers", "retries", "timeouts"):
            merged[key] += stats[key]
        merged["max_window"] = max(merged["max_window"], stats["max_window"])
    merged["seconds"] = seconds
    if options.progress is not None:
        options.progress("blocklists", total, total)
    return merged


def _v4_worker(index: int) -> tuple[dict[int, bytes], dict[Any, Any], dict[str, Any]]:
    book: VetBook = _WORK["book"]
    options: VetOptions = _WORK["options"]
    counters = _WORK["counters"]
    scanner = BulkScanner(options.resolvers, deadline=options.timeout, rates=_WORK["rates"])

    def progress(done: int) -> None:
        counters[index] = done

    stats = asyncio.run(_scan_v4(scanner, book, _WORK["chunks"][index], progress))
    blocks = {base: bytes(book.blocks[base]) for base in _WORK["chunks"][index]}
    return blocks, dict(book.details), stats


async def _rest(
    scanner: BulkScanner, book: VetBook, targets: TargetSet, config: ZonesConfig, options: VetOptions
) -> None:
    zones = config.enabled
    group = {z.name: i for i, z in enumerate(zones)}
    progress = options.progress

    if targets.ranges_of(6) and book.v6_ok:
        suffixes6 = [question_suffix(z.name) for z in book.v6_ok]

        def v6_queries() -> Iterator[Query]:
            for value in targets.values(6):
                for zi, zone in enumerate(book.v6_ok):
                    yield question(6, value, suffixes6[zi]), group[zone.name], (value, zi)

        await scanner.run(v6_queries(), lambda t, r: book.record6(t[0], t[1], r))

    if targets.domains and book.dom_ok:

        def domain_queries() -> Iterator[Query]:
            for domain in targets.domains:
                for zi, zone in enumerate(book.dom_ok):
                    yield question_name(f"{domain}.{zone.name}", QTYPE_A), group[zone.name], (domain, zi)

        await scanner.run(domain_queries(), lambda t, r: book.record_domain(t[0], t[1], r))

    # 3. why the targets are listed (TXT), when the zone says.
    listed = list(book.listed_targets())[:MAX_REASON_QUERIES]
    if listed:

        def reason_queries() -> Iterator[Query]:
            for family, value, zi, zone in listed:
                if family == 0:
                    name = f"{value}.{zone.name}"
                else:
                    assert isinstance(value, int)
                    name = f"{reverse_labels(family, value)}.{zone.name}"
                yield question_name(name, QTYPE_TXT), group[zone.name], (family, value, zi)

        def on_reason(token: Any, reply: Reply) -> None:
            if reply.rcode == RCODE_NOERROR and reply.records:
                book.add_reason(token[0], token[1], token[2], " ".join(reply.records))

        await scanner.run(reason_queries(), on_reason)

    # 4. PTR of every target address.
    if options.ptr and targets.ranges:

        def ptr_queries() -> Iterator[Query]:
            for r in targets.ranges:
                for value in range(r.first, r.last + 1):
                    zone = "in-addr.arpa" if r.version == 4 else "ip6.arpa"
                    yield (
                        question_name(f"{reverse_labels(r.version, value)}.{zone}", QTYPE_PTR),
                        -1,
                        (r.version, value),
                    )

        def on_ptr(token: Any, reply: Reply) -> None:
            version, value = token
            book.ptrs[token] = _ptr_info(version, value, reply)

        await scanner.run(ptr_queries(), on_ptr, _reporter(progress, "PTR", targets.address_count))

    # 5. the holder: ASN, name and announced prefix (Team-Cymru style), once per /24 if the prefix covers it.
    if options.asn and config.asn is not None and targets.ranges:
        await _holders(scanner, book, targets, config)


def _reporter(progress: Progress | None, phase: str, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None

    def report(done: int) -> None:
        progress(phase, done, total)

    return report


def _ptr_info(version: int, value: int, reply: Reply) -> PtrInfo:
    if reply.rcode == RCODE_NXDOMAIN or (reply.rcode == RCODE_NOERROR and not reply.records):
        return PtrInfo(False)
    if reply.rcode == RCODE_NOERROR:
        name = sorted(reply.records)[0]
        address = str(ipaddress.IPv4Address(value)) if version == 4 else str(ipaddress.IPv6Address(value))
        return PtrInfo(True, name, looks_generic(name, address))
    return PtrInfo(False, detail=f"PTR lookup failed: {rcode_name(reply.rcode)}")


async def _holders(scanner: BulkScanner, book: VetBook, targets: TargetSet, config: ZonesConfig) -> None:
    asn = config.asn
    assert asn is not None
    origins: dict[tuple[int, int], AsnOrigin | None] = {}
    failures: dict[tuple[int, int], str] = {}

    def on_origin(token: Any, reply: Reply) -> None:
        if reply.rcode == RCODE_NOERROR and reply.records:
            origins[token] = parse_origin_txt(reply.records)
            if origins[token] is None:
                failures[token] = "unparsable origin answer"
        else:
            origins[token] = None
            failures[token] = f"no origin answer ({rcode_name(reply.rcode)})"

    def origin_query(version: int, value: int) -> Query | None:
        zone = asn.origin if version == 4 else asn.origin6
        if zone is None:
            return None
        return question_name(f"{reverse_labels(version, value)}.{zone}", QTYPE_TXT), -1, (version, value)

    # first round: one representative per /24 (its first target), every IPv6 target
    firsts: dict[int, int] = {}
    for base in targets.networks24():
        firsts[base] = next(targets.targets_in24(base))

    def round_one() -> Iterator[Query]:
        for value in firsts.values():
            q = origin_query(4, value)
            if q is not None:
                yield q
        for value in targets.values(6):
            q = origin_query(6, value)
            if q is not None:
                yield q

    await scanner.run(round_one(), on_origin)
    # second round: the other targets of a /24 whose announced prefix is smaller than the /24
    partial = [b for b, v in firsts.items() if (o := origins.get((4, v))) is not None and not announced_covers(o, b)]

    def round_two() -> Iterator[Query]:
        for base in partial:
            for value in targets.targets_in24(base):
                if (4, value) not in origins:
                    q = origin_query(4, value)
                    if q is not None:
                        yield q

    if partial:
        await scanner.run(round_two(), on_origin)

    names: dict[int, str | None] = {}
    numbers = sorted({o.asns[0] for o in origins.values() if o is not None})
    if asn.names and numbers:

        def name_queries() -> Iterator[Query]:
            for number in numbers:
                yield question_name(f"AS{number}.{asn.names}", QTYPE_TXT), -1, number

        def on_name(token: Any, reply: Reply) -> None:
            names[token] = parse_asname_txt(reply.records) if reply.rcode == RCODE_NOERROR else None

        await scanner.run(name_queries(), on_name)

    def holder(key: tuple[int, int]) -> Holder:
        origin = origins.get(key)
        if origin is None:
            return Holder(None, detail=failures.get(key, "no origin zone for this address family"))
        name = names.get(origin.asns[0])
        warnings = holder_warnings(
            origin,
            name,
            cloud_asns=asn.cloud_asns,
            small_prefix=asn.small_prefix,
            small_prefix6=asn.small_prefix6,
        )
        return Holder(origin, name, None, tuple(warnings))

    for base, value in firsts.items():
        if base in partial:
            for v in targets.targets_in24(base):
                book.holders[(4, v)] = holder((4, v))
        else:
            book.holders24[base] = holder((4, value))
    for value in targets.values(6):
        book.holders[(6, value)] = holder((6, value))
