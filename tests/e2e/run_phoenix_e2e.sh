#!/usr/bin/env bash
# End-to-end test of ordertrail against a real OTLP trace store (Arize Phoenix).
#
#   tests/e2e/run_phoenix_e2e.sh                 # needs target/debug/ordertrail (or $ORDERTRAIL_BIN)
#   tests/e2e/run_phoenix_e2e.sh --self-test     # checks the harness with a fake Python sender
#   tests/e2e/run_phoenix_e2e.sh --help          # all flags of phoenix_e2e.py
#
# Creates the virtualenv $PHOENIX_E2E_VENV (default: <repo>/.venv-e2e) when it is
# missing or when tests/e2e/requirements.txt changed, then runs phoenix_e2e.py.
# Env knobs: PYTHON (interpreter for the venv, >=3.11; default python3),
# PHOENIX_E2E_INSTALL_TIMEOUT (s, default 900), PHOENIX_E2E_TIMEOUT (s, default 900).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${PHOENIX_E2E_VENV:-$ROOT/.venv-e2e}"
# shellcheck source=venv.sh
source "$HERE/venv.sh"
ensure_venv phoenix-e2e "$VENV" "$HERE/requirements.txt" "${PHOENIX_E2E_INSTALL_TIMEOUT:-900}"

# phoenix_e2e.py stops Phoenix on SIGTERM, so `timeout` still cleans up.
exec timeout -k 30 "${PHOENIX_E2E_TIMEOUT:-900}" "$VENV/bin/python" "$HERE/phoenix_e2e.py" "$@"
