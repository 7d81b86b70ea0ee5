"""A throwaway PostgreSQL 15 cluster (Debian's postgresql package) for tests and benchmarks.

initdb + pg_ctl in a temp folder, run as the `postgres` user when we are root; the server listens on a unix socket
in that folder only (no TCP) with trust authentication, and is stopped by its postmaster PID (fast shutdown, then
SIGKILL), whatever happened meanwhile.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.pid: int | None = None

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.root} port=5432 user=postgres dbname={dbname}"

    def _argv(self, *argv: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)

    def start(self) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        subprocess.run(self._argv(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
                       check=True, capture_output=True)
        opts = f"-k {self.root} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
        proc = subprocess.run(self._argv(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                                         "-o", opts, "-w", "-t", "60", "start"),
                              capture_output=True, text=True, check=False)
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists():
            self.pid = int(pidfile.read_text().split()[0])
        if proc.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {proc.stderr.strip()} {log[-2000:]}")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.conninfo(name)

    def stop(self) -> None:
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGINT)  # fast shutdown
        except ProcessLookupError:
            self.pid = None
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None


@contextmanager
def cluster() -> Iterator[Cluster]:
    """A started cluster, stopped and removed on exit."""
    assert (BIN / "initdb").exists(), f"{BIN}/initdb is missing: install postgresql (scripts/setup.sh)"
    root = Path(tempfile.mkdtemp(prefix="sf-pg-"))
    os.chmod(root, 0o755)
    c = Cluster(root)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)
