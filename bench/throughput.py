"""Throughput of one provisioned sender: messages/s through mta2, DKIM-signed vs the same Postfix with the
milter off.

    sudo .venv/bin/python bench/throughput.py [--messages 10000] [--runs 3] [--sessions 20] [--size 2048]
                                              [--host mta2] [--tune] [--write]

The path: Postfix's smtp-source, from the app address 198.51.100.32, to the sender's port 25 (smtpd ->
OpenDKIM milter -> cleanup -> queue -> the pool's per-IP smtp transports) -> Postfix's smtp-sink, which
counts what it receives. Every message goes to `bench@[198.51.100.21]` (an address literal: no DNS, and the
sender's pool transports are used exactly as for real mail).

No package is installed on this machine: smtp-source and smtp-sink are the sink host's own Postfix binaries,
run from its root with chroot. The receiver runs in a network namespace of its own (`sf-bench-rx`, veth on the
lab bridge, address 198.51.100.21), so the shared sink MX keeps running for everyone else. smtp-source runs
as a dedicated uid whose traffic an `ip rule uidrange` routes with source address 198.51.100.32 (an app
address: the sender's firewall and mynetworks let it submit); nobody else's traffic is affected. All of it
is removed at the end, and the sender's main.cf / opendkim.conf are restored byte for byte (then reloaded).

A run: 10,000 messages; the time is from the first connection of smtp-source to smtp-sink's last message;
messages/s = messages / time. A run counts only when smtp-sink received every message and the sender's queue
is empty afterwards (0 lost). Modes alternate (unsigned, signed, unsigned, ...) so drift hits both alike;
the ratio is median(signed) / median(unsigned) measured in the same invocation. --tune measures again with
the tuning settings below applied on top (temporarily) and reports before/after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from sendfleet.lab.config import DEFAULT_STATE_DIR, LabConfig  # noqa: E402
from sendfleet.lab.hosts import ssh_command  # noqa: E402
from sendfleet.lab.lab import running_config  # noqa: E402

RX_NETNS, RX_VETH, RX_PEER = "sf-bench-rx", "sfbench0", "sfbench1"
RX_ADDRESS = "198.51.100.21"
RX_MAC = "02:5f:be:0c:00:21"  # fixed, so ARP caches on the bridge stay right from one invocation to the next
BENCH_UID = 64999
RULE_TABLE = 64999
MARK_BEGIN, MARK_END = "<!-- throughput:begin -->", "<!-- throughput:end -->"

# Tuning applied with --tune, on top of the converged configuration (restored afterwards).
POSTFIX_TUNING = {
    "smtpd_peername_lookup": "no",  # no reverse lookup of the submitting app per connection
    "default_process_limit": "200",  # room for smtpd + cleanup + smtp under load (default 100)
    "in_flow_delay": "0",  # do not slow submission down while the queue manager catches up
    "smtp_connection_cache_on_demand": "yes",
    "smtp_connection_cache_time_limit": "10s",  # reuse connections to the receiver longer (default 2s)
}
OPENDKIM_TUNING = {"SyslogSuccess": "no", "LogWhy": "no", "LogResults": "no", "Diagnostics": "no"}


# ---------------------------------------------------------------------------------------------- plumbing


def sh(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


class Lab:
    def __init__(self, cfg: LabConfig, host: str) -> None:
        self.cfg = cfg
        self.host = host
        self.key = cfg.inventory_dir / ".ssh" / "lab_ed25519"
        self.sink_root = cfg.host_root(cfg.host("sink"))

    def ssh(self, host: str, command: str, check: bool = True, timeout: float = 300) -> str:
        proc = subprocess.run(ssh_command(self.cfg, self.cfg.host(host), self.key, command), capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{host}: {command!r}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    @property
    def address(self) -> str:
        return str(self.cfg.host(self.host).ipv4)


@contextlib.contextmanager
def receiver_netns(lab: Lab) -> Iterator[None]:
    """A namespace on the lab bridge holding 198.51.100.21, for smtp-sink."""
    probe = socket.socket()
    probe.settimeout(1)
    try:
        probe.connect((RX_ADDRESS, 25))
        raise SystemExit(f"{RX_ADDRESS} is in use in the lab")
    except ConnectionRefusedError:
        raise SystemExit(f"{RX_ADDRESS} is in use in the lab") from None
    except OSError:
        pass  # nobody there
    finally:
        probe.close()
    sh("ip", "netns", "add", RX_NETNS)
    try:
        sh("ip", "link", "add", RX_VETH, "type", "veth", "peer", "name", RX_PEER, "address", RX_MAC)
        sh("ip", "link", "set", RX_PEER, "netns", RX_NETNS)
        sh("ip", "link", "set", RX_VETH, "master", lab.cfg.bridge, "up")
        ns = ["ip", "netns", "exec", RX_NETNS]
        sh(*ns, "ip", "link", "set", "lo", "up")
        sh(*ns, "ip", "addr", "add", f"{RX_ADDRESS}/24", "dev", RX_PEER)
        sh(*ns, "ip", "link", "set", RX_PEER, "up")
        for netns in [lab.cfg.host(lab.host).netns, lab.cfg.host("sink").netns]:
            sh("ip", "netns", "exec", netns, "ip", "neigh", "flush", "to", RX_ADDRESS, check=False)
        sh("ip", "neigh", "flush", "to", RX_ADDRESS, check=False)
        yield
    finally:
        sh("ip", "link", "del", RX_VETH, check=False)
        sh("ip", "netns", "del", RX_NETNS, check=False)


@contextlib.contextmanager
def app_source_route(lab: Lab, app: str) -> Iterator[None]:
    """Traffic of uid BENCH_UID to the lab network leaves from the app address."""
    rule = ["uidrange", f"{BENCH_UID}-{BENCH_UID}", "lookup", str(RULE_TABLE), "priority", "1000"]
    sh("ip", "route", "replace", lab.cfg.network, "dev", lab.cfg.bridge, "src", app, "table", str(RULE_TABLE))
    sh("ip", "rule", "add", *rule)
    try:
        yield
    finally:
        sh("ip", "rule", "del", *rule, check=False)
        sh("ip", "route", "flush", "table", str(RULE_TABLE), check=False)


@contextlib.contextmanager
def saved_config(lab: Lab) -> Iterator[None]:
    """main.cf and opendkim.conf restored byte for byte (and reloaded) whatever happens."""
    lab.ssh(lab.host, "cp -p /etc/postfix/main.cf /root/.bench-main.cf && cp -p /etc/opendkim.conf "
                      "/root/.bench-opendkim.conf")
    try:
        yield
    finally:
        lab.ssh(lab.host, "cp -p /root/.bench-main.cf /etc/postfix/main.cf && cp -p /root/.bench-opendkim.conf "
                          "/etc/opendkim.conf && rm -f /root/.bench-main.cf /root/.bench-opendkim.conf && "
                          "systemctl restart opendkim && postfix reload", check=False)


def set_milter(lab: Lab, on: bool, milters: str) -> None:
    value = milters if on else ""
    lab.ssh(lab.host, f"postconf -e {shlex.quote('smtpd_milters=' + value)} "
                      f"{shlex.quote('non_smtpd_milters=' + ('$smtpd_milters' if on else ''))} && postfix reload")
    time.sleep(1)


def apply_tuning(lab: Lab) -> None:
    settings = " ".join(shlex.quote(f"{k}={v}") for k, v in POSTFIX_TUNING.items())
    lab.ssh(lab.host, f"postconf -e {settings}")
    edits = " ".join(f"-e {shlex.quote(f'/^{k}[[:space:]]/d')}" for k in OPENDKIM_TUNING)
    lines = "".join(f"{k}\t\t{v}\\n" for k, v in OPENDKIM_TUNING.items())
    lab.ssh(lab.host, f"sed -i {edits} /etc/opendkim.conf && printf '{lines}' >> /etc/opendkim.conf && "
                      "opendkim -n && systemctl restart opendkim && postfix reload")
    time.sleep(1)


def queue_size(lab: Lab) -> int:
    """Messages of this benchmark (envelope sender bench-*) in the sender's queue."""
    return len([ln for ln in lab.ssh(lab.host, "postqueue -j").splitlines() if '"sender": "bench-' in ln])


