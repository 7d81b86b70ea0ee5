"""`python -m sendfleet.feedback [--config FILE] [--database CONNINFO] VERB ...` on the feedback host.

Verbs: `schema`; `process --recipient R --sender S` (Postfix pipe: message on stdin, exit 0 or 75);
`suppression list|add|remove|import|export|check`; `report feedback|dmarc --days N`; `metrics`. With
`--format json` every verb but `process` and `suppression export` prints one JSON document (what the controller's
CLI reads over SSH). Exit codes: 0 ok, 2 bad input (one line, nothing written), 3 database unreachable (`process`:
75, EX_TEMPFAIL).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from sendfleet.errors import EXIT_OK, EXIT_USAGE, SendfleetError, UsageError
from sendfleet.feedback import config as feedback_config

PROG = "python -m sendfleet.feedback"
MAX_IMPORT_BYTES = 64 * 1024 * 1024


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # --config and --database go before or after the verb (Postfix's pipe and the role put them after)
    common = _Parser(add_help=False)
    for target, default in ((parser, None), (common, argparse.SUPPRESS)):
        target.add_argument("--config", type=Path, default=default or feedback_config.DEFAULT_PATH,
                            help=f"configuration file (default {feedback_config.DEFAULT_PATH})")
        target.add_argument("--database", default=default, help="libpq conninfo, instead of the configuration's")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    sub.required = True
    sub_add = sub.add_parser

    def add(subs: Any, name: str, **kw: Any) -> argparse.ArgumentParser:
        return subs.add_parser(name, parents=[common], **kw)  # type: ignore[no-any-return]

    def fmt(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", choices=("table", "json"), default="table")

    fmt(add(sub, "schema", help="create or migrate the tables (idempotent)"))
    p = add(sub, "process", help="store one message from stdin (the Postfix pipe)")
    p.add_argument("--recipient", required=True, help="envelope recipient")
    p.add_argument("--sender", default="", help="envelope sender")
    p.add_argument("--mx-timeout", type=float, default=feedback_config.DEFAULT_MX_TIMEOUT,
                   help=f"seconds for an MX lookup (default {feedback_config.DEFAULT_MX_TIMEOUT:g})")
    sp = sub_add("suppression", help="the suppression list").add_subparsers(
        dest="action", metavar="ACTION", parser_class=_Parser)
    sp.required = True
    p = add(sp, "list", help="active entries (--all: expired ones too)")
    p.add_argument("--all", action="store_true")
    fmt(p)
    p = add(sp, "add", help="suppress an address (reason manual, source operator)")
    p.add_argument("address")
    p.add_argument("--detail", default="")
    p.add_argument("--expires-days", type=int, help="expire after N days (default never)")
    p.add_argument("--source", default="operator")
    fmt(p)
    p = add(sp, "remove", help="remove an address")
    p.add_argument("address")
    fmt(p)
    p = add(sp, "import", help="add the entries of a CSV or JSON list on stdin, in one transaction")
    p.add_argument("--input-format", choices=("csv", "json"), default="csv")
    p.add_argument("--name", default="stdin", help="the file's name, for the source `import:<name>`")
    p.add_argument("--skip-bad", action="store_true", help="import the good rows even if some are bad")
    p.add_argument("--replace", action="store_true", help="replace entries of addresses already suppressed")
    fmt(p)
    p = add(sp, "export", help="every active entry (--all: expired ones too) as CSV or JSON")
    p.add_argument("--output-format", choices=("csv", "json"), default="csv")
    p.add_argument("--all", action="store_true")
    p = add(sp, "check", help="the senders' map reply for an address (by the lookup query itself)")
    p.add_argument("address")
    fmt(p)
    rp = add(sub, "report", help="feedback events or DMARC aggregates over the last N days")
    rp.add_argument("what", choices=("feedback", "dmarc"))
    rp.add_argument("--days", type=int, default=7, help="window in days (default 7)")
    fmt(rp)
    fmt(add(sub, "metrics", help="rewrite the metrics textfile and print it"))
    return parser


def _out(stdout: IO[str], args: argparse.Namespace, data: Any, table: str) -> None:
    stdout.write(json.dumps(data, indent=2, default=str) + "\n" if args.format == "json" else table + "\n")


def _run(args: argparse.Namespace, stdin: IO[bytes], stdout: IO[str], stderr: IO[str]) -> int:
    # imported where needed: `process` runs once per message (Postfix's pipe), its start-up is its cost
    from sendfleet.feedback import processor, store

    cfg = feedback_config.load(args.config, database=args.database)
    if args.verb == "process":
        code, _ = processor.process(cfg, stdin, args.recipient, args.sender,
                                    classifier=processor.MxClassifier(cfg.classes, timeout=args.mx_timeout),
                                    err=stderr)
        return code
    now = datetime.now(UTC)
    with store.connect(cfg.database) as conn:
        if args.verb == "schema":
            version = store.migrate(conn)
            _out(stdout, args, {"schema_version": version}, f"schema at version {version}")
        elif args.verb == "metrics":
            path, text = processor.write_metrics(cfg, conn)
            _out(stdout, args, {"file": str(path) if path else None, "text": text}, text.rstrip("\n"))
        elif args.verb == "report":
            if not 1 <= args.days <= 366:
                raise UsageError(f"--days {args.days}: expected 1..366")
            since = store.since_days(args.days, now)
            if args.what == "feedback":
                rows = store.feedback_counts(conn, since)
                data: Any = {"days": args.days, "since": since.isoformat(), "rows": rows,
                             "sender_domains": sorted(cfg.sender_domains), "fleet_ips": sorted(cfg.fleet_ips)}
            else:
                rows = store.dmarc_summary(conn, since)
                for r in rows:
                    r["in_fleet"] = r["source_ip"] in cfg.fleet_ips
                data = {"days": args.days, "since": since.isoformat(), "rows": rows,
                        "tlsrpt": store.tlsrpt_summary(conn, since), "fleet_ips": sorted(cfg.fleet_ips)}
            _out(stdout, args, data, "\n".join(json.dumps(r, default=str) for r in rows) or "nothing in the window")
        elif args.action == "check":
            reply = store.check(conn, args.address)
            _out(stdout, args, {"address": args.address, "reply": reply}, reply or "not suppressed")
        elif args.action in ("list", "export"):
            from sendfleet.feedback import transfer

            entries = store.entries(conn, include_expired=args.all)
            if args.action == "export":
                stdout.write(transfer.to_csv(entries) if args.output_format == "csv" else transfer.to_json(entries))
            else:
                rows = [store.entry_dict(e) for e in entries]
                _out(stdout, args, rows, "\n".join(f"{r['address']}\t{r['reason']}\t{r['created']}\t{r['source']}"
                                                    for r in rows)
                     or "no entry")
        elif args.action == "add":
            from sendfleet.core import suppression

            if args.expires_days is not None and args.expires_days < 1:
                raise UsageError(f"--expires-days {args.expires_days}: expected at least 1")
            expires = now + timedelta(days=args.expires_days) if args.expires_days else None
            try:
                entry = suppression.manual_entry(args.address, now, source=args.source, expires=expires,
                                                 detail=args.detail)
            except suppression.PolicyError as err:
                raise UsageError(str(err)) from None
            store.import_entries(conn, [entry], force=True)
            added = store.entry_dict(entry) | {"address": suppression.address_key(entry.address)}
            _out(stdout, args, {"added": added}, f"{added['address']} suppressed (manual)")
        elif args.action == "remove":
            removed = store.remove(conn, args.address)
            _out(stdout, args, {"address": args.address, "removed": removed},
                 f"{args.address} removed" if removed else f"{args.address} was not suppressed")
            return EXIT_OK if removed else 1
        elif args.action == "import":
            raw = stdin.read(MAX_IMPORT_BYTES + 1)
            if len(raw) > MAX_IMPORT_BYTES:
                raise UsageError(f"import larger than {MAX_IMPORT_BYTES} bytes")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UsageError(f"{args.name}: not UTF-8 (byte {err.start})") from None
            from sendfleet.feedback import transfer

            entries, bad = transfer.parse(text, args.input_format, source=f"import:{args.name}", now=now)
            if bad and not args.skip_bad:
                for line in bad:
                    stderr.write(f"{PROG}: {args.name}: {line}\n")
                raise UsageError(f"{args.name}: {len(bad)} bad row(s), nothing imported (--skip-bad imports the rest)")
            n = store.import_entries(conn, entries, force=args.replace)
            _out(stdout, args, {"imported": n, "skipped": bad}, f"{n} entries imported, {len(bad)} bad rows skipped")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, stdin: IO[bytes] | None = None, stdout: IO[str] | None = None,
         stderr: IO[str] | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    words = list(sys.argv[1:] if argv is None else argv)
    verb = None
    try:
        args = build_parser().parse_args(words)
        verb = args.verb
        return _run(args, stdin or sys.stdin.buffer, out, err)
    except SendfleetError as e:
        err.write(f"{PROG}: {e}\n")
        # a message the processor cannot take now (configuration, database) stays in Postfix's queue
        return processor_tempfail() if verb == "process" else e.exit_code
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else EXIT_USAGE


def processor_tempfail() -> int:
    from sendfleet.feedback.processor import EX_TEMPFAIL

    return EX_TEMPFAIL


def run_captured(argv: Sequence[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """Run a verb in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdin=io.BytesIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


if __name__ == "__main__":
    raise SystemExit(main())
