"""Benchmark of `sendfleet vet`: 198.18.0.0/16 × 4 zones (262,144 queries) against rbldnsd on loopback.

In the same run, against the same server:
- dnsperf's maximum query rate (the limit): a few concurrency settings, the best completed rate counts;
- `sendfleet vet` (the CLI, JSON report to a file, --no-ptr --no-asn: the same 262,144 blocklist queries);
- pydnsbl (a throwaway venv, not a project dependency) on the same work. pydnsbl asks the system resolver
  (aiodns/c-ares reads /etc/resolv.conf), so everything runs in a network namespace whose
  /etc/netns/<ns>/resolv.conf names 127.0.0.1, with `lo` up and rbldnsd on 127.0.0.1:53 inside it.

The package's bytecode is compiled first (`compileall`), as an installed package's is: without it (this
machine sets PYTHONDONTWRITEBYTECODE=1) every start of the CLI compiles its ~75 modules again.

Medians of --runs runs. Needs root (ip netns). Writes bench/out/vet/ and, with --write-results, the
`vet_bench` section of bench/RESULTS.md.

    sudo .venv/bin/python bench/vet_bench.py --runs 3 --write-results
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "vet"
RESULTS = REPO / "bench" / "RESULTS.md"
SENDFLEET = REPO / ".venv" / "bin" / "sendfleet"
RBLDNSD = "/usr/sbin/rbldnsd"
DNSPERF = "/usr/bin/dnsperf"
PYDNSBL_VENV = Path("/tmp/sfbench-pydnsbl-venv")
NETWORK = ipaddress.IPv4Network("198.18.0.0/16")
ZONES = ("z0.bench.test", "z1.bench.test", "z2.bench.test", "z3.bench.test")
LISTED_PER_ZONE = 655  # ~1 % of the /16 in each zone
SEED = 2026
DNSPERF_SETTINGS = ((1, 100), (2, 200), (2, 500), (4, 1000))

PYDNSBL_SCRIPT = r"""
import json, resource, sys, time, ipaddress
from pydnsbl import DNSBLIpChecker
from pydnsbl.providers import Provider
zones = sys.argv[1].split(",")
net = ipaddress.IPv4Network(sys.argv[2])
limit = int(sys.argv[3])
ips = [str(ip) for ip in net][:limit]
checker = DNSBLIpChecker(providers=[Provider(z) for z in zones])
start = time.monotonic()
results = checker.bulk_check(ips)
seconds = time.monotonic() - start
print(json.dumps({
    "addresses": len(ips),
    "queries": len(ips) * len(zones),
    "seconds": seconds,
    "blacklisted": sum(1 for r in results if r.blacklisted),
    "failed": sum(1 for r in results if r.failed_providers),
    "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
}))
"""


def sh(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


def children_cpu() -> float:
    """CPU seconds (user + system) of every waited-for child so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Bench:
    ns: str
    data: Path
    listed: set[int] = field(default_factory=set)
    rbldnsd: subprocess.Popen[bytes] | None = None

    # -- set-up ------------------------------------------------------------------------------------------

    def seed(self) -> None:
        rnd = random.Random(SEED)
        base = int(NETWORK.network_address)
        for zone in ZONES:
            picks = {base + rnd.randrange(NETWORK.num_addresses) for _ in range(LISTED_PER_ZONE)}
            self.listed |= picks
            lines = [":127.0.0.2:listed by bench", "127.0.0.2"]
            lines += [str(ipaddress.IPv4Address(v)) for v in sorted(picks)]
            path = self.data / f"{zone}.txt"
            path.write_text("\n".join(lines) + "\n")
            os.chmod(path, 0o644)
        (self.data / "zones.yml").write_text(
            "zones:\n" + "".join(f'  - {{zone: {z}, listed: ["127.0.0.2"]}}\n' for z in ZONES)
        )
        with open(self.data / "dnsperf.txt", "w") as f:
            for value in range(int(NETWORK.network_address), int(NETWORK.broadcast_address) + 1):
                rev = ".".join(reversed(str(ipaddress.IPv4Address(value)).split(".")))
                for zone in ZONES:
                    f.write(f"{rev}.{zone} A\n")

    def netns_up(self) -> None:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        etc = Path("/etc/netns") / self.ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:2 timeout:5\n")

    def start_rbldnsd(self) -> None:
        cmd = ["ip", "netns", "exec", self.ns, RBLDNSD, "-n", "-u", "rbldns", "-b", "127.0.0.1/53"]
        cmd += ["-w", str(self.data), *(f"{z}:ip4set:{z}.txt" for z in ZONES)]
        self.rbldnsd = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            probe = self.ns_run(
                "dig", "+short", "+tries=1", "+time=1", "@127.0.0.1", f"2.0.0.127.{ZONES[0]}", check=False
            )
            if probe.stdout.strip() == "127.0.0.2":
                return
            time.sleep(0.1)
        raise SystemExit("rbldnsd did not come up in the namespace")

    def ns_run(self, *cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns, *cmd, check=check, **kw)

    def teardown(self) -> None:
        if self.rbldnsd is not None and self.rbldnsd.poll() is None:
            self.rbldnsd.kill()  # exactly the PID we started (ip netns exec execs rbldnsd)
            self.rbldnsd.wait(timeout=10)
        sh("ip", "netns", "del", self.ns, check=False)
        shutil.rmtree(Path("/etc/netns") / self.ns, ignore_errors=True)
        shutil.rmtree(self.data, ignore_errors=True)

    # -- the three contenders ----------------------------------------------------------------------------

    def dnsperf(self) -> dict[str, Any]:
        best: dict[str, Any] = {"qps": 0.0}
        for clients, outstanding in DNSPERF_SETTINGS:
            cpu0 = children_cpu()
            proc = self.ns_run(
                DNSPERF, "-s", "127.0.0.1", "-p", "53", "-d", str(self.data / "dnsperf.txt"), "-n", "1",
                "-c", str(clients), "-q", str(outstanding), "-t", "2",
            )  # fmt: skip
            qps = float(re.search(r"Queries per second:\s+([\d.]+)", proc.stdout).group(1))  # type: ignore[union-attr]
            lost = int(re.search(r"Queries lost:\s+(\d+)", proc.stdout).group(1))  # type: ignore[union-attr]
            completed = int(re.search(r"Queries completed:\s+(\d+)", proc.stdout).group(1))  # type: ignore[union-attr]
            cpu = children_cpu() - cpu0
            if qps > best["qps"]:
                best = {"qps": qps, "clients": clients, "outstanding": outstanding, "lost": lost}
                best["cpu_us_per_query"] = cpu / completed * 1e6
        return best

    def sendfleet(self, run: int) -> dict[str, Any]:
        report = OUT / f"sendfleet-{run}.json"
        cmd = [str(SENDFLEET), "vet", str(NETWORK), "--zones"]
        cmd += [str(self.data / "zones.yml"), "--resolver", "127.0.0.1", "--format", "json", "--output", str(report)]
        cmd += ["--no-ptr", "--no-asn", "--no-progress"]
        start = time.monotonic()
        proc, maxrss_mb, cpu = self.timed(cmd)
        wall = time.monotonic() - start
        if proc.returncode not in (0, 1):
            raise SystemExit(f"sendfleet vet exited {proc.returncode}: {proc.stderr}")
        data = json.loads(report.read_text())
        scan = data["scan"]
        listed = {int(ipaddress.IPv4Address(a["ip"])) for a in data["addresses"] if a["verdict"] == "listed"}
        return {
            "scan_qps": scan["blocklist_queries_per_second"],
            "end_to_end_qps": scan["blocklist_queries"] / wall,
            "wall": wall,
            "queries": scan["blocklist_queries"],
            "retries": scan["retries"],
            "timeouts": scan["timeouts"],
            "unknown": data["summary"]["unknown"],
            "correct": listed == self.listed and data["summary"]["unknown"] == 0,
            "workers": scan.get("workers", 1),
            "maxrss_mb": maxrss_mb,
            "cpu_us_per_query": cpu / scan["queries"] * 1e6,
        }

    def memory(self) -> list[tuple[str, float]]:
        """Max RSS of `sendfleet vet` (JSON streamed to stdout) for growing ranges: flat, not per address."""
        out = []
        for net in ("198.18.0.0/20", "198.18.0.0/16", "198.18.0.0/15"):
            cmd = [str(SENDFLEET), "vet", net, "--zones", str(self.data / "zones.yml")]
            cmd += ["--resolver", "127.0.0.1", "--format", "json", "--no-ptr", "--no-asn", "--no-progress"]
            cmd += ["--max-addresses", "131072", "--workers", "1"]
            _, maxrss_mb, _ = self.timed(cmd)
            out.append((net, maxrss_mb))
        return out

    def timed(self, cmd: list[str]) -> tuple[subprocess.CompletedProcess[str], float, float]:
        """Run in the namespace under /usr/bin/time (a small parent: a max RSS that is really the command's,
        workers included) -> (process, max RSS MB, CPU seconds user + system)."""
        stats = self.data / "time.txt"
        proc = self.ns_run("/usr/bin/time", "-f", "%M %U %S", "-o", str(stats), *cmd, check=False)
        rss_kb, user, system = stats.read_text().split()[-3:]
        return proc, int(rss_kb) / 1024, float(user) + float(system)

    def pydnsbl(self, limit: int) -> dict[str, Any]:
        script = OUT / "pydnsbl_run.py"
        script.write_text(PYDNSBL_SCRIPT)
        start = time.monotonic()
        cpu0 = children_cpu()
        proc = self.ns_run(
            str(PYDNSBL_VENV / "bin" / "python"), str(script), ",".join(ZONES), str(NETWORK), str(limit), timeout=3600
        )
        wall = time.monotonic() - start
        cpu = children_cpu() - cpu0
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        base = int(NETWORK.network_address)
        expected = sum(1 for v in self.listed if v - base < data["addresses"])
        return {
            "scan_qps": data["queries"] / data["seconds"],
            "end_to_end_qps": data["queries"] / wall,
            "queries": data["queries"],
            "blacklisted": data["blacklisted"],
            "failed": data["failed"],
            "correct": data["blacklisted"] == expected and data["failed"] == 0,
            "maxrss_mb": data["maxrss_kb"] / 1024,
            "cpu_us_per_query": cpu / data["queries"] * 1e6,
        }


