#!/usr/bin/env python3
"""A real Prometheus (Debian's `prometheus`) scraping a real ordertrail fed the seed scenario.

Flow:
  1. ordertrail (`ordertrail run`, the embedded default with `sla.detection_delay: 3s`) on free loopback ports;
  2. Prometheus scraping its /metrics every second, with the alerting rules of
     helm/ordertrail/files/ordertrail-alerts.yaml (their `for:` set to 0s, so that a short test sees them fire);
  3. `ordertrail simulate --orders 3`: the seed order SO-10042 stalls and breaches;
  4. checks:
     - every alert expression and every query of helm/ordertrail/files/ordertrail-dashboard.json (Grafana's
       macros replaced by fixed ranges) parses and runs on Prometheus' HTTP API;
     - the core panels return data;
     - the seed order's alerts fire: OrderSlaBreached for its breached target and owner, and OrdersStalled for
       its stage and the owner of its next action, as the order API reports them.
Exit 0 when every check passed, 1 on a failed check, 2 on a harness error.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from api_contract import Server  # noqa: E402  (the e2e harness's ordertrail runner)
from harness import (  # noqa: E402
    EXIT_ASSERT, EXIT_HARNESS, EXIT_OK, HarnessError, free_ports, http_get, kill_group, log, ordertrail_bin,
    run_cmd, set_log_prefix, stop_on_signals, tail,
)

set_log_prefix("prometheus")
ALERTS = ROOT / "helm" / "ordertrail" / "files" / "ordertrail-alerts.yaml"
DASHBOARD = ROOT / "helm" / "ordertrail" / "files" / "ordertrail-dashboard.json"
SEED_ORDER = "SO-10042"
# Grafana's macros and the dashboard's variable, as a short test can evaluate them.
MACROS = {"$__rate_interval": "30s", "$__range": "5m", "$__interval": "15s", "$job": ".*"}
# Panels that must show data once the seed scenario ran (by title).
CORE_PANELS = [
    "Open orders by stage",
    "Stalled orders by stage and owner of the next action",
    "SLA met, late and breached by target, since ordertrail started",
    "Open exceptions by class and owner",
    "Correlation coverage by service and route",
    "Spans in and out",
    "Memory and CPU",
    "Version",
]


class CheckFailed(Exception):
    pass


def query(prom: str, expr: str) -> list:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, _, body = http_get(url)
    answer = json.loads(body)
    if status != 200 or answer.get("status") != "success":
        raise CheckFailed(f"query failed ({status}): {expr}\n{answer.get('error', body[:300])}")
    return answer["data"]["result"]


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for macro, value in MACROS.items():
                expr = expr.replace(macro, value)
            found.append((panel["title"], expr))
    return found


def alert_expressions(rules_text: str) -> list[tuple[str, str]]:
    """(alert, expression) from the rules file, read without a YAML library: each `- alert:` and the `expr:` that
    follows it, folded (`>-`) or on one line."""
    found, name, lines = [], None, rules_text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*- alert: (\S+)", line)
        if m:
            name = m.group(1)
        m = re.match(r"(\s*)expr: (.*)$", line)
        if m and name:
            if m.group(2).strip() == ">-":
                indent, body = None, []
                for follow in lines[i + 1:]:
                    if not follow.strip():
                        break
                    lead = len(follow) - len(follow.lstrip())
                    indent = lead if indent is None else indent
                    if lead < indent:
                        break
                    body.append(follow.strip())
                found.append((name, " ".join(body)))
            else:
                found.append((name, m.group(2).strip()))
    return found


def firing(prom: str) -> list[dict]:
    _, _, body = http_get(f"{prom}/api/v1/alerts")
    return [a for a in json.loads(body)["data"]["alerts"] if a["state"] == "firing"]


def main() -> int:
    stop_on_signals()
    bin_path = ordertrail_bin()
    prometheus = os.environ.get("PROMETHEUS_BIN", "prometheus")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    env.update(NO_COLOR="1", NO_PROXY="127.0.0.1,localhost")
    workdir = Path(tempfile.mkdtemp(prefix="prometheus-live-"))
    srv = Server(bin_path, workdir, env)
    prom_proc = None
    failures: list[str] = []
    try:
        code, default = run_cmd([bin_path, "print-default-config"], 30, workdir / "default.yaml", cwd=workdir, env=env)
        if code != 0 or "\n  detection_delay: 10s\n" not in default:
            raise HarnessError("print-default-config gave no `  detection_delay: 10s` line to shorten")
        config = workdir / "config.yaml"
        config.write_text(default.replace("\n  detection_delay: 10s\n", "\n  detection_delay: 3s\n"))
        srv.start(config, 60)

        rules = workdir / "alerts.yaml"
        rules_text = ALERTS.read_text()
        rules.write_text(re.sub(r"(?m)^(\s+)for: \S+$", r"\1for: 0s", rules_text))
        (prom_port,) = free_ports(1)
        prom = f"http://127.0.0.1:{prom_port}"
        (workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: [{rules}]\n"
            "scrape_configs:\n  - job_name: ordertrail\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{srv.ports['api_http']}']}}]\n"
        )
        argv = [prometheus, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}"]
        log("starting " + " ".join(argv))
        with open(workdir / "prometheus.log", "wb") as out:
            prom_proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True, cwd=workdir)
        deadline = time.monotonic() + 60
        while True:
            try:
                if http_get(f"{prom}/-/ready", accept="text/plain")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or prom_proc.poll() is not None:
                raise HarnessError("prometheus not ready:\n" + tail(workdir / "prometheus.log", 20))
            time.sleep(0.2)
        # A few scrapes before the scenario, so that counters are seen at 0 before they rise.
        time.sleep(3)

        code, out = run_cmd([bin_path, "simulate", "--endpoint", srv.otlp_grpc, "--orders", "3"], 90,
                            workdir / "simulate.out", cwd=workdir, env=env)
        if code != 0 or SEED_ORDER not in out.split():
            raise HarnessError(f"simulate exited {code}:\n{out[-2000:]}")

        # The seed order as the API tells it: what is breached, where it stands, whose move it is.
        deadline = time.monotonic() + 60
        while True:
            order = json.loads(http_get(f"{srv.api}/v1/orders/{SEED_ORDER}")[2])
            breached = [s for s in order.get("slas", []) if s.get("status") == "breached"]
            if breached and order.get("next"):
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"{SEED_ORDER} not breached within 60 s: {json.dumps(order)[:800]}")
            time.sleep(0.5)
        stage, owner = order.get("stage"), order["next"]["owner"]
        log(f"{SEED_ORDER}: stage {stage}, next action {order['next']['milestone']} owned by {owner}, breached "
            + ", ".join(s["target"] for s in breached))

        expected = [("OrderSlaBreached", {"target": s["target"]}) for s in breached]
        expected.append(("OrdersStalled", {"stage": stage, "owner": owner, "team": owner}))
        deadline = time.monotonic() + 60
        while True:
            alerts = firing(prom)
            missing = [(name, labels) for name, labels in expected
                       if not any(a["labels"].get("alertname") == name
                                  and all(a["labels"].get(k) == v for k, v in labels.items()) for a in alerts)]
            if not missing:
                break
            if time.monotonic() > deadline:
                failures.append(f"alerts not firing within 60 s: {missing}; firing: "
                                + json.dumps([a["labels"] for a in alerts]))
                break
            time.sleep(1)
        for a in firing(prom):
            log(f"firing: {a['labels'].get('alertname')} {json.dumps(a['labels'], sort_keys=True)}")
        # Rates need two samples of a series after the scenario: a few more scrapes.
        time.sleep(5)

        for name, expr in alert_expressions(rules_text):
            try:
                query(prom, expr)
            except CheckFailed as e:
                failures.append(f"alert {name}: {e}")
        log(f"{len(alert_expressions(rules_text))} alert expressions run")
        empty = []
        for title, expr in dashboard_queries():
            try:
                result = query(prom, expr)
            except CheckFailed as e:
                failures.append(f"panel {title!r}: {e}")
                continue
            if title in CORE_PANELS and not result:
                empty.append((title, expr))
        # A panel with several queries needs data from at least one.
        for title in CORE_PANELS:
            queries = [e for t, e in dashboard_queries() if t == title]
            if queries and all((title, e) in empty for e in queries):
                failures.append(f"core panel {title!r} returned no data: {queries}")
        log(f"{len(dashboard_queries())} dashboard queries run")
    except CheckFailed as e:
        failures.append(str(e))
    except HarnessError as e:
        log(f"HARNESS ERROR: {e}")
        return EXIT_HARNESS
    finally:
        srv.stop()
        if prom_proc is not None:
            kill_group(prom_proc, grace=10)
    for failure in failures:
        log(f"FAIL {failure}")
    if failures:
        log("ordertrail stderr tail:\n" + tail(workdir / "ordertrail.stderr", 20))
        return EXIT_ASSERT
    log("PASS: every alert expression and dashboard query ran, the core panels have data, the seed order's alerts fired")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
