"""The base role's firewall and the sending_ips role's address script, in throwaway network namespaces.

No lab needed (root and nft/ip are): two namespaces joined by a veth pair; the "sender" side loads the
nftables.conf rendered from roles/base/templates with the role's variables, listens on 22/25/587, and the
"network" side connects from an admin, an app and an outsider address. The address script
(roles/sending_ips/files/sendfleet-sending-ips) is run inside the sender namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
SCRIPT = REPO / "roles" / "sending_ips" / "files" / "sendfleet-sending-ips"
SENDER = "198.51.100.10"
ADMIN = "198.51.100.1"
APP = "198.51.100.32"
OUTSIDER = "198.51.100.40"


def run(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr}{proc.stdout}")
    return proc


@pytest.fixture(scope="module")
def netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces)")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed")
    tag = uuid.uuid4().hex[:6]
    srv, cli = f"sft-srv-{tag}", f"sft-cli-{tag}"
    run("ip", "netns", "add", srv)
    run("ip", "netns", "add", cli)
    try:
        run("ip", "link", "add", f"sfv{tag}", "type", "veth", "peer", "name", f"sfp{tag}")
        run("ip", "link", "set", f"sfv{tag}", "netns", srv)
        run("ip", "link", "set", f"sfp{tag}", "netns", cli)
        run("ip", "-n", srv, "link", "set", f"sfv{tag}", "name", "eth0")
        run("ip", "-n", srv, "addr", "add", f"{SENDER}/24", "dev", "eth0")
        for ns, dev in ((srv, "eth0"), (cli, f"sfp{tag}")):
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "link", "set", dev, "up")
        for addr in (ADMIN, APP, OUTSIDER):
            run("ip", "-n", cli, "addr", "add", f"{addr}/24", "dev", f"sfp{tag}")
        yield srv, cli
    finally:
        run("ip", "netns", "del", srv, check=False)
        run("ip", "netns", "del", cli, check=False)


def render_nftables(tmp: Path) -> Path:
    """roles/base/templates/nftables.conf.j2 with the role's defaults and the lab's networks."""
    out = tmp / "nftables.conf"
    playbook = tmp / "render.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - hosts: localhost
          gather_facts: false
          vars:
            admin_networks: [198.51.100.0/29, "2001:db8:5f::/64"]
            app_networks: [198.51.100.32/29]
          tasks:
            - ansible.builtin.include_vars: {REPO}/roles/base/defaults/main.yml
            - ansible.builtin.template:
                src: {REPO}/roles/base/templates/nftables.conf.j2
                dest: {out}
                mode: "0600"
        """))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(playbook)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return out


def can_connect(cli: str, source: str, port: int) -> bool:
    code = (f"import socket; s=socket.socket(); s.settimeout(2); s.bind(({source!r},0)); "
            f"print(s.connect_ex(({SENDER!r},{port})))")
    out = run("ip", "netns", "exec", cli, sys.executable, "-c", code).stdout.strip()
    return out == "0"


def test_firewall_admits_exactly_the_designed_traffic(netns: tuple[str, str], tmp_path: Path) -> None:
    srv, cli = netns
    conf = render_nftables(tmp_path)
    run("ip", "netns", "exec", srv, "nft", "-c", "-f", str(conf))
    run("ip", "netns", "exec", srv, "nft", "-f", str(conf))
    listener = subprocess.Popen(
        ["ip", "netns", "exec", srv, sys.executable, "-c", textwrap.dedent("""\
            import select, socket
            socks = []
            for port in (22, 25, 587):
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", port)); s.listen(16); socks.append(s)
            print("ready", flush=True)
            while True:
                for s in select.select(socks, [], [])[0]:
                    s.accept()[0].close()
            """)], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        seen = {(src, port): can_connect(cli, src, port) for src in (ADMIN, APP, OUTSIDER) for port in (22, 25, 587)}
        expected = {(ADMIN, 22): True, (ADMIN, 25): False, (ADMIN, 587): False,
                    (APP, 22): False, (APP, 25): True, (APP, 587): True,
                    (OUTSIDER, 22): False, (OUTSIDER, 25): False, (OUTSIDER, 587): False}
        assert seen == expected, json.dumps({f"{s}:{p}": v for (s, p), v in seen.items()})
        # Outbound is open: the sender reaches the other side's port 25 (nothing listens: refused, not dropped).
        out = run("ip", "netns", "exec", srv, sys.executable, "-c",
                  f"import socket; s=socket.socket(); s.settimeout(2); print(s.connect_ex(({ADMIN!r}, 25)))").stdout
        assert out.strip() == str(111), f"outbound SMTP from the sender was not let out: {out}"
    finally:
        listener.kill()
        listener.wait()


def test_address_script_applies_checks_and_removes(netns: tuple[str, str], tmp_path: Path) -> None:
    srv, _ = netns
    conf, state = tmp_path / "sending-ips.conf", tmp_path / "applied"
    env = {**os.environ, "SENDFLEET_SENDING_IPS_CONF": str(conf), "SENDFLEET_SENDING_IPS_STATE": str(state)}

    def script(verb: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", srv, "sh", str(SCRIPT), verb, check=check, env=env)

    def present() -> set[str]:
        out = run("ip", "-n", srv, "-o", "addr", "show", "dev", "eth0").stdout
        return {line.split()[3] for line in out.splitlines()}

    conf.write_text("interface eth0\naddress 198.51.100.72/32\naddress 198.51.100.73/32\n")
    assert script("check", check=False).returncode == 1
    script("apply")
    assert {"198.51.100.72/32", "198.51.100.73/32"} <= present()
    assert script("check").returncode == 0
    script("apply")  # idempotent
    assert script("check").returncode == 0

    conf.write_text("interface eth0\naddress 198.51.100.73/32\n")
    stale = script("check", check=False)
    assert stale.returncode == 1 and "stale 198.51.100.72/32" in stale.stdout
    script("apply")
    assert "198.51.100.72/32" not in present() and "198.51.100.73/32" in present()
    assert f"{SENDER}/24" in present(), "the script touched an address it does not manage"

    script("remove")
    assert "198.51.100.73/32" not in present() and f"{SENDER}/24" in present()
