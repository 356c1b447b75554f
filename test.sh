#!/usr/bin/env bash
# Installs what is missing, builds, then runs every test. The last line is the
# plain summary "N passed, N failed" that CI reads.
set -uo pipefail
cd "$(dirname "$0")"

bash scripts/prereqs.sh || { echo "prerequisites failed"; echo "0 passed, 1 failed"; exit 1; }
bash scripts/build-images.sh || { echo "image build failed"; echo "0 passed, 1 failed"; exit 1; }

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
results=$(mktemp -d)
dotnet build Warren.sln -c Release -nologo -v q || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }

status=0
for proj in tests/*/*.Tests.csproj; do
  name=$(basename "$proj" .csproj)
  echo "== $name"
  # Test projects run one after another: the end-to-end ones share ports and the engine.
  dotnet test "$proj" -c Release --no-build -nologo \
    --logger "trx;LogFileName=$name.trx" --results-directory "$results" \
    --blame-hang-timeout 10m ${WARREN_TEST_FILTER:+--filter "$WARREN_TEST_FILTER"} || status=1
done

passed=0; failed=0
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
  p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters"); f=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
done
# A project that crashed before writing results counts as a failure.
[ $status -ne 0 ] && [ $failed -eq 0 ] && failed=1
echo "$passed passed, $failed failed"
[ $failed -eq 0 ] && [ $passed -gt 0 ]
