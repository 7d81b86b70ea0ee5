"""Benchmark of the shaper's log pipeline: CPU time per 100,000 Postfix log lines.

The pipeline, as the shaper runs it on every line: read the line (sendfleet.monitor.follow.Follower, the
agent's one reader of a log file, not following) -> maillog.parse_file_line -> maillog.parse_reply -> for a
deferral or bounce, shaping.match_rule over the rules of the reply's class then of class `other` (the shipped
provider classes, sendfleet/data/provider_classes.yml), as Shaper.on_reply does.

The log is synthetic but shaped like a sender's: --lines lines (default 100,000), 70 % `status=sent` lines of
several transports (per-IP and per-(IP, class), IPv4 and IPv6), 20 % deferrals with providers' real replies
(Gmail's multi-line 421 4.7.28, Yahoo's TSS04, Outlook's S3150 and 4.7.650, greylisting, timeouts, refused
connections) and 10 % lines of other services (qmgr, cleanup, smtpd, opendkim). Written once to a temporary
file; every run reads the same file.

In each run, one after the other on the same file (so the machine's load weighs on all alike):
- reference: the file read line by line with no parsing (a Python `for line in file` loop);
- `grep -c status=` over it (CPU of the child process);
- the Follower alone (read + parse_file_line);
- the pipeline without rule matching (read + parse_file_line + parse_reply);
- the whole pipeline (+ match_rule).
CPU = user + system time of this process (resource.getrusage), median of --runs runs (at least 5).

    .venv/bin/python bench/shaper_bench.py --runs 7 --write-results
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from sendfleet.core import maillog, poolmap, shaping  # noqa: E402
from sendfleet.monitor.follow import Follower  # noqa: E402

RESULTS = REPO / "bench" / "RESULTS.md"
TARGET = 2.0  # s of CPU per 100,000 lines
SEED = 2026
IPS = ["198.51.100.70", "198.51.100.71", "198.51.100.72", "198.51.100.73", "2001:db8:5f::48"]
# class -> (recipient domain, MX host) of the sent lines
PROVIDERS = {
    "gmail": ("gmail.com", "gmail-smtp-in.l.google.com[142.250.102.27]"),
    "yahoo": ("yahoo.com", "mta6.am0.yahoodns.net[67.195.204.77]"),
    "outlook": ("outlook.com", "outlook-com.olc.protection.outlook.com[52.101.42.9]"),
    "other": ("example.org", "mx.example.org[198.51.100.201]"),
}
GMAIL_421 = (
    "421-4.7.28 [{ip}      15] Our system has detected an unusual rate of 421-4.7.28 unsolicited mail "
    "originating from your IP address. To protect our 421-4.7.28 users from spam, mail sent from your IP "
    "address has been temporarily 421-4.7.28 rate limited. Please visit 421-4.7.28  "
    "https://support.google.com/mail/?p=UnsolicitedRateLimitError to 421 4.7.28 review our Bulk Email "
    "Senders Guidelines. d2e1a72fcca58-70b{n:x}- gsmtp"
)
# (class, dsn, status, reason) of the deferrals; {ip}, {mx}, {n} filled in
DEFERRALS = [
    ("gmail", "4.7.28", "deferred", "host {mx} said: " + GMAIL_421 + " (in reply to RCPT TO command)"),
    ("gmail", "4.7.0", "deferred", "host {mx} said: 421-4.7.0 Try again later, closing connection. (EHLO) "
     "421 4.7.0  For more information, go to 421 4.7.0  https://support.google.com/a/answer/3221692 "
     "a640c23a{n:x}- gsmtp (in reply to EHLO command)"),
    ("yahoo", "4.7.0", "deferred", "host {mx} said: 421 4.7.0 [TSS04] Messages from {ip} temporarily deferred "
     "due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes "
     "(in reply to MAIL FROM command)"),
    ("outlook", "4.7.650", "deferred", "host {mx} said: 451 4.7.650 The mail server [{ip}] has been temporarily "
     "rate limited due to IP reputation. For e-mail delivery information, see https://aka.ms/postmaster "
     "(S775) [Name=Protocol Filter Agent][AGT=PFA][MxId=11B{n:X}] [DB1PEPF000509F{n:X}.eurprd03.prod.outlook.com "
     "2026-12-02T20:30:01.000Z 08DD1{n:X}] (in reply to MAIL FROM command)"),
    ("outlook", "5.7.1", "bounced", "host {mx} said: 550 5.7.1 Unfortunately, messages from [{ip}] weren't "
     "sent. Please contact your Internet service provider since part of their network is on our block list "
     "(S3150). You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors. "
     "[AM4PEPF00027A6C.eurprd04.prod.outlook.com 2026-12-02T20:30:01.000Z 08DC{n:X}] (in reply to MAIL FROM "
     "command)"),
    ("other", "4.2.0", "deferred", "host {mx} said: 450 4.2.0 <{rcpt}>: Recipient address rejected: "
     "Greylisted, see http://postgrey.schweikert.ch/help/example.org.html (in reply to RCPT TO command)"),
    ("other", "4.4.1", "deferred", "connect to {mx}:25: Connection timed out"),
    ("other", "4.4.1", "deferred", "connect to {mx}:25: Connection refused"),
    ("other", "4.4.2", "deferred", "conversation with {mx} timed out while receiving the initial server greeting"),
]
OTHER_SERVICES = [
    ("postfix/qmgr", "{qid}: from=<news@mail.example.net>, size={size}, nrcpt=1 (queue active)"),
    ("postfix/qmgr", "{qid}: removed"),
    ("postfix/cleanup", "{qid}: message-id=<{n}.{size}@mail.example.net>"),
    ("postfix/smtpd", "connect from app1.example.net[10.0.0.{b}]"),
    ("postfix/smtpd", "{qid}: client=app1.example.net[10.0.0.{b}], sasl_method=PLAIN, sasl_username=app"),
    ("postfix/smtpd", "disconnect from app1.example.net[10.0.0.{b}] ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 "
     "data=1 quit=1 commands=8"),
    ("opendkim", "{qid}: DKIM-Signature field added (s=s2026, d=mail.example.net)"),
]


def transport(rng: random.Random, klass: str) -> str:
    return poolmap.class_transport_name(rng.choice(IPS), klass)


def qid(rng: random.Random) -> str:
    return "4" + "".join(rng.choice("BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz0123456789") for _ in range(10))


def write_log(path: Path, lines: int) -> dict[str, int]:
    """The synthetic log; returns how many lines of each kind it has."""
    rng = random.Random(SEED)
    start = datetime(2026, 12, 2, 20, 0, 0, tzinfo=UTC).timestamp()
    kinds = {"sent": 0, "deferred": 0, "other": 0}
    classes = list(PROVIDERS)
    with open(path, "w", encoding="utf-8") as out:
        for n in range(lines):
            stamp = datetime.fromtimestamp(start + n * 0.05, UTC).strftime("%b %e %H:%M:%S")
            pid = 800 + n % 97
            roll = rng.random()
            if roll < 0.70:
                klass = rng.choice(classes)
                domain, mx = PROVIDERS[klass]
                ident = f"postfix/{transport(rng, klass)}/smtp"
                msg = (f"{qid(rng)}: to=<user{n}@{domain}>, relay={mx}:25, delay=0.{n % 90 + 10}, "
                       f"delays=0.05/0.01/0.1/0.{n % 9}, dsn=2.0.0, status=sent (250 2.0.0 OK  {1764700000 + n} "
                       f"{n:x}a640c23a- gsmtp)")
                kinds["sent"] += 1
            elif roll < 0.90:
                klass, dsn, status, reason = rng.choice(DEFERRALS)
                domain, mx = PROVIDERS[klass]
                ip = rng.choice(IPS)
                rcpt = f"user{n}@{domain}"
                relay = "none" if "connect to" in reason or "conversation" in reason else f"{mx}:25"
                ident = f"postfix/{poolmap.class_transport_name(ip, klass)}/smtp"
                msg = (f"{qid(rng)}: to=<{rcpt}>, relay={relay}, delay={n % 300}, delays=1/0.01/0.5/0, dsn={dsn}, "
                       f"status={status} ({reason.format(ip=ip, mx=mx, n=n, rcpt=rcpt)})")
                kinds["deferred"] += 1
            else:
                ident, text = rng.choice(OTHER_SERVICES)
                msg = text.format(qid=qid(rng), size=1000 + n % 50000, n=n, b=n % 250 + 1)
                kinds["other"] += 1
            out.write(f"{stamp} mta1 {ident}[{pid}]: {msg}\n")
    return kinds


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure(fn: Callable[[], int]) -> tuple[float, int]:
    before = cpu()
    count = fn()
    return cpu() - before, count


def plain_read(path: Path) -> int:
    n = 0
    with open(path, "rb") as handle:
        for _ in handle:
            n += 1
    return n


def follower_only(path: Path) -> int:
    """The read path alone: the Follower's lines (it parses each with parse_file_line)."""
    n = 0
    for _ in Follower(str(path), None, 0.0, follow=False).lines():
        n += 1
    return n


