"""`sendfleet vet` on the lab: the candidate range 198.51.100.64/26, through the lab resolver (unbound ->
rbldnsd), admits exactly the 52 clean, well-neighboured addresses.

Admission goes into a scratch copy of the lab inventory's pools (the lab's own vetted_ips.yml belongs to the
main job), twice, to show it is idempotent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from sendfleet import yamlfile

REPO = Path(__file__).resolve().parents[2]
LISTED = {66, 67, 71, *range(120, 128)}
UNKNOWN = {68}  # 127.255.255.254: the list refused, never "listed", never "clean"
EXPECTED_ADMITTED = {f"198.51.100.{h}" for h in range(64, 128)} - {f"198.51.100.{h}" for h in LISTED | UNKNOWN}


def _vet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sendfleet", "vet", *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )


def test_lab_candidate_range_admits_exactly_52(lab: Any, tmp_path: Path) -> None:
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    pools = Path(lab.inventory_dir) / "group_vars" / "all" / "pools.yml"
    if pools.exists():
        shutil.copy(pools, inventory / "group_vars" / "all" / "pools.yml")
    args = ("198.51.100.64/26", "--zones", "lab", "--resolver", lab.resolver, "--format", "json")
    admit = ("--admit", str(inventory), "--pool", "transactional")
    proc = _vet(*args, *admit, "--heatmap", str(tmp_path / "lab.png"))
    assert proc.returncode == 1, proc.stderr  # some addresses are (rightly) not admitted
    report = json.loads(proc.stdout)

    assert {z["name"]: z["status"] for z in report["zones"]} == {
        "zen.lab.test": "ok",
        "l2.lab.test": "ok",
        "dbl.lab.test": "ok",
    }
    addresses = {a["ip"]: a for a in report["addresses"]}
    assert len(addresses) == 64
    admitted = {ip for ip, a in addresses.items() if a["admitted"]}
    assert admitted == EXPECTED_ADMITTED and len(admitted) == 52
    for host in LISTED:
        assert addresses[f"198.51.100.{host}"]["verdict"] == "listed"
    assert addresses["198.51.100.66"]["listings"][0]["codes"] == ["127.0.0.2"]
    assert addresses["198.51.100.67"]["listings"][0]["codes"] == ["127.0.0.4"]
    assert addresses["198.51.100.71"]["listings"][0]["codes"] == ["127.0.0.10"]
    assert addresses["198.51.100.121"]["listings"][0]["scope"] == "network"
    assert addresses["198.51.100.68"]["verdict"] == "unknown"
    assert "127.255.255.254" in addresses["198.51.100.68"]["errors"][0]["detail"]
    assert addresses["198.51.100.64"]["holder"]["asn"] == 64500
    assert addresses["198.51.100.64"]["holder"]["name"] == "SENDFLEET-LAB, ZZ"
    assert addresses["198.51.100.64"]["ptr"]["detail"] is None  # the lab resolver answers reverse lookups
    [net] = report["networks"]
    assert (net["cidr"], net["listed"], net["unknown"], net["total"]) == ("198.51.100.0/24", 11, 1, 256)
    assert (tmp_path / "lab.png").stat().st_size > 0

    vetted = inventory / "group_vars" / "all" / "vetted_ips.yml"
    entries = yamlfile.load(vetted)["vetted_ips"]["transactional"]
    assert {e["ip"] for e in entries} == EXPECTED_ADMITTED and len(entries) == 52
    assert entries[0]["resolver"] == lab.resolver and list(entries[0]["zones"]) == ["zen.lab.test", "l2.lab.test"]
    text = vetted.read_text()

    again = _vet(*args, *admit)
    assert again.returncode == 1
    assert "admitted 0 address(es)" in again.stderr and "(52 already there)" in again.stderr
    assert vetted.read_text() == text


def test_lab_poor_neighbourhood_and_sender_domains(lab: Any) -> None:
    proc = _vet(
        "198.18.7.100", "spammy.test", "shop.test", "--zones", "lab", "--resolver", lab.resolver, "--format", "json"
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    (addr,) = report["addresses"]
    assert addr["verdict"] == "clean" and not addr["admitted"] and "poor neighbourhood" in addr["reason"]
    assert report["networks"][0]["listed"] == 16
    domains = {d["domain"]: d for d in report["domains"]}
    assert domains["spammy.test"]["verdict"] == "listed"
    assert domains["shop.test"]["verdict"] == "clean" and domains["shop.test"]["admitted"] is False
