#!/usr/bin/env bash
# The nightly GPU job's compare step: `lstmbench compare BASELINE RESULTS`, its sentences on the run's summary
# page, and its exit code (3 = regression, 2 = bad input). Without baseline rows (no GPU baseline committed yet),
# nothing can be compared: the night's rows are copied into PROPOSED (uploaded as an artifact, to commit as the
# baseline), a notice says so, and the step exits 0, so that the nights before a baseline are not red.
# Usage: scripts/nightly-compare.sh BASELINE RESULTS [PROPOSED]   (LSTMBENCH: the lstmbench to run)
set -euo pipefail
baseline="$1"
results="$2"
proposed="${3:-proposed-baseline}"
lstmbench="${LSTMBENCH:-lstmbench}"
summary="${GITHUB_STEP_SUMMARY:-/dev/null}"
artifact="proposed-baseline${GITHUB_RUN_ID:+-$GITHUB_RUN_ID}"  # as the workflow uploads it

# row files holding at least one row (compare reads the .jsonl files under a folder, blank lines aside)
rows_in() {
  [ -d "$1" ] || return 0
  find "$1" -type f -name '*.jsonl' -exec grep -l '[^[:space:]]' {} + 2>/dev/null | sort || true
}

if [ -z "$(rows_in "$baseline")" ]; then
  mapfile -t files < <(rows_in "$results")
  if [ "${#files[@]}" -eq 0 ]; then
    echo "::error::no baseline rows in $baseline, and no rows in $results to propose as one"
    exit 2
  fi
  mkdir -p "$proposed"
  cp "${files[@]}" "$proposed/"
  rows=$(cat "${files[@]}" | grep -c '[^[:space:]]')
  echo "::notice::no baseline rows in $baseline: nothing compared; this night's $rows rows are proposed as the baseline (artifact $artifact)"
  {
    echo "## lstmbench compare: no baseline in $baseline"
    echo
    echo "Nothing was compared. This night's rows are proposed as the baseline: download the artifact"
    echo "\`$artifact\`, and if the night was sound (no failed runs, a quiet GPU), commit its files:"
    echo
    echo '```'
    echo "unzip $artifact.zip -d $baseline/"
    echo "git add $baseline && git commit -m \"GPU baseline: <GPU model>, <date>\""
    echo '```'
    echo
    for f in "${files[@]}"; do
      echo "- \`$(basename "$f")\`: $(grep -c '[^[:space:]]' "$f") rows"
    done
  } >> "$summary"
  exit 0
fi

set +e
"$lstmbench" compare "$baseline" "$results" > compare.txt 2>&1
status=$?
set -e
cat compare.txt
# the compare sentences (and its table) on the run's summary page
{
  echo "## lstmbench compare: $baseline -> this night (exit $status)"
  echo
  echo '```'
  cat compare.txt
  echo '```'
} >> "$summary"
case "$status" in
  0) ;;
  3) echo "::error::lstmbench compare found a regression against $baseline" ;;
  *) echo "::error::lstmbench compare failed with exit code $status" ;;
esac
exit "$status"