def ensure_pydnsbl() -> None:
    if (PYDNSBL_VENV / "bin" / "python").exists():
        return
    venv.create(PYDNSBL_VENV, with_pip=True)
    sh(str(PYDNSBL_VENV / "bin" / "pip"), "install", "-q", "pydnsbl==1.1.7")


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pydnsbl-addresses", type=int, default=NETWORK.num_addresses, help="slice for pydnsbl")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (ip netns)")
    for binary in (RBLDNSD, DNSPERF, str(SENDFLEET)):
        if not os.path.exists(binary):
            raise SystemExit(f"missing {binary}")
    ensure_pydnsbl()
    sh(sys.executable, "-m", "compileall", "-q", str(REPO / "scripts" / "sendfleet"))
    OUT.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="sfbench-vet-"))
    os.chmod(data, 0o755)  # rbldnsd runs as rbldns
    bench = Bench(ns=f"sfbench-vet-{os.getpid()}", data=data)
    runs: list[dict[str, Any]] = []
    memory: list[tuple[str, float]] = []
    try:
        bench.seed()
        bench.netns_up()
        bench.start_rbldnsd()
        for run in range(1, args.runs + 1):
            row = {
                "load": os.getloadavg()[0],
                "dnsperf": bench.dnsperf(),
                "sendfleet": bench.sendfleet(run),
                "pydnsbl": bench.pydnsbl(args.pydnsbl_addresses),
            }
            runs.append(row)
            print(json.dumps({"run": run, **row}), flush=True)
        memory = bench.memory()
        print(json.dumps({"memory": memory}), flush=True)
    finally:
        bench.teardown()
    summary = summarise(runs, args)
    summary["memory"] = memory
    (OUT / "results.json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    print(json.dumps(summary, indent=1))
    if args.write_results:
        write_results(runs, summary, args)
    return 0


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    d = median([r["dnsperf"]["qps"] for r in runs])
    s_scan = median([r["sendfleet"]["scan_qps"] for r in runs])
    s_e2e = median([r["sendfleet"]["end_to_end_qps"] for r in runs])
    p_scan = median([r["pydnsbl"]["scan_qps"] for r in runs])
    p_e2e = median([r["pydnsbl"]["end_to_end_qps"] for r in runs])
    return {
        "dnsperf_qps": d,
        "sendfleet_scan_qps": s_scan,
        "sendfleet_end_to_end_qps": s_e2e,
        "pydnsbl_scan_qps": p_scan,
        "pydnsbl_end_to_end_qps": p_e2e,
        "ratio_sendfleet_dnsperf": s_scan / d,
        "ratio_sendfleet_dnsperf_end_to_end": s_e2e / d,
        "ratio_sendfleet_pydnsbl": s_scan / p_scan,
        "ratio_sendfleet_pydnsbl_end_to_end": s_e2e / p_e2e,
        "sendfleet_correct_all_runs": all(r["sendfleet"]["correct"] for r in runs),
        "pydnsbl_correct_all_runs": all(r["pydnsbl"]["correct"] for r in runs),
        "sendfleet_maxrss_mb": median([r["sendfleet"]["maxrss_mb"] for r in runs]),
        "pydnsbl_maxrss_mb": median([r["pydnsbl"]["maxrss_mb"] for r in runs]),
        "pydnsbl_addresses": args.pydnsbl_addresses,
        "dnsperf_cpu_us": median([r["dnsperf"]["cpu_us_per_query"] for r in runs]),
        "sendfleet_cpu_us": median([r["sendfleet"]["cpu_us_per_query"] for r in runs]),
        "pydnsbl_cpu_us": median([r["pydnsbl"]["cpu_us_per_query"] for r in runs]),
    }


def write_results(runs: list[dict[str, Any]], s: dict[str, Any], args: argparse.Namespace) -> None:
    def runs_of(key: str, field_: str) -> str:
        return " / ".join(f"{r[key][field_] / 1000:.1f}k" for r in runs)

    def k(key: str) -> str:
        return f"**{s[key] / 1000:.1f}k**"

    met1 = "met" if s["ratio_sendfleet_dnsperf_end_to_end"] >= 0.5 else "NOT met"
    met2 = "met" if s["ratio_sendfleet_pydnsbl"] >= 10 else "NOT met"
    if args.pydnsbl_addresses < NETWORK.num_addresses:
        slice_note = f"pydnsbl on the first {args.pydnsbl_addresses} addresses (× 4 zones), compared in queries/s."
    else:
        slice_note = "pydnsbl on the same 262,144 queries."
    settings = ", ".join(f"-c {c} -q {q}" for c, q in DNSPERF_SETTINGS)
    retries = " / ".join(str(r["sendfleet"]["retries"]) for r in runs)
    timeouts = " / ".join(str(r["sendfleet"]["timeouts"]) for r in runs)
    load = " / ".join(f"{r.get('load', 0):.1f}" for r in runs)
    lines = [
        "<!-- vet_bench:begin -->",
        "## `sendfleet vet` bulk scan",
        "",
        f"`sudo .venv/bin/python bench/vet_bench.py --runs {len(runs)} --write-results` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, this 2-core machine, shared with the other",
        f"engineers' work while it ran (1-minute load average at the start of each run: {load}).",
        "198.18.0.0/16 × 4 zones = 262,144 queries against one rbldnsd on 127.0.0.1:53 inside a network namespace",
        f"(seeded: {LISTED_PER_ZONE} random listings per zone). dnsperf, sendfleet and pydnsbl ask the same server",
        "in the same run, one after the other.",
        "",
        f"- sendfleet = the CLI: `vet 198.18.0.0/16 --format json --output F --no-ptr --no-asn` "
        f"({runs[0]['sendfleet']['workers']} scan worker processes, the default for a scan this size). *scan* = its",
        "  blocklist phase as it reports it (`scan.blocklist_queries_per_second`); *end to end* = 262,144 / the",
        "  process's wall time (Python start-up, zone self-tests, TXT reasons of the listings and writing the",
        "  65,536-address JSON report included).",
        "- pydnsbl 1.1.7 in a throwaway venv (defaults: concurrency 200, timeout 5 s, 2 tries) through the",
        "  namespace's resolv.conf: *scan* = its `bulk_check` call, *end to end* = the process.",
        f"- dnsperf: the best completed rate of {settings} (`-n 1`, the same 262,144 names).",
        f"- {slice_note}",
        "",
        "| | runs (queries/s) | median | max RSS |",
        "|---|---|---|---|",
        f"| dnsperf (the limit) | {runs_of('dnsperf', 'qps')} | {k('dnsperf_qps')} | |",
        f"| sendfleet, scan | {runs_of('sendfleet', 'scan_qps')} | {k('sendfleet_scan_qps')} "
        f"| {s['sendfleet_maxrss_mb']:.0f} MB |",
        f"| sendfleet, end to end | {runs_of('sendfleet', 'end_to_end_qps')} | {k('sendfleet_end_to_end_qps')} | |",
        f"| pydnsbl, scan | {runs_of('pydnsbl', 'scan_qps')} | {k('pydnsbl_scan_qps')} "
        f"| {s['pydnsbl_maxrss_mb']:.0f} MB |",
        f"| pydnsbl, end to end | {runs_of('pydnsbl', 'end_to_end_qps')} | {k('pydnsbl_end_to_end_qps')} | |",
        "",
        f"Ratios of the medians: sendfleet / dnsperf = **{s['ratio_sendfleet_dnsperf_end_to_end']:.2f}** end to end "
        f"(scan alone {s['ratio_sendfleet_dnsperf']:.2f}); target ≥ 0.5 end to end: **{met1}**.",
        f"sendfleet / pydnsbl = **{s['ratio_sendfleet_pydnsbl']:.1f}** "
        f"(end to end {s['ratio_sendfleet_pydnsbl_end_to_end']:.1f}); target ≥ 10: **{met2}**.",
        "",
        "Memory stays flat in the size of the range (max RSS, JSON streamed to stdout, one process): "
        + ", ".join(f"{net} {mb:.0f} MB" for net, mb in s["memory"])
        + ".",
        "",
        "CPU per query (user + system of the client process, medians; independent of the machine's load):",
        f"dnsperf {s['dnsperf_cpu_us']:.1f} µs, sendfleet {s['sendfleet_cpu_us']:.1f} µs (whole command, report",
        f"included), pydnsbl {s['pydnsbl_cpu_us']:.1f} µs: pydnsbl spends "
        f"**{s['pydnsbl_cpu_us'] / s['sendfleet_cpu_us']:.1f}×** sendfleet's CPU per query.",
        "",
        "Correctness: sendfleet found exactly the seeded listings with 0 unknown in every run: "
        f"**{s['sendfleet_correct_all_runs']}** (retries per run: {retries}; final timeouts: {timeouts}).",
        "pydnsbl's count of blacklisted addresses matched and no provider failed: "
        f"**{s['pydnsbl_correct_all_runs']}**.",
        "<!-- vet_bench:end -->",
        "",
    ]
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    found = re.search(r"<!-- vet_bench:history (.*?) -->", text)
    history: list[dict[str, Any]] = json.loads(found.group(1)) if found else []
    history.append(
        {
            "when": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "load": round(statistics.median([r.get("load", 0) for r in runs]), 1),
            "dnsperf": round(s["dnsperf_qps"]),
            "sendfleet": round(s["sendfleet_scan_qps"]),
            "pydnsbl": round(s["pydnsbl_scan_qps"]),
            "r_dnsperf": round(s["ratio_sendfleet_dnsperf"], 2),
            "r_e2e": round(s["ratio_sendfleet_dnsperf_end_to_end"], 2),
            "r_pydnsbl": round(s["ratio_sendfleet_pydnsbl"], 1),
        }
    )
    history = history[-6:]
    lines[-2:-2] = [
        "",
        "Every full run of this benchmark so far (medians of its runs, scan queries/s; the load is what moves them):",
        "",
        "| when (UTC) | load | dnsperf | sendfleet | pydnsbl | sendfleet/dnsperf | end to end/dnsperf "
        "| sendfleet/pydnsbl |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {h['when']} | {h['load']} | {h['dnsperf'] / 1000:.1f}k | {h['sendfleet'] / 1000:.1f}k "
            f"| {h['pydnsbl'] / 1000:.1f}k | {h['r_dnsperf']:.2f} "
            f"| {format(h['r_e2e'], '.2f') if 'r_e2e' in h else '–'} | {h['r_pydnsbl']:.1f} |"
            for h in reversed(history)
        ),
        f"<!-- vet_bench:history {json.dumps(history)} -->",
    ]
    body = "\n".join(lines)
    if "<!-- vet_bench:begin -->" in text:
        text = re.sub(r"<!-- vet_bench:begin -->.*?<!-- vet_bench:end -->\n?", lambda _: body, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + body
    RESULTS.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
