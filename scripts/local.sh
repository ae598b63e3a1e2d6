#!/usr/bin/env bash
# Install est-gateway (and the in-tree vendor plugins) into .venv and start it in local test mode (embedded CA, nothing to configure).
# Usage: scripts/local.sh [--port N] [--state-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv
install_gateway
exec .venv/bin/est-gateway local "$@"
