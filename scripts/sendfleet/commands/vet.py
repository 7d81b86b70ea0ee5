"""`sendfleet vet`: vet purchased IPs and whole ranges against blocklists, fail closed, and admit only the
clean, well-neighboured ones into an inventory's pool.

    sendfleet vet TARGET... [--from-file F] --zones ZONES.yml|public|lab [--resolver ADDR[:PORT]]...
                  [--format table|json|csv] [--output F] [--timeout S]
                  [--max-addresses N] [--neighbourhood-threshold PCT] [--accept-neighbourhood]
                  [--admit INVENTORY --pool NAME] [--heatmap FILE.png|FILE.svg]... [--no-ptr] [--no-asn]

Where the pool lives: `group_vars/all/vetted_ips.yml` of the INVENTORY folder (or, for an INI file, a script or
a plugin config, of its `sendfleet_vars_dir`: see README.md), key `vetted_ips: {POOL: [{ip, vetted,
zones, resolver, ...}]}`. `sendfleet pool assign` then takes vetted, not-yet-assigned IPs of each pool and
writes them to a sender host's `host_vars/<host>.yml` `sending_ips`.

Exit codes: 0 every address clean and admitted (and every domain clean); 1 some address not clean or not
admitted; 2 bad input (one line, nothing written); 3 the scan was meaningless (nothing admitted).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from sendfleet import atomicfile, yamlfile
from sendfleet.commands.vet_render import ReportContext, Summary, render_csv, render_json, render_table
from sendfleet.core.admission import admit, check_pool_name, existing_vetted
from sendfleet.core.resolvers import Resolver, parse_resolver, public_resolver_warnings
from sendfleet.core.targets import DEFAULT_MAX_ADDRESSES, TargetSet, parse_targets, targets_from_lines
from sendfleet.core.verdicts import DEFAULT_NEIGHBOURHOOD_THRESHOLD, ZoneStatus
from sendfleet.core.vetbook import VetBook
from sendfleet.core.zones import ZonesConfig, parse_zones
from sendfleet.dns.scanner import DEADLINE
from sendfleet.dns.vetting import VetOptions, VetRun, run_vet, system_resolvers
from sendfleet.errors import EXIT_OK, EXIT_PROBLEMS, CannotCheckError, UsageError

ZONES_DIR = Path(__file__).resolve().parent.parent / "zones"
VETTED_FILE = Path("group_vars/all/vetted_ips.yml")
POOLS_FILE = Path("group_vars/all/pools.yml")
#: Show a progress bar (on a TTY) when a scan asks more questions than this.
PROGRESS_MIN_QUERIES = 5000


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "vet",
        help="vet IPs, ranges and sender domains against blocklists; admit clean IPs into a pool",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: sendfleet vet 198.51.100.0/24 --zones public --format json --output vet.json\n"
        "         grep -v '^#' ranges.txt | sendfleet vet - --zones public   # '-': targets from stdin",
    )
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help="address, CIDR, range A-B or domain name; '-' reads more from stdin, one or more a line")
    parser.add_argument("--from-file", type=Path, metavar="F", help="more targets, one or more per line, # comments")
    parser.add_argument(
        "--zones",
        required=True,
        metavar="ZONES.yml",
        help="zones file, or 'public' / 'lab' for the files shipped with sendfleet",
    )
    parser.add_argument(
        "--resolver",
        action="append",
        default=[],
        metavar="ADDR[:PORT]",
        help="resolver to ask (repeatable; IPv6 as [ADDR]:PORT); default: /etc/resolv.conf",
    )
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--output", type=Path, metavar="F", help="write the report here (atomically), not stdout")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEADLINE,
        metavar="S",
        help="deadline of each DNS question: a lost query is asked again (backing off as losses come) until an "
        f"answer or S seconds after its first try; unanswered by then, it counts as unknown ({DEADLINE:g})",
    )
    # gone: tries are no longer counted (see --timeout); named, so that old scripts get a clear error
    parser.add_argument("--retries", help=argparse.SUPPRESS)
    parser.add_argument(
        "--max-addresses",
        type=int,
        default=DEFAULT_MAX_ADDRESSES,
        metavar="N",
        help=f"refuse more target addresses than this ({DEFAULT_MAX_ADDRESSES})",
    )
    parser.add_argument(
        "--neighbourhood-threshold",
        default=str(DEFAULT_NEIGHBOURHOOD_THRESHOLD * 100),
        metavar="PCT",
        help="a clean address is not admitted when more than PCT %% of its /24 is listed (5)",
    )
    parser.add_argument(
        "--accept-neighbourhood",
        action="store_true",
        help="admit clean addresses of poor /24s anyway (said loudly in the report)",
    )
    parser.add_argument("--admit", type=Path, metavar="INVENTORY", help="add admitted addresses to a pool")
    parser.add_argument("--pool", metavar="NAME", help="the pool to admit into (with --admit)")
    parser.add_argument(
        "--heatmap",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="draw the /24s: PNG, or SVG when FILE ends in .svg (repeatable)",
    )
    parser.add_argument("--no-ptr", action="store_true", help="do not look up PTRs of the targets")
    parser.add_argument("--no-asn", action="store_true", help="do not look up the holder (ASN) of the targets")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="processes for the bulk IPv4 scan (default: 2 for scans of 32,768 queries or more, else 1)",
    )
    parser.set_defaults(func=run)


# --- input ---------------------------------------------------------------------------------------------


def load_zones(spec: str) -> tuple[ZonesConfig, str]:
    path = Path(spec)
    if not path.exists() and spec in {"public", "lab"}:
        path = ZONES_DIR / f"{spec}.yml"
    data = yamlfile.load(path)
    return parse_zones(data, str(path)), str(path)


def _threshold(text: str) -> float:
    raw = text.strip().removesuffix("%").strip()
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"--neighbourhood-threshold {text!r}: not a percentage") from None
    if not 0 <= value <= 100:
        raise UsageError(f"--neighbourhood-threshold {text!r}: must be between 0 and 100 (percent)")
    return value / 100


def _targets(args: argparse.Namespace) -> TargetSet:
    texts: list[str] = [t for t in args.targets if t != "-"]
    if "-" in args.targets:
        texts += targets_from_lines(sys.stdin.read().splitlines(), "stdin")
    if args.from_file is not None:
        try:
            lines = args.from_file.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise UsageError(f"--from-file {args.from_file}: {err.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"--from-file {args.from_file}: not UTF-8 text") from None
        texts += targets_from_lines(lines, str(args.from_file))
    if args.max_addresses < 1:
        raise UsageError("--max-addresses: must be at least 1")
    return parse_targets(texts, max_addresses=args.max_addresses)


def _resolvers(args: argparse.Namespace) -> list[Resolver]:
    if args.resolver:
        return list(dict.fromkeys(parse_resolver(r) for r in args.resolver))
    found = system_resolvers()
    if not found:
        raise UsageError("no --resolver given and /etc/resolv.conf names no nameserver")
    return found


def _check_output_path(path: Path, option: str) -> None:
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory")
    if not path.parent.is_dir():
        raise UsageError(f"{option} {path}: folder {path.parent} does not exist")


def _check_admission(args: argparse.Namespace) -> tuple[Path, Any] | None:
    if args.admit is None:
        if args.pool is not None:
            raise UsageError("--pool needs --admit INVENTORY")
        return None
    if args.pool is None:
        raise UsageError("--admit needs --pool NAME")
    check_pool_name(args.pool)
    if not args.admit.is_dir():  # an INI file, a script, a plugin config: the variables folder Ansible reads
        from sendfleet.inventory_io import admission_file

        vetted_path = admission_file(args.admit, args.pool)
    else:  # a folder is its own variables folder (it need not hold hosts yet)
        pools_path = args.admit / POOLS_FILE
        pools_data = yamlfile.load(pools_path, missing_ok=True)
        if isinstance(pools_data, dict) and isinstance(pools_data.get("pools"), dict):
            known = pools_data["pools"]
            if args.pool not in known:
                names = ", ".join(sorted(str(k) for k in known)) or "none"
                raise UsageError(f"--pool {args.pool}: not a pool of {pools_path} (known: {names})")
        vetted_path = args.admit / VETTED_FILE
    data = yamlfile.load(vetted_path, missing_ok=True)
    existing_vetted(data, str(vetted_path))  # refuse a malformed file before scanning
    return vetted_path, data


# --- output --------------------------------------------------------------------------------------------


def _emit(chunks: Iterable[str], output: Path | None) -> None:
    if output is None:
        for chunk in chunks:
            sys.stdout.write(chunk)
        sys.stdout.flush()
    else:
        yamlfile.write_atomic(output, "".join(chunks))


def _warn(message: str) -> None:
    sys.stderr.write(f"sendfleet: warning: {message}\n")


def _progress_bar(enabled: bool) -> tuple[Callable[[str, int, int], None] | None, Callable[[], None]]:
    if not enabled or not sys.stderr.isatty():
        return None, lambda: None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    tasks: dict[str, Any] = {}
    started = False

    def update(phase: str, done: int, total: int) -> None:
        nonlocal started
        if total < PROGRESS_MIN_QUERIES:
            return
        if not started:
            progress.start()
            started = True
        if phase not in tasks:
            tasks[phase] = progress.add_task(f"vet: {phase}", total=total)
        progress.update(tasks[phase], completed=done)

    def stop() -> None:
        if started:
            progress.stop()

    return update, stop


# --- the command ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    # Every input is checked before the first query and the first write.
    targets = _targets(args)
    config, zones_file = load_zones(args.zones)
    resolvers = _resolvers(args)
    threshold = _threshold(args.neighbourhood_threshold)
    if args.retries is not None:
        raise UsageError("--retries: no longer an option: a query is retried until its --timeout S deadline")
    if not 0 < args.timeout <= 300:
        raise UsageError("--timeout: the per-query deadline must be more than 0 and at most 300 seconds")
    if not 0 <= args.workers <= 16:
        raise UsageError("--workers: must be 0 (automatic) to 16")
    if args.output is not None:
        _check_output_path(args.output, "--output")
    for heatmap in args.heatmap:
        _check_output_path(heatmap, "--heatmap")
        if heatmap.suffix.lower() not in {".png", ".svg"}:
            raise UsageError(f"--heatmap {heatmap}: name it .png or .svg")
    admission_target = _check_admission(args)

    warnings = list(targets.warnings) + public_resolver_warnings(resolvers)
    if args.accept_neighbourhood:
        warnings.append("--accept-neighbourhood: clean addresses of POOR /24s WILL BE ADMITTED")
    for zone in config.zones:
        if not zone.enabled:
            warnings.append(f"zone {zone.name} is disabled in {zones_file}" + (f": {zone.note}" if zone.note else ""))
    for w in warnings:
        _warn(w)

    update, stop = _progress_bar(not args.no_progress)
    options = VetOptions(
        resolvers=resolvers,
        timeout=args.timeout,
        threshold=threshold,
        accept_neighbourhood=args.accept_neighbourhood,
        ptr=not args.no_ptr,
        asn=not args.no_asn,
        progress=update,
        workers=args.workers,
    )
    try:
        result: VetRun = run_vet(targets, config, options)
    except OSError as err:  # e.g. an IPv6 resolver on a host without IPv6
        raise CannotCheckError(f"cannot query {', '.join(str(r) for r in resolvers)}: {err.strerror or err}") from None
    finally:
        stop()
    book = result.book
    for h in result.health:
        if h.status is not ZoneStatus.OK:
            _warn(f"zone {h.zone} is {h.status.value}: {h.detail} (its answers count as unknown)")
            warnings.append(f"zone {h.zone} is {h.status.value}: {h.detail}")
    for h in book.health6.values():
        if h.status is not ZoneStatus.OK and book.health[h.zone].status is ZoneStatus.OK:
            message = f"zone {h.zone} is {h.status.value} for IPv6: {h.detail} (used for IPv4 only)"
            _warn(message)
            warnings.append(message)

    vetted_on = dt.datetime.now(dt.UTC).date()
    ctx = ReportContext(
        book=book,
        health=result.health,
        config=config,
        resolvers=[str(r) for r in resolvers],
        zones_file=zones_file,
        vetted=vetted_on.isoformat(),
        scan=result.scan,
        warnings=warnings,
    )
    summary = Summary()
    renderer = {"json": render_json, "csv": render_csv, "table": render_table}[args.format]
    _emit(renderer(ctx, summary), args.output)

    if args.heatmap:
        from sendfleet.commands.vet_heatmap import render_png, render_svg  # only when asked: start-up time
    for heatmap in args.heatmap:
        if heatmap.suffix.lower() == ".svg":
            yamlfile.write_atomic(heatmap, render_svg(book))
        else:
            atomicfile.write_atomic(heatmap, render_png(book))

    if admission_target is not None:
        _admit(admission_target, args.pool, book, ctx, vetted_on)

    return EXIT_OK if summary.all_good else EXIT_PROBLEMS


def _admit(target: tuple[Path, Any], pool: str, book: VetBook, ctx: ReportContext, vetted_on: dt.date) -> None:
    path, data = target
    zones = [z.name for z in book.v4_ok]
    zones6 = [z.name for z in book.v6_ok]
    resolver = ", ".join(ctx.resolvers)

    def entries() -> Iterable[CommentedMap]:
        for report in book.reports():
            if report.kind != "ip" or not report.admission.admitted:
                continue
            entry = CommentedMap()
            entry["ip"] = report.ip
            entry["vetted"] = dt.date.fromordinal(vetted_on.toordinal())  # a new object: no YAML anchors
            entry["zones"] = CommentedSeq(zones if ":" not in report.ip else zones6)
            entry["zones"].fa.set_flow_style()
            entry["resolver"] = resolver
            if report.network is not None:
                entry["neighbourhood"] = f"{report.network.cidr} {report.network.listed}/{report.network.total} listed"
            if report.admission.reason:
                entry["override"] = report.admission.reason
            if report.holder is not None and report.holder.origin is not None:
                entry["asn"] = report.holder.origin.asns[0]
            entry.fa.set_flow_style()
            yield entry

    if data is None:
        data = CommentedMap()
        data.yaml_set_start_comment(
            "Vetted sending IPs, per pool: written by `sendfleet vet --admit` (with evidence),\n"
            "never by hand. `sendfleet pool assign` gives vetted, not-yet-assigned IPs to sender\n"
            "hosts (host_vars/<host>.yml sending_ips)."
        )
    result = admit(data, pool, entries(), str(path), new_map=CommentedMap, new_list=CommentedSeq)
    if result.added:
        yamlfile.dump_atomic(path, data)
    sys.stderr.write(
        f"sendfleet: admitted {len(result.added)} address(es) into pool {pool} of {path}"
        + (f" ({len(result.already)} already there)" if result.already else "")
        + "\n"
    )
    for ip, other in result.elsewhere:
        _warn(f"{ip} is already vetted into pool {other}: not added to {pool}")
