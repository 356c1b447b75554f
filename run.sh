#!/usr/bin/env bash
# Installs what is missing, builds, and runs Warren in the foreground with dev
# defaults (SQLite under ./var, Docker runtime, listeners on 127.0.0.x).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/prereqs.sh
bash scripts/build-images.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build src/Warren/Warren.csproj -c Release -nologo -v q
exec ./warren serve "$@"
