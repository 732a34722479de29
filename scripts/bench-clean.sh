#!/usr/bin/env bash
# Run a suite from a clean clone of HEAD (so editing the work tree cannot touch a running benchmark),
# writing rows and the report into this checkout's results/. Usage: scripts/bench-clean.sh SUITE [run args]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
suite="$1"; shift
clone="$(mktemp -d)"
git -C "$here" worktree add -q --detach "$clone" HEAD
trap 'git -C "$here" worktree remove --force "$clone"' EXIT
cd "$clone"  # python -m puts the clone first on sys.path, and spawned runs inherit it
"$here/.venv/bin/python" -m lstmbench run "$suite" --out "$here/results" "$@"
"$here/.venv/bin/python" -m lstmbench report "$here/results"
