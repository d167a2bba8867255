#!/usr/bin/env bash
# Issue #17, must-show 1 as a script: the node-killed test N times in a row (default 10), each in a fresh
# private network namespace with only loopback (root needed for unshare -n). Prints one line per run and the
# count that passed; a failed run's log is kept under $TMPDIR.
set -u
cd "$(dirname "$0")/.."
runs=${1:-10}
passed=0
for i in $(seq 1 "$runs"); do
  log="${TMPDIR:-/tmp}/tunelab-node-kill-$i.log"
  started=$(date +%s)
  if unshare -n sh -c 'ip link set lo up && .venv/bin/pytest -m ray -q -p no:cacheprovider tests/distributed/test_ray_node_killed.py' >"$log" 2>&1; then
    passed=$((passed + 1))
    echo "run $i: passed in $(( $(date +%s) - started )) s"
    rm -f "$log"
  else
    echo "run $i: FAILED in $(( $(date +%s) - started )) s (log: $log)"
  fi
done
echo "$passed of $runs runs passed"
[ "$passed" -eq "$runs" ]