def pipeline(path: Path, classes: dict[str, shaping.ProviderClass] | None) -> int:
    """Lines through the Follower and parse_reply; with `classes`, the rule matching of Shaper.on_reply.
    Returns the number of replies (or of matched rules)."""
    follower = Follower(str(path), None, 0.0, follow=False)
    other = list(classes[shaping.OTHER].rules) if classes else []
    rules = {k: list(c.rules) + (other if k != shaping.OTHER else []) for k, c in (classes or {}).items()}
    replies = matched = 0
    for ts, ident, message in follower.lines():
        reply = maillog.parse_reply(ident, message, ts)
        if reply is None:
            continue
        replies += 1
        if classes is None or reply.status == "sent" or reply.klass not in rules:
            continue
        if shaping.match_rule(rules[reply.klass], reply.code, reply.enhanced, reply.text) is not None:
            matched += 1
    return matched if classes is not None else replies


def grep_count(path: Path) -> tuple[float, int]:
    before = children_cpu()
    proc = subprocess.run(["grep", "-c", "status=", str(path)], capture_output=True, text=True, check=False)
    return children_cpu() - before, int(proc.stdout.strip() or 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--write-results", action="store_true", help="write the section of bench/RESULTS.md")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs: at least 5")
    classes = shaping.parse_classes(shaping.default_data())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shaper-bench-") as tmp:
        path = Path(tmp) / "mail.log"
        kinds = write_log(path, args.lines)
        size = path.stat().st_size
        counts: dict[str, int] = {}
        for run in range(args.runs):
            load = os.getloadavg()[0]
            t_read, counts["read"] = measure(lambda: plain_read(path))
            t_grep, counts["grep"] = grep_count(path)
            t_follow, counts["follower"] = measure(lambda: follower_only(path))
            t_parse, counts["replies"] = measure(lambda: pipeline(path, None))
            t_all, counts["matched"] = measure(lambda: pipeline(path, classes))
            rows.append({"load": load, "read": t_read, "grep": t_grep, "follow": t_follow, "parse": t_parse,
                         "all": t_all})
            print(f"run {run + 1}: load {load:.2f}  read {t_read:.3f}s  grep {t_grep:.3f}s  "
                  f"follower {t_follow:.3f}s  parse {t_parse:.3f}s  parse+rules {t_all:.3f}s", flush=True)
    per100k = 100_000 / args.lines
    med = {k: statistics.median(r[k] for r in rows) for k in ("read", "grep", "follow", "parse", "all")}
    summary = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "lines": args.lines, "size": size, "kinds": kinds, "counts": counts, "runs": rows,
        "med": med, "per100k": {k: v * per100k for k, v in med.items()},
        "cores": os.cpu_count(), "python": sys.version.split()[0],
    }
    p = summary["per100k"]
    print(f"\nper 100,000 lines (medians of {args.runs}): read {p['read']:.3f}s, grep -c {p['grep']:.3f}s, "
          f"follower {p['follow']:.3f}s, parse {p['parse']:.3f}s, parse+rules {p['all']:.3f}s")
    print(f"ratios: pipeline / plain read = {med['all'] / med['read']:.1f}, pipeline / grep -c = "
          f"{med['all'] / max(med['grep'], 1e-9):.0f}; target <= {TARGET} s: "
          f"{'met' if p['all'] <= TARGET else 'NOT met'}")
    print(f"replies {counts['replies']} (sent + deferred/bounced lines: {kinds['sent'] + kinds['deferred']}), "
          f"rules matched {counts['matched']}, grep -c status= {counts['grep']}")
    if args.write_results:
        write_results(summary, args)
    return 0


