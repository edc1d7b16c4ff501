#!/usr/bin/env bash
# The ops console in headless Chromium (Selenium over WebDriver) against the real binary: the seed scenario's
# views, screenshots of each, and the load times of each view with 10,000 open orders.
#
#   tests/e2e/run_console_browser.sh                     # needs target/debug/ordertrail (or $ORDERTRAIL_BIN)
#   tests/e2e/run_console_browser.sh --load-orders 0     # the seed scenario only
#   tests/e2e/run_console_browser.sh --help              # all flags of console_browser.py
#
# Needs Debian's chromium and chromium-driver (.ci/run installs them). Creates the virtualenv $CONSOLE_E2E_VENV
# (default: <repo>/.venv-console) when it is missing or when tests/e2e/requirements-console.txt changed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${CONSOLE_E2E_VENV:-$ROOT/.venv-console}"
# shellcheck source=venv.sh
source "$HERE/venv.sh"
ensure_venv console "$VENV" "$HERE/requirements-console.txt" "${CONSOLE_E2E_INSTALL_TIMEOUT:-600}"

exec timeout -k 30 "${CONSOLE_E2E_TIMEOUT:-600}" "$VENV/bin/python" "$HERE/console_browser.py" "$@"
