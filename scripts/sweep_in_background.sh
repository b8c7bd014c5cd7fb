#!/usr/bin/env bash
# A sweep longer than a session or a lease: DRIVERS copies of `ttsopt sweep` on one store (they
# lease its chunks, so no unit is computed twice), and a loop that exports the store's snapshot
# every EVERY seconds and, with --commit, commits it to git, so a machine that disappears loses
# at most EVERY seconds of work. Resume anywhere with `ttsopt sweep CONFIG --from SNAPSHOT`.
#
#   usage: scripts/sweep_in_background.sh CONFIG SNAPSHOT [--drivers N] [--every S] [--commit] [--logs DIR] [-- SWEEP_ARGS...]
#   e.g.   scripts/sweep_in_background.sh arith-router benchmarks/results/arith-router --every 1800 --commit -- --from benchmarks/results/arith-router --no-embeddings
#
# Each driver runs one compute thread (TTSOPT_NUM_THREADS=1: small models decode faster as one
# single-thread process per core than as one multi-thread process); DRIVERS defaults to the core
# count. The store is SWEEP_ARGS' --store, else runs/<CONFIG's file name>/outcomes.sqlite. Logs:
# DIR/sweep-K.log and DIR/snapshot.log (default: logs/ next to the store). The loop exports once
# more after the drivers finish, then ends. Stop: the `kill` line this prints (a unit in flight
# is lost, never half-written).
set -euo pipefail

usage() { sed -n '7,8p' "$0" | sed 's/^#   *//' >&2; exit 2; }
[ $# -ge 2 ] || usage
CONFIG=$1 SNAPSHOT=$2
shift 2
DRIVERS=$(python3 -c "import os; print(os.cpu_count() or 1)") EVERY=1800 COMMIT=0 LOGS=""
while [ $# -gt 0 ]; do
  case $1 in
    --drivers) DRIVERS=$2; shift 2 ;;
    --every) EVERY=$2; shift 2 ;;
    --commit) COMMIT=1; shift ;;
    --logs) LOGS=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option: $1" >&2; usage ;;
  esac
done
SWEEP_ARGS=("$@")
NAME=$(basename "$CONFIG"); NAME=${NAME%.yaml}; NAME=${NAME%.yml}; NAME=${NAME%.toml}
STORE=""
for ((i = 0; i < ${#SWEEP_ARGS[@]}; i++)); do
  case ${SWEEP_ARGS[i]} in
    --store) STORE=${SWEEP_ARGS[i + 1]:-} ;;
    --store=*) STORE=${SWEEP_ARGS[i]#--store=} ;;
  esac
done
if [ -z "$STORE" ]; then
  STORE=runs/$NAME/outcomes.sqlite
  SWEEP_ARGS+=(--store "$STORE")
fi
LOGS=${LOGS:-$(dirname "$STORE")/logs}
mkdir -p "$LOGS" "$SNAPSHOT"
if [ "$COMMIT" = 1 ] && ! git -C "$SNAPSHOT" rev-parse --git-dir >/dev/null 2>&1; then
  echo "--commit: $SNAPSHOT is not inside a git work tree" >&2
  exit 2
fi

export TTSOPT_NUM_THREADS=1 OMP_NUM_THREADS=1
pids=()
for k in $(seq 1 "$DRIVERS"); do
  nohup python3 -m ttsopt.cli sweep "$CONFIG" "${SWEEP_ARGS[@]}" >> "$LOGS/sweep-$k.log" 2>&1 &
  pids+=($!)
done

export STORE SNAPSHOT LOGS COMMIT NAME EVERY
export DRIVER_PIDS="${pids[*]}"
nohup bash -c '
  set -u
  while true; do
    sleep "$EVERY"
    alive=0
    for p in $DRIVER_PIDS; do kill -0 "$p" 2>/dev/null && alive=1; done
    if python3 -m ttsopt.cli snapshot "$STORE" --out "$SNAPSHOT" >> "$LOGS/snapshot.log" 2>&1; then
      counts=$(python3 -c "import json, sys; c = json.load(open(sys.argv[1]))[\"counts\"]; print(c[\"units\"], \"units,\", c[\"outcomes\"], \"outcome rows\")" "$SNAPSHOT/snapshot.json")
      if [ "$COMMIT" = 1 ]; then
        (cd "$SNAPSHOT" && git add -A . && git commit -q -m "$NAME sweep: snapshot ($counts)" -- .) >> "$LOGS/snapshot.log" 2>&1 || true
      fi
      echo "$(date -u +%FT%TZ) snapshot: $counts" >> "$LOGS/snapshot.log"
    fi
    [ "$alive" = 1 ] || { echo "$(date -u +%FT%TZ) drivers finished" >> "$LOGS/snapshot.log"; break; }
  done' > /dev/null 2>&1 &
loop=$!
echo "drivers: ${pids[*]} (logs $LOGS/sweep-K.log); snapshot loop: $loop, every ${EVERY} s$([ "$COMMIT" = 1 ] && echo ', committed to git')"
echo "stop: kill ${pids[*]} $loop"
