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
REQ="$HERE/requirements.txt"
PY="${PYTHON:-python3}"
STAMP="$VENV/.e2e-requirements.sha256"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"

if [[ ! -x "$VENV/bin/python" || "$want" != "$have" ]]; then
  if ! "$PY" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 15) else 1)'; then
    echo "phoenix-e2e: $PY is $("$PY" -V 2>&1); arize-phoenix needs Python >=3.11,<3.15 (set PYTHON=...)" >&2
    exit 2
  fi
  echo "phoenix-e2e: installing $REQ into $VENV" >&2
  t0=$SECONDS
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  # Keep the venv out of git even without a .gitignore entry in the repo.
  printf '*\n' > "$VENV/.gitignore"
  rm -f "$STAMP"
  timeout -k 30 "${PHOENIX_E2E_INSTALL_TIMEOUT:-900}" \
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQ"
  echo "$want" > "$STAMP"
  echo "phoenix-e2e: venv ready in $((SECONDS - t0))s" >&2
fi

# phoenix_e2e.py stops Phoenix on SIGTERM, so `timeout` still cleans up.
exec timeout -k 30 "${PHOENIX_E2E_TIMEOUT:-900}" "$VENV/bin/python" "$HERE/phoenix_e2e.py" "$@"
