#!/usr/bin/env bash
# Measure a suite for the committed reference results: run it from a clean clone of HEAD (so editing the work
# tree cannot touch a running benchmark), writing rows into this checkout's reference/<suite>/, then report that
# suite's folder alone. Usage: scripts/bench-clean.sh SUITE [run args]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
suite="$1"; shift
clone="$(mktemp -d)"
git -C "$here" worktree add -q --detach "$clone" HEAD
trap 'git -C "$here" worktree remove --force "$clone"' EXIT
cd "$clone"  # python -m puts the clone first on sys.path, and spawned runs inherit it
name="$("$here/.venv/bin/python" -c "import sys; from lstmbench.suite.load import load_suite; print(load_suite(sys.argv[1], allow_code=True).name)" "$suite")"
"$here/.venv/bin/python" -m lstmbench run "$suite" --out "$here/reference" "$@"
"$here/.venv/bin/python" -m lstmbench report "$here/reference/$name"
