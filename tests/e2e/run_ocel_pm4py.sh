#!/usr/bin/env bash
# The OCEL 2.0 export read by pm4py: a real ordertrail fed the simulator's orders, `ordertrail export-ocel`, and
# pm4py's object-centric directly-follows graph checked against the order API.
#
#   tests/e2e/run_ocel_pm4py.sh        # needs target/debug/ordertrail (or $ORDERTRAIL_BIN)
#
# Creates the virtualenv $OCEL_E2E_VENV (default: <repo>/.venv-ocel) when it is missing or when
# tests/e2e/requirements-ocel.txt changed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${OCEL_E2E_VENV:-$ROOT/.venv-ocel}"
# shellcheck source=venv.sh
source "$HERE/venv.sh"
ensure_venv ocel "$VENV" "$HERE/requirements-ocel.txt" "${OCEL_E2E_INSTALL_TIMEOUT:-900}"

exec timeout -k 30 "${OCEL_E2E_TIMEOUT:-300}" "$VENV/bin/python" "$HERE/ocel_pm4py.py" "$@"