# ------------------------------------------------------------------------------------------------ one run


class SinkCounter:
    """smtp-sink in the receiver namespace, its running message counter (`-c`) read as it goes."""

    def __init__(self, lab: Lab, *options: str) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", RX_NETNS, "chroot", str(lab.sink_root),
                                      "/usr/sbin/smtp-sink", "-u", "nobody", "-c", *options, f"{RX_ADDRESS}:25",
                                      "512"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.count = 0
        self.reached: dict[int, float] = {}
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        tail = b""
        while chunk := self.proc.stdout.read1(65536):  # type: ignore[attr-defined]
            now = time.perf_counter()
            *done, tail = re.split(rb"[\r\n]", tail + chunk)
            for line in done:
                m = re.search(rb"mesg=(\d+)", line)
                if m:
                    with self.cond:
                        self.count = int(m.group(1))
                        self.reached.setdefault(self.count, now)
                        self.cond.notify_all()

    def wait_for(self, n: int, timeout: float) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: self.count >= n, timeout=timeout)
            return self.reached.get(n)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.thread.join(timeout=5)


def one_run(lab: Lab, messages: int, sessions: int, size: int, sender: str, timeout: float) -> tuple[float, int, int]:
    """(seconds until smtp-sink had every message, messages received, left in the sender's queue)."""
    rx = SinkCounter(lab)
    try:
        time.sleep(0.5)
        start = time.perf_counter()
        src = subprocess.run(["chroot", f"--userspec={BENCH_UID}:{BENCH_UID}", str(lab.sink_root),
                              "/usr/sbin/smtp-source", "-d", "-s", str(sessions), "-m", str(messages),
                              "-l", str(size), "-f", sender, "-t", f"bench@[{RX_ADDRESS}]", "-M", "app.lab.test",
                              f"{lab.address}:25"], capture_output=True, text=True, timeout=timeout)
        if src.returncode != 0:
            raise RuntimeError(f"smtp-source failed: {src.stderr.strip()[-500:]}")
        done = rx.wait_for(messages, timeout=max(1.0, timeout - (time.perf_counter() - start)))
        elapsed = (done if done is not None else time.perf_counter()) - start
        # Let anything still in flight arrive (a duplicate would show as more than `messages`).
        left = wait_queue_empty(lab, 120)
        time.sleep(1)
        return elapsed, rx.count, left
    finally:
        rx.stop()


