#!/usr/bin/env bash
# Installs what is missing, builds, and runs Warren in the foreground with dev
# defaults (SQLite under ./var, Docker runtime, listeners on 127.0.0.x).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/prereqs.sh
bash scripts/build-images.sh
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
dotnet build src/Warren/Warren.csproj -c Release -nologo -v q
# Dev default: sign-up takes the typed address as verified (no mail relay needed). Allowed only because every
# listener of the dev defaults is on loopback; the daemon refuses it otherwise, and the banner says it is on.
# Pass --Warren:Signup:AutoVerify=false to have codes mailed (with Warren:Smtp configured).
exec ./warren serve --Warren:Signup:AutoVerify=true "$@"
