"""The lab's servers on the machine, on bridge addresses: Knot, rbldnsd, unbound, apt-cacher-ng.

Each runs in the foreground in its own session; `lab up` records its PID and `lab down` ends exactly
that PID.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from sendfleet.lab import zonedata
from sendfleet.lab.config import LabConfig
from sendfleet.lab.system import LabError, pid_alive, read_pid, run, start_daemon, stop_pid


@dataclass(frozen=True)
class Service:
    name: str
    what: str
    prepare: Callable[[LabConfig, Path, str], list[str]]  # -> command line
    probe: Callable[[LabConfig], str | None]  # -> None if healthy, else what is wrong


def _dns_probe(addr: str, qname: str, rdtype: str) -> str | None:
    try:
        answer = dns.query.udp(dns.message.make_query(qname, rdtype), addr, timeout=1.0)
    except Exception as err:
        return f"no answer from {addr} for {qname} {rdtype}: {type(err).__name__}"
    if answer.rcode() != dns.rcode.NOERROR or not answer.answer:
        return f"{addr} answered {dns.rcode.to_text(answer.rcode())} for {qname} {rdtype}"
    return None


def tcp_probe(addr: str, port: int) -> str | None:
    try:
        with socket.create_connection((addr, port), timeout=1.0):
            return None
    except OSError as err:
        return f"{addr}:{port} does not accept connections ({err.strerror})"


def _prep_knot(cfg: LabConfig, run_dir: Path, secret: str) -> list[str]:
    zones_dir = run_dir / "zones"
    zones_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "db").mkdir(exist_ok=True)  # Knot 3.2 fails every update ("not exists") without it
    serial = int(time.time())
    for zone, text in zonedata.zone_files(cfg, serial).items():
        (zones_dir / f"{zone}.zone").write_text(text)
    conf = run_dir / "knot.conf"
    conf.write_text(zonedata.knot_conf(cfg, run_dir, secret))
    conf.chmod(0o600)
    run(["knotc", "-c", str(conf), "conf-check"])
    return ["knotd", "-c", str(conf)]


def _prep_rbldnsd(cfg: LabConfig, run_dir: Path, secret: str) -> list[str]:
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)
    for name, text in zonedata.rbldnsd_data(cfg).items():
        (data_dir / name).write_text(text)
        (data_dir / name).chmod(0o644)
    data_dir.chmod(0o755)
    return ["rbldnsd", "-n", "-q", "-t", "2", "-c", "1", "-r", str(data_dir), "-b", f"{cfg.rbldnsd}/53",
            "-b", f"{cfg.v6(3)}/53", *zonedata.rbldnsd_zone_args()]


def _prep_unbound(cfg: LabConfig, run_dir: Path, secret: str) -> list[str]:
    conf = run_dir / "unbound.conf"
    conf.write_text(zonedata.unbound_conf(cfg, run_dir))
    run(["unbound-checkconf", str(conf)])
    return ["unbound", "-d", "-c", str(conf)]


def _prep_acng(cfg: LabConfig, run_dir: Path, secret: str) -> list[str]:
    conf_dir = run_dir / "conf"
    conf_dir.mkdir(parents=True, exist_ok=True)
    cache = cfg.apt_cache_dir
    cache.mkdir(parents=True, exist_ok=True)
    (conf_dir / "acng.conf").write_text(zonedata.acng_conf(cfg, cache, run_dir / "log"))
    (run_dir / "log").mkdir(exist_ok=True)
    return ["apt-cacher-ng", "-c", str(conf_dir), "ForeGround=1", f"pidfile={run_dir}/acng.pid",
            f"SocketPath={run_dir}/acng.socket"]


SERVICES: tuple[Service, ...] = (
    Service("knot", "authoritative DNS (RFC 2136 + TSIG)", _prep_knot,
            lambda cfg: _dns_probe(cfg.auth_dns, "lab.test", "SOA")),
    Service("rbldnsd", "blocklists", _prep_rbldnsd,
            lambda cfg: _dns_probe(cfg.rbldnsd, "2.0.0.127.zen.lab.test", "A")),
    Service("unbound", "resolver for lab hosts", _prep_unbound,
            lambda cfg: _dns_probe(cfg.resolver, "ns.lab.test", "A")),
    Service("apt-cacher-ng", "package proxy for lab hosts", _prep_acng,
            lambda cfg: tcp_probe(cfg.apt_cache, 3142)),
)


def service_dir(cfg: LabConfig, svc: Service) -> Path:
    return cfg.state_dir / "services" / svc.name


def service_pid(cfg: LabConfig, svc: Service) -> int | None:
    pid = read_pid(service_dir(cfg, svc) / "pid")
    return pid if pid is not None and pid_alive(pid) else None


def ensure_service(cfg: LabConfig, svc: Service, secret: str) -> bool:
    """Start the service unless it runs and answers. Returns True if it was started."""
    if service_pid(cfg, svc) is not None and svc.probe(cfg) is None:
        return False
    stop_service(cfg, svc)
    run_dir = service_dir(cfg, svc)
    if run_dir.exists():  # a restarted server starts from its seed data
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = svc.prepare(cfg, run_dir, secret)
    pid = start_daemon(cmd, run_dir / "pid", run_dir / "output.log", cwd=run_dir)
    deadline = time.monotonic() + 30
    problem = svc.probe(cfg)
    while problem is not None and time.monotonic() < deadline:
        if not pid_alive(pid):
            tail = (run_dir / "output.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise LabError(f"{svc.name} exited at start: {tail[0] if tail else 'no output'} "
                           f"(log: {run_dir / 'output.log'})")
        time.sleep(0.2)
        problem = svc.probe(cfg)
    if problem is not None:
        raise LabError(f"{svc.name} started but is not healthy: {problem}")
    return True


def stop_service(cfg: LabConfig, svc: Service) -> None:
    pid = read_pid(service_dir(cfg, svc) / "pid")
    if pid is not None:
        stop_pid(pid)