def pilot_signed(lab: Lab, milter_on: bool) -> None:
    """One message through the sender, dumped by smtp-sink: it carries a DKIM-Signature iff the milter is on."""
    dump = lab.sink_root / "tmp" / "bench-dump"
    dump.mkdir(exist_ok=True)
    dump.chmod(0o1777)
    rx = SinkCounter(lab, "-D", "/tmp/bench-dump/%H%M%S")
    try:
        time.sleep(0.5)
        subprocess.run(["chroot", f"--userspec={BENCH_UID}:{BENCH_UID}", str(lab.sink_root), "/usr/sbin/smtp-source",
                        "-m", "1", "-f", "bench-pilot@shop.test", "-t", f"bench@[{RX_ADDRESS}]", "-M",
                        "app.lab.test", f"{lab.address}:25"], check=True, capture_output=True, timeout=60)
        if rx.wait_for(1, timeout=120) is None:
            raise RuntimeError("pilot message never reached smtp-sink")
        wait_queue_empty(lab, 60)
        texts = [f.read_text(errors="replace") for f in dump.iterdir()]
        signed = any("DKIM-Signature:" in t for t in texts)
        if signed != milter_on:
            raise RuntimeError(f"pilot: milter {'on' if milter_on else 'off'} but signed={signed}")
    finally:
        rx.stop()
        for f in dump.iterdir():
            f.unlink()
        dump.rmdir()


