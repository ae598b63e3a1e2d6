#!/usr/bin/env bash
# Install est-gateway (and the in-tree vendor plugins) into .venv and start it in local test mode (embedded CA, nothing to configure).
# The install is skipped when it was done for the same pyproject.toml files (the packages are
# installed editable: a changed source file needs no reinstall, a changed dependency does).
# Usage: scripts/local.sh [--port N] [--state-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
say() { echo "local.sh: $*" >&2; }

[ -x .venv/bin/python ] || say "creating the virtual environment .venv"
ensure_venv
stamp=.venv/.est-gateway-installed
wanted=$(sha256sum pyproject.toml plugins/*/pyproject.toml)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && [ -x .venv/bin/est-gateway ]; then
    say "est-gateway is installed in .venv and no pyproject.toml changed since: not reinstalling"
else
    say "installing est-gateway and its plugins into .venv with pip (a minute or so the first time) ..."
    started=$SECONDS
    install_gateway
    printf '%s\n' "$wanted" > "$stamp"
    say "installed in $((SECONDS - started)) s"
fi
say "starting: est-gateway local $*"
exec .venv/bin/est-gateway local "$@"
