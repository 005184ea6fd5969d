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
# ISO3D_TEST_PARALLEL=N runs up to N lanes at once (default: the number of CPUs): each lane is one pytest process
# that keeps one core busy (one torch thread), so on a 2-core machine two lanes together take about half the wall
# time of one after the other. A lane's output is printed whole when it ends (lines never interleave).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "backend,training,dev" || { echo "test.sh: installing failed" >&2; exit 1; }
python=.venv/bin/python
# Bytecode caches on for the lanes, also where the caller's environment turns them off: without them every lane
# compiles the project's modules again and pytest rewrites every test module's asserts again (~2.2 CPU s of the
# unit lane's collection on a 2-core VM, bench/RESULTS.md 2026-12-03). __pycache__ is ignored by git and build_addon.
unset PYTHONDONTWRITEBYTECODE

failed=()
lane_dir=$(mktemp -d)
trap 'rm -rf "$lane_dir"' EXIT
parallel=${ISO3D_TEST_PARALLEL:-$(nproc 2>/dev/null || echo 1)}
running=0
run_lane() {  # NAME [pytest arguments...]: in the background; its output and exit status land in $lane_dir
  local name=$1
  shift
  if [ "$running" -ge "$parallel" ]; then wait -n; running=$((running - 1)); fi
  (
    started=$(date +%s)
    { echo "== test.sh: lane ${name}: pytest $*"
      "$python" -m pytest "$@"
      status=$?
      echo "== test.sh: lane ${name}: exit ${status} after $(( $(date +%s) - started )) s"
    } >"$lane_dir/$name.log" 2>&1
    echo "$status" >"$lane_dir/$name.status"
    flock "$lane_dir/print.lock" cat "$lane_dir/$name.log"
  ) &
  running=$((running + 1))
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

wait
for lane in ${ISO3D_TEST_LANES:-unit integration blender}; do
  [ -f "$lane_dir/$lane.status" ] || continue
  status=$(cat "$lane_dir/$lane.status")
  # 5: nothing selected (extra arguments that name no test of this lane)
  if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then failed+=("$lane"); fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "test.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "test.sh: all passed"