def wait_queue_empty(lab: Lab, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    left = queue_size(lab)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = queue_size(lab)
    return left


def drop_leftovers(lab: Lab) -> None:
    """Delete this benchmark's own leftover messages (sender bench-*) from the sender's queue."""
    ids = [json.loads(ln)["queue_id"] for ln in lab.ssh(lab.host, "postqueue -j").splitlines()
           if '"sender": "bench-' in ln]
    if ids:
        lab.ssh(lab.host, "printf '%s\\n' " + " ".join(ids) + " | postsuper -d - >/dev/null")


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine (every lab host, smtp-source and smtp-sink run on it)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def measure(lab: Lab, args: argparse.Namespace, milters: str, label: str) -> dict[str, list[float]]:
    """Messages/s per run and mode; also prints how busy the machine's CPUs were and the CPU time each
    message cost the whole path (core-ms): a run at ~100 % busy is CPU-bound, and the signed-minus-unsigned
    core-ms is what signing costs."""
    results: dict[str, list[float]] = {"unsigned": [], "signed": [], "unsigned core-ms": [], "signed core-ms": []}
    for run in range(args.runs):
        for mode in ("unsigned", "signed"):
            set_milter(lab, mode == "signed", milters)
            drop_leftovers(lab)
            pilot_signed(lab, mode == "signed")
            busy0, total0 = cpu_times()
            elapsed, received, left = one_run(lab, args.messages, args.sessions, args.size,
                                              f"bench-{mode}@shop.test", args.timeout)
            busy1, total1 = cpu_times()
            busy = (busy1 - busy0) / max(1, total1 - total0)
            core_ms = (busy1 - busy0) * 1000 / os.sysconf("SC_CLK_TCK") / args.messages
            rate = args.messages / elapsed
            lost = args.messages - received  # negative: duplicates
            print(f"{label} run {run + 1} {mode}: {elapsed:.1f} s, {rate:.0f} msg/s, received {received}, "
                  f"queue after {left}, CPUs {busy:.0%} busy, {core_ms:.2f} core-ms/message", flush=True)
            results[f"{mode} core-ms"].append(core_ms)
            if lost or left:
                raise SystemExit(f"{label} {mode}: {lost} lost, {left} left in the queue: not a valid run")
            results[mode].append(rate)
    return results


def opendkim_cpu_ticks(lab: Lab) -> int:
    out = lab.ssh(lab.host, "for q in $(pidof opendkim); do awk '{print $14+$15}' /proc/$q/stat; done")
    return sum(int(x) for x in out.split())


def profile(lab: Lab, args: argparse.Namespace) -> str:
    """Signed batches only: OpenDKIM's CPU per message for key encodings and numbers of sessions."""
    key = lab.ssh(lab.host, "postconf -h smtpd_milters >/dev/null; awk '{print $2}' /etc/opendkim/KeyTable | "
                            "grep shop.test | cut -d: -f3").strip()
    backup = "/root/.bench-key"
    encodings = {
        "PKCS#8 PEM (as deployed)": None,
        "traditional RSA DER (base64)": f"openssl rsa -in {backup} -traditional -outform DER 2>/dev/null | base64 -w0",
        "traditional RSA PEM": f"openssl rsa -in {backup} -traditional 2>/dev/null",
    }
    rows = []

    def batch(label: str, sessions: int, n: int) -> None:
        drop_leftovers(lab)
        pilot_signed(lab, True)
        before = opendkim_cpu_ticks(lab)
        elapsed, received, left = one_run(lab, n, sessions, args.size, "bench-signed@shop.test", args.timeout)
        ms = (opendkim_cpu_ticks(lab) - before) * 10 / n
        if received != n or left:
            raise SystemExit(f"profile {label}: received {received} of {n}, {left} left")
        rows.append(f"| {label}, {sessions} sessions | {n / elapsed:.0f} | {ms:.2f} ms |")
        print(rows[-1], flush=True)

    lab.ssh(lab.host, f"cp -p {key} {backup}")
    try:
        for label, convert in encodings.items():
            if convert:
                lab.ssh(lab.host, f"{convert} > {key}.new && chown --reference={backup} {key}.new && "
                                  f"chmod --reference={backup} {key}.new && mv {key}.new {key} && "
                                  "systemctl restart opendkim")
                time.sleep(1)
            batch(label, 40, args.profile_messages)
    finally:
        lab.ssh(lab.host, f"cp -p {backup} {key} && rm -f {backup} && systemctl restart opendkim")
        time.sleep(1)
    for sessions in (1, 4, 20):
        batch("as deployed", sessions, args.profile_messages // (3 if sessions == 1 else 1))
    return ("| variant | msg/s | OpenDKIM CPU per message |\n|---|---|---|\n" + "\n".join(rows) + "\n")


def table(label: str, results: dict[str, list[float]]) -> tuple[str, float]:
    med = {m: statistics.median(v) for m, v in results.items()}
    ratio = med["signed"] / med["unsigned"]
    rows = [f"| {label} | {m} | {' / '.join(f'{r:.0f}' for r in results[m])} | **{med[m]:.0f}** | "
            f"{med[m + ' core-ms']:.2f} |" for m in ("unsigned", "signed")]
    return "\n".join(rows) + f"\n| {label} | signed / unsigned | | **{ratio:.2f}** | |", ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--host", default="mta2")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--tune", action="store_true", help="also measure with the tuning settings")
    parser.add_argument("--profile", action="store_true",
                        help="instead: OpenDKIM CPU per signed message for key encodings and session counts")
    parser.add_argument("--profile-messages", type=int, default=3000)
    parser.add_argument("--write", action="store_true", help="rewrite this benchmark's section of RESULTS.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, chroot)")
    cfg = running_config(DEFAULT_STATE_DIR)
    if cfg is None:
        raise SystemExit("the lab is not up")
    lab = Lab(cfg, args.host)
    milters = lab.ssh(lab.host, "postconf -h smtpd_milters").strip()
    if not milters:
        raise SystemExit(f"{lab.host} has no milter configured: converge it first")
    app = cfg.app_addresses[0]
    if args.profile:
        with receiver_netns(lab), app_source_route(lab, app), saved_config(lab):
            print(profile(lab, args))
        return 0
    sections: list[str] = []
    ratios: dict[str, float] = {}
    with receiver_netns(lab), app_source_route(lab, app), saved_config(lab):
        base = measure(lab, args, milters, "as converged")
        text, ratios["as converged"] = table("as converged", base)
        sections.append(text)
        if args.tune:
            apply_tuning(lab)
            tuned = measure(lab, args, milters, "tuned")
            text, ratios["tuned"] = table("tuned", tuned)
            sections.append(text)
    when = datetime.now(UTC).strftime("%Y-%m-%d")
    cmd = "sudo .venv/bin/python bench/throughput.py " + " ".join(sys.argv[1:])
    body = (f"## Throughput of one sender, DKIM-signed vs unsigned\n\n`{cmd.strip()}` on {when}, this "
            f"2-core machine: {args.messages} messages of {args.size} bytes per run, {args.sessions} smtp-source "
            f"sessions from {app} -> {args.host} (Postfix + OpenDKIM on a UNIX socket, 3-IP transactional pool) -> "
            f"smtp-sink on {RX_ADDRESS}; 0 lost in every run (smtp-sink count = messages, queue empty after). "
            f"Modes alternate; medians of {args.runs} runs. core-ms: CPU time of the whole machine per message "
            f"(median).\n\n| configuration | mode | runs (msg/s) | median | core-ms |\n"
            f"|---|---|---|---|---|\n" + "\n".join(sections) + "\n")
    if args.tune:
        body += ("\nTuning applied on top for the 'tuned' rows (temporarily; restored afterwards): Postfix "
                 + ", ".join(f"`{k} = {v}`" for k, v in POSTFIX_TUNING.items()) + "; OpenDKIM "
                 + ", ".join(f"`{k} {v}`" for k, v in OPENDKIM_TUNING.items()) + ".\n")
    target = "met" if max(ratios.values()) >= 0.8 else "NOT met"
    body += f"\nTarget signed >= 0.8 x unsigned: **{target}** (best ratio {max(ratios.values()):.2f}).\n"
    print(body)
    if args.write:
        results = REPO / "bench" / "RESULTS.md"
        text = results.read_text() if results.exists() else "# Benchmark results\n"
        section = f"{MARK_BEGIN}\n{body.rstrip()}\n{MARK_END}"
        if MARK_BEGIN in text:
            head, rest = text.split(MARK_BEGIN, 1)
            text = head + section + rest.split(MARK_END, 1)[1]
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
        results.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
