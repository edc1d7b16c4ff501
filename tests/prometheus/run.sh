#!/usr/bin/env bash
# The alerting rules and the dashboard on real Prometheus engines (Debian's `prometheus` package, with promtool):
#   1. promtool checks the rules and runs their unit tests (alerts_test.yaml);
#   2. a real Prometheus scrapes a real ordertrail fed the seed scenario; every alert expression and dashboard
#      query runs on its HTTP API, the core panels have data, and the seed order's alerts fire (live_prometheus.py).
#
#   tests/prometheus/run.sh        # needs target/debug/ordertrail (or $ORDERTRAIL_BIN), promtool and prometheus
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
for tool in promtool prometheus; do
  command -v "$tool" >/dev/null || { echo "prometheus test: $tool not found (Debian package prometheus)" >&2; exit 2; }
done
promtool check rules "$ROOT/helm/ordertrail/files/ordertrail-alerts.yaml"
(cd "$HERE" && promtool test rules alerts_test.yaml)
export ORDERTRAIL_BIN="${ORDERTRAIL_BIN:-$ROOT/target/debug/ordertrail}"
exec timeout -k 30 "${PROMETHEUS_TEST_TIMEOUT:-300}" python3 "$HERE/live_prometheus.py"
