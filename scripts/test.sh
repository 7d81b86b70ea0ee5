#!/usr/bin/env bash
# The test command (README, .ci/run): set-up, quality gates, unit tests, local-server tests, then the lab
# tests on one lab that this script brings up and always takes down, then a check that nothing is left.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 2
export PATH="$PWD/.venv/bin:$PATH"
failed=0
note() { printf '\n==> %s\n' "$*"; }
gate() { note "$1"; shift; "$@" || { echo "FAILED: $*"; failed=1; }; }
# pytest exit 5 means "no tests collected": not a failure of this run
pyt() { python -m pytest -p no:cacheprovider "$@"; rc=$?; [ "$rc" -eq 5 ] && rc=0; [ "$rc" -eq 0 ] || failed=1; return 0; }

gate "ruff" ruff check scripts tests bench
gate "mypy (strict, the package)" mypy
gate "yamllint" yamllint -s .
gate "ansible-lint (production profile)" ansible-lint --profile production
gate "alert rules (promtool check rules)" promtool check rules roles/monitoring/files/rules/*.yml
gate "alert rule tests (promtool test rules)" promtool test rules roles/monitoring/files/rules/tests/*.yml
gate "site.yml syntax" ansible-playbook -i inventories/example site.yml --syntax-check
collection_out=$(mktemp -d)
gate "collection build (galaxy.yml)" ansible-galaxy collection build --output-path "$collection_out"
rm -rf "$collection_out"

note "unit and local-server tests"
pyt tests/unit tests/local

note "lab tests"
lab_started=0
if ! sendfleet lab status >/dev/null 2>&1; then lab_started=1; fi
cleanup() {
  if [ "$lab_started" = 1 ]; then note "lab down"; sendfleet lab down || failed=1; fi
}
trap cleanup EXIT
sendfleet lab up || { echo "FAILED: lab up"; exit 1; }
pyt tests/lab
pyt tests/infra --hosts='ansible://senders' --ansible-inventory=inventories/lab
pyt tests/e2e
cleanup
trap - EXIT
if [ "$lab_started" = 1 ]; then
  note "nothing left behind"
  pyt tests/after_down
fi
[ "$failed" = 0 ] && echo "ALL GATES AND TESTS PASSED" || echo "SOME GATES OR TESTS FAILED"
exit "$failed"
