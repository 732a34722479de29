#!/usr/bin/env bash
# The busy-machine experiment: N pairs of one suite, each run once on the quiet machine and once while a plain
# `while True: pass` Python process at normal priority shares the CPU for the whole run; then each side's
# recommendation, by this checkout and (given a commit) by that commit's code on the same rows. The loaded runs
# pass RUN_ARGS (default: no reruns, no waiting; under a load that lasts the whole suite they only add time);
# LOAD replaces the load's Python code (e.g. a spinner that pauses, for a load that comes and goes).
# Usage: scripts/busy-pairs.sh SUITE OUT N [OLD_COMMIT]   (nothing else may run on the machine meanwhile)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
suite="$1"; out="$2"; pairs="$3"; old="${4:-}"
py="$here/.venv/bin/python"
name="$("$py" -c "import sys; from lstmbench.suite.load import load_suite; print(load_suite(sys.argv[1]).name)" "$suite")"
if [ -n "$old" ]; then
  oldtree="$(mktemp -d)"
  git -C "$here" worktree add -q --detach "$oldtree" "$old"
  trap 'git -C "$here" worktree remove --force "$oldtree"' EXIT
fi
said() {  # said SIDE FOLDER: the recommendation's line, by this code and by the old one
  local new oldline=""
  new="$("$py" -m lstmbench recommend --pool "$2" 2>/dev/null | grep -E '^  (Recommended|Undecided)' | cut -c1-90 || true)"
  if [ -n "$old" ]; then
    oldline="$(cd "$oldtree" && "$py" -m lstmbench recommend --pool "$2" 2>/dev/null | grep -E '^  (Recommended|Undecided)' | cut -c1-60 || true)"
  fi
  printf '%s\t%s\t%s\t%s\n' "$pair" "$1" "${new# }" "${oldline# }"
}
for pair in $(seq 1 "$pairs"); do
  "$py" -m lstmbench run "$suite" --out "$out/quiet-$pair" > /dev/null 2>&1
  "$py" -c "${LOAD:-while True: pass}" & spin=$!
  "$py" -m lstmbench run "$suite" --out "$out/loaded-$pair" ${RUN_ARGS:---rerun-disturbed 0 --settle 0} > /dev/null 2>&1 || true
  kill "$spin"; wait "$spin" 2>/dev/null || true
  said quiet "$out/quiet-$pair/$name"
  said loaded "$out/loaded-$pair/$name"
done
