"""`sendfleet lab up | down | status | ssh HOST | sink list|clear`: the local lab."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sendfleet.errors import EXIT_CANNOT_CHECK, EXIT_OK, EXIT_PROBLEMS, UsageError
from sendfleet.lab.config import DEFAULT_CACHE_DIR, DEFAULT_NETWORK, DEFAULT_NETWORK6, DEFAULT_STATE_DIR, LabConfig


def register(sub: Any) -> None:
    lab = sub.add_parser(
        "lab", help="the local lab: Debian hosts, DNS, blocklists and a sink MX",
        description="A lab on this machine (root, Linux): Debian 12 senders in network namespaces, an authoritative "
        "DNS server, blocklists, a resolver and a receiving MX, on 198.51.100.0/24 by default. See docs/lab.md.",
        epilog="example: sendfleet lab up --senders 3 && ansible-playbook site.yml && sendfleet lab down")
    verbs = lab.add_subparsers(dest="verb", metavar="VERB", parser_class=type(lab))
    verbs.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help=argparse.SUPPRESS)

    up = verbs.add_parser(
        "up", parents=[common], help="bring the lab up (a no-op when it is up)",
        description="Boot the lab and write its inventory (inventories/lab). Progress goes to stderr.",
        epilog="example: sendfleet lab up --senders 3")
    up.add_argument("--senders", type=int, default=3, help="number of sender hosts (default 3)")
    up.add_argument("--network", default=DEFAULT_NETWORK, help=f"lab IPv4 /24 (default {DEFAULT_NETWORK})")
    up.add_argument("--network6", default=DEFAULT_NETWORK6, help=f"lab IPv6 /64 (default {DEFAULT_NETWORK6})")
    up.add_argument("--bridge", default="sfl0", help="bridge name (default sfl0)")
    up.add_argument("--inventory", type=Path, default=Path("inventories/lab"),
                    help="where to write the lab inventory (default inventories/lab)")
    up.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help=argparse.SUPPRESS)
    up.set_defaults(func=_up)

    down = verbs.add_parser(
        "down", parents=[common], help="power off and remove everything the lab started",
        description="Power the hosts off and end exactly the processes the lab started; keeps the image cache.",
        epilog="example: sendfleet lab down")
    down.add_argument("--purge-inventory", action="store_true",
                      help="also remove the lab inventory (keys, vetted IPs, host_vars)")
    down.set_defaults(func=_down)

    st = verbs.add_parser(
        "status", parents=[common], help="each part of the lab and its health",
        description="Each part of the lab and its health. Exit 0 healthy, 1 a part is failing, 3 no lab is up.",
        epilog="example: sendfleet lab status --format json")
    st.add_argument("--format", choices=("table", "json"), default="table")
    st.set_defaults(func=_status)

    ssh = verbs.add_parser(
        "ssh", parents=[common], help="open a shell (or run a command) on a lab host",
        description="Open a shell on a lab host, or run a command there.",
        epilog="example: sendfleet lab ssh mta1 postqueue -p")
    ssh.add_argument("host")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    ssh.set_defaults(func=_ssh)

    sink = verbs.add_parser(
        "sink", parents=[common], help="what the sink MX received; how it answers",
        description="List or clear what the lab's receiving MX stored, or set the reply it gives for a domain.",
        epilog="example: sendfleet lab sink answer --domain gmail.test --reply '421 4.7.0 try later'")
    sink.add_argument("action", choices=("list", "clear", "answer"))
    sink.add_argument("--format", choices=("table", "json"), default="table")
    sink.add_argument("--domain", help="with 'answer': the recipient domain")
    sink.add_argument("--reply", help="with 'answer': e.g. '421 4.7.0 rate limited'; omit to accept again")
    sink.set_defaults(func=_sink)

    bl = verbs.add_parser(
        "blocklist", parents=[common], help="list or unlist an entry in the lab's rbldnsd",
        description="List or unlist an address, network or domain in one of the lab's blocklist zones.",
        epilog="example: sendfleet lab blocklist add 198.51.100.70 --reason 'spam trap hits'")
    bl.add_argument("action", choices=("add", "remove"))
    bl.add_argument("entry", help="address, CIDR or domain")
    bl.add_argument("--zone", default="zen.lab.test", help="zen.lab.test (default), l2.lab.test, dbl.lab.test")
    bl.add_argument("--code", default="127.0.0.2", help="answer for a listing (default 127.0.0.2)")
    bl.add_argument("--reason", default="listed by hand", help="TXT reason")
    bl.set_defaults(func=_blocklist)


def _log(msg: str) -> None:
    sys.stderr.write(f"lab: {msg}\n")


def _up(args: argparse.Namespace) -> int:
    from sendfleet.lab.lab import up

    cfg = LabConfig(network=args.network, network6=args.network6, senders=args.senders, bridge=args.bridge,
                    state_dir=args.state_dir, cache_dir=args.cache_dir, inventory_dir=args.inventory.resolve())
    up(cfg, _log)
    return EXIT_OK


def _down(args: argparse.Namespace) -> int:
    from sendfleet.lab.lab import down

    if not down(args.state_dir, _log, purge_inventory=args.purge_inventory):
        _log("no lab is up: nothing to do")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from sendfleet.lab.lab import status

    parts = status(args.state_dir)
    if parts is None:
        if args.format == "json":
            print(json.dumps({"up": False, "parts": []}))
        else:
            print("no lab is up (start one with 'sendfleet lab up')")
        return EXIT_CANNOT_CHECK
    healthy = all(p.healthy for p in parts)
    if args.format == "json":
        print(json.dumps({"up": True, "healthy": healthy, "parts": [p.__dict__ for p in parts]}, indent=2))
    else:
        table = Table(title="sendfleet lab")
        for col in ("part", "what", "health", "detail"):
            table.add_column(col)
        for p in parts:
            table.add_row(p.part, p.kind, "[green]ok[/]" if p.healthy else "[red]FAIL[/]", p.detail)
        Console().print(table)
    return EXIT_OK if healthy else EXIT_PROBLEMS


def _ssh(args: argparse.Namespace) -> int:
    from sendfleet.lab.hosts import ssh_command
    from sendfleet.lab.lab import lab_key, running_config

    cfg = running_config(args.state_dir)
    if cfg is None:
        raise UsageError("no lab is up: run 'sendfleet lab up' first")
    host = cfg.host(args.host)
    key = lab_key(cfg)
    cmd = ssh_command(cfg, host, key, *args.command)
    if sys.stdin.isatty() and not args.command:
        cmd.insert(1, "-t")
    os.execvp(cmd[0], cmd)
    return EXIT_OK  # not reached


def _sink(args: argparse.Namespace) -> int:
    from sendfleet.lab import sink

    if args.action == "answer":
        from sendfleet.lab.control import sink_recipient_action

        if not args.domain:
            raise UsageError("sink answer needs --domain")
        sink_recipient_action(args.domain, args.reply, args.state_dir)
        return EXIT_OK
    if args.action == "clear":
        print(f"removed {sink.clear(args.state_dir)} messages")
        return EXIT_OK
    messages = sink.read_messages(args.state_dir)
    if args.format == "json":
        rows = [{k: v for k, v in m.__dict__.items() if k != "raw"} for m in messages]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    table = Table(title=f"sink: {len(messages)} messages")
    for col in ("queue id", "client ip", "helo", "from", "to", "tls", "subject"):
        table.add_column(col)
    for m in messages:
        table.add_row(m.queue_id, m.client_ip, m.helo, m.mail_from, ", ".join(m.rcpt_to),
                      f"{m.tls_protocol} {m.tls_cipher}" if m.tls else "none", m.header("Subject") or "")
    Console().print(table)
    return EXIT_OK


def _blocklist(args: argparse.Namespace) -> int:
    from sendfleet.lab import control

    if args.action == "add":
        control.list_entry(args.zone, args.entry, args.code, args.reason, args.state_dir)
    elif not control.unlist_entry(args.zone, args.entry, args.state_dir):
        _log(f"{args.entry} was not listed in {args.zone}")
    return EXIT_OK
