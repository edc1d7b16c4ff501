#!/usr/bin/env bash
# The Helm chart test (helm/ordertrail): the real Helm engine loads, lints and renders the chart for every ci/ and
# examples/ values file; every rendered object is validated against the Kubernetes schemas (strict); the rendered
# configuration is checked by `ordertrail validate-config`; the values schema is shown to refuse bad values.
#
#   tests/helm/run.sh        # needs target/debug/ordertrail (or $ORDERTRAIL_BIN)
#
# Creates the virtualenv $HELM_TEST_VENV (default: <repo>/.venv-helm) from tests/helm/requirements.txt.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${HELM_TEST_VENV:-$ROOT/.venv-helm}"
# shellcheck source=../e2e/venv.sh
source "$ROOT/tests/e2e/venv.sh"
ensure_venv helm-chart "$VENV" "$HERE/requirements.txt" "${HELM_TEST_INSTALL_TIMEOUT:-600}"
export ORDERTRAIL_BIN="${ORDERTRAIL_BIN:-$ROOT/target/debug/ordertrail}"
cd "$HERE"
exec timeout -k 30 "${HELM_TEST_TIMEOUT:-300}" "$VENV/bin/python" -m unittest -v test_chart