def write_results(s: dict[str, Any], args: argparse.Namespace) -> None:
    rows = s["runs"]
    med, p, kinds = s["med"], s["per100k"], s["kinds"]

    def runs(key: str) -> str:
        return " / ".join(f"{r[key] * 100_000 / s['lines']:.3f}" for r in rows)

    loads = " / ".join(f"{r['load']:.1f}" for r in rows)
    body = "\n".join([
        "<!-- shaper_bench:begin -->",
        "## Shaper: CPU per 100,000 log lines",
        "",
        f"`.venv/bin/python bench/shaper_bench.py --runs {args.runs} --lines {s['lines']} --write-results` on "
        f"{s['when']} UTC, this {s['cores']}-core machine (Python {s['python']}), shared with other work while it "
        f"ran (1-minute load average at the start of each run: {loads}).",
        "",
        f"A synthetic Postfix log of {s['lines']:,} lines ({s['size'] / 1e6:.1f} MB) in a temporary file: "
        f"{kinds['sent']:,} sent lines of per-IP and per-(IP, class) transports (4 IPv4 and 1 IPv6 sending IPs), "
        f"{kinds['deferred']:,} deferrals and bounces with providers' replies (Gmail's multi-line 421 4.7.28, "
        "Yahoo TSS04, Outlook S3150 and 4.7.650, greylisting, timeouts, refused connections), "
        f"{kinds['other']:,} lines of other services. Pipeline = the shaper's: Follower (file, not following) → "
        "`parse_file_line` → `parse_reply` → for deferrals and bounces `shaping.match_rule` over the class's "
        "then class other's rules of the shipped provider classes. CPU = user + system of the process, the "
        "same file in every run, the five measured one after the other in each run.",
        "",
        "| per 100,000 lines | runs (CPU s) | median |",
        "|---|---|---|",
        f"| plain read (`for line in file`, reference) | {runs('read')} | **{p['read']:.3f}** |",
        f"| `grep -c status=` (reference) | {runs('grep')} | **{p['grep']:.3f}** |",
        f"| Follower alone (read + parse_file_line) | {runs('follow')} | **{p['follow']:.3f}** |",
        f"| read + parse_file_line + parse_reply | {runs('parse')} | **{p['parse']:.3f}** |",
        f"| + match_rule (the whole pipeline) | {runs('all')} | **{p['all']:.3f}** |",
        "",
        f"Whole pipeline: **{p['all']:.2f} s** CPU per 100,000 lines ({p['all'] * 10:.1f} µs a line); "
        f"target ≤ {TARGET:.0f} s: **{'met' if p['all'] <= TARGET else 'NOT met'}**. Ratios of the medians: "
        f"pipeline / plain read = **{med['all'] / med['read']:.1f}**, pipeline / `grep -c` = "
        f"**{med['all'] / max(med['grep'], 1e-9):.0f}**; rule matching adds "
        f"{(med['all'] - med['parse']) / med['parse'] * 100:.0f} % to the parsing.",
        f"Checks: {s['counts']['replies']:,} replies = the {kinds['sent'] + kinds['deferred']:,} sent, deferred "
        f"and bounced lines; {s['counts']['matched']:,} deferrals and bounces matched a rule; `grep -c` counted "
        f"{s['counts']['grep']:,} status lines.",
        "<!-- shaper_bench:end -->",
        "",
    ])
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if "<!-- shaper_bench:begin -->" in text:
        text = re.sub(r"<!-- shaper_bench:begin -->.*?<!-- shaper_bench:end -->\n?", lambda _: body, text,
                      flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    RESULTS.write_text(text)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
