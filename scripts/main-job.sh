#!/usr/bin/env bash
# The main job of sendfleet, on the lab: lab up, vet the lab's candidate range and admit the clean IPs,
# assign them to senders, converge site.yml, then the infra checks and a readiness summary.
#   --converge-only   stop after site.yml (used by the lab tests, which run their own checks)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_FORCE_COLOR=0
INV=inventories/lab
ZONES=scripts/sendfleet/zones/lab.yml
converge_only=0
[ "${1:-}" = "--converge-only" ] && converge_only=1

step() { printf '\n==> %s\n' "$*"; }

step "lab up"
sendfleet lab up

step "vet the lab's candidate range; admit the clean, well-neighboured IPs into two pools"
# vet exits 1 when some addresses are not admitted (expected here: the lab seeds listings); 2/3 are errors.
for spec in "198.51.100.64/27 transactional" "198.51.100.96/27 marketing"; do
  set -- $spec
  rc=0
  sendfleet vet "$1" --zones "$ZONES" --resolver 198.51.100.4 --admit "$INV" --pool "$2" \
    --format table --heatmap "$INV/heatmap-$2.png" || rc=$?
  [ "$rc" -le 1 ] || { echo "main-job: vet of $1 failed ($rc)" >&2; exit "$rc"; }
done

step "assign vetted IPs to the senders"
sendfleet pool assign -i "$INV" --pool transactional --per-host 3
sendfleet pool assign -i "$INV" --pool marketing --per-host 2

step "ansible-playbook site.yml"
ansible-playbook -i "$INV" site.yml

[ "$converge_only" = 1 ] && exit 0

step "infra checks (testinfra)"
python -m pytest -q tests/infra --hosts='ansible://senders' --ansible-inventory="$INV" -p no:cacheprovider

step "readiness: mail through every sending IP, checked at the sink"
sendfleet readiness -i "$INV"
