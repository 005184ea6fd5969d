#!/usr/bin/env bash
# Installs everything the tests need into .venv, lints with ruff, then runs the test lanes one after another, each
# in its own pytest process (Blender as a module and torch-heavy tests never share one; tests/conftest.py):
#   unit         -m "not integration and not blender and not slow"   in-process tests (the fast lane)
#   integration  -m "integration and not blender and not slow"       child processes and real sockets
#   blender      -m "blender and not slow"                            bpy in the test process
# Every lane runs even when an earlier one failed; the script fails at the end naming each lane (and lint) that
# failed. Extra arguments go to every lane's pytest: `bash scripts/test.sh tests/test_cli.py` runs that file's
# tests in their lanes (a lane with nothing selected passes), `bash scripts/test.sh -k preview` likewise; a -m
# replaces "not slow" in every lane (`bash scripts/test.sh -m slow`: the slow tests, lane by lane).
# ISO3D_TEST_LANES="unit integration" chooses lanes (default: all three); lint runs only without arguments.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "backend,training,dev" || { echo "test.sh: installing failed" >&2; exit 1; }
python=.venv/bin/python

failed=()
run_lane() {  # NAME [pytest arguments...]
  local name=$1 started status
  shift
  started=$(date +%s)
  echo "== test.sh: lane ${name}: pytest $*"
  "$python" -m pytest "$@"
  status=$?
  echo "== test.sh: lane ${name}: exit ${status} after $(( $(date +%s) - started )) s"
  # 5: nothing selected (extra arguments that name no test of this lane)
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then failed+=("$name"); fi
}

if [ $# -eq 0 ]; then
  echo "== test.sh: lint: ruff check"
  "$python" -m ruff check . || failed+=(lint)
fi

# A -m of the caller's narrows every lane (default "not slow"); the other arguments go to every lane as they are.
selection="not slow"
passed=()
while [ $# -gt 0 ]; do
  case "$1" in
    -m) selection="$2"; shift 2 ;;
    -m*) selection="${1#-m}"; shift ;;
    *) passed+=("$1"); shift ;;
  esac
done
for lane in ${ISO3D_TEST_LANES:-unit integration blender}; do
  case "$lane" in
    unit) run_lane unit -m "(${selection}) and not integration and not blender" ${passed[@]+"${passed[@]}"} ;;
    integration) run_lane integration -m "(${selection}) and integration and not blender" ${passed[@]+"${passed[@]}"} ;;
    blender) run_lane blender -m "(${selection}) and blender" ${passed[@]+"${passed[@]}"} ;;
    *) echo "test.sh: unknown lane ${lane} (unit, integration, blender)" >&2; failed+=("$lane") ;;
  esac
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "test.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "test.sh: all passed"
