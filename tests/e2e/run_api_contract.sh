#!/usr/bin/env bash
# End-to-end API contract test of ordertrail's HTTP API against its OpenAPI document
# (schemathesis + explicit jsonschema validation), /metrics (Prometheus text and
# OpenMetrics with exemplars) and the seed order's accountability answer.
#
#   tests/e2e/run_api_contract.sh                          # needs target/debug/ordertrail (or $ORDERTRAIL_BIN)
#   tests/e2e/run_api_contract.sh --save-order order.json  # also keep GET /v1/orders/SO-10042
#   tests/e2e/run_api_contract.sh --help                   # all flags of api_contract.py
#
# Creates the virtualenv $API_E2E_VENV (default: <repo>/.venv-api) when it is
# missing or when tests/e2e/requirements-api.txt changed, then runs api_contract.py.
# Env knobs: PYTHON (interpreter for the venv, >=3.11; default python3),
# API_E2E_INSTALL_TIMEOUT (s, default 600), API_E2E_TIMEOUT (s, default 300).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${API_E2E_VENV:-$ROOT/.venv-api}"
# shellcheck source=venv.sh
source "$HERE/venv.sh"
ensure_venv api-contract "$VENV" "$HERE/requirements-api.txt" "${API_E2E_INSTALL_TIMEOUT:-600}"

# api_contract.py stops ordertrail on SIGTERM, so `timeout` still cleans up.
exec timeout -k 30 "${API_E2E_TIMEOUT:-300}" "$VENV/bin/python" "$HERE/api_contract.py" "$@"
