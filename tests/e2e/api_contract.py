#!/usr/bin/env python3
"""End-to-end API contract test: a live ordertrail against its own OpenAPI document.

Run it with the venv's python, normally through tests/e2e/run_api_contract.sh,
which creates the venv from tests/e2e/requirements-api.txt.

Flow:
  1. write a config (the embedded default with `sla.detection_delay: 3s`) into a
     temp dir and start `ordertrail run` on free 127.0.0.1 ports with a temp data
     dir; wait for GET /readyz;
  2. `ordertrail simulate --orders 3` (seed order SO-10042 + happy orders);
  3. poll GET /v1/orders/SO-10042 until sla_status == "breached" and the
     shipment_confirmation_latency SLA is declared breached (after detection_delay);
  4. checks, each reported PASS/FAIL on its own:
     - schemathesis: the CLI against the served /openapi.yaml, all 16 operations,
       checks not_a_server_error, status_code_conformance, content_type_conformance,
       response_schema_conformance (off for GET /openapi.yaml only: see ST_CONFIG);
       bounded by --max-examples and --st-timeout; each failure is printed with its
       exact request and response;
     - documents: the real GET /v1/orders/SO-10042, /v1/orders?sla_status=breached
       and /v1/exceptions validated with jsonschema (2020-12, date-time formats
       checked) against their 200 response schemas in the served document;
     - metrics: /metrics parsed as Prometheus text and as OpenMetrics (families,
       an exemplar with a 32-hex trace_id on a histogram bucket, the
       shipment_confirmation_latency breach of transport-logistics);
     - seed: the accountability answer for SO-10042;
  5. stop the server (SIGTERM, then SIGKILL) always; print its stderr tail on
     failure; exit 0 when every check passed, 1 on a failed check, 2 on a harness
     / environment error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Optional

from harness import (EXIT_ASSERT, EXIT_HARNESS, EXIT_OK, HarnessError, finish, free_ports, http_get, kill_group,
                     log, ordertrail_bin, outcome, run_cmd, set_log_prefix, stop_on_signals, tail)

SEED_ORDER = "SO-10042"
BREACH_TARGET = "shipment_confirmation_latency"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
ST_CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]
REQUIRED_FAMILIES = [
    "ordertrail_sla_breaches",
    "ordertrail_exceptions",
    "ordertrail_milestone_transition_seconds",
    "ordertrail_sla_duration_seconds",
    "ordertrail_spans",
    "ordertrail_open_orders",
]

class CheckFailed(Exception):
    """The API does not do what the contract says."""


set_log_prefix("api-contract")


def get_json(url: str) -> Any:
    status, ctype, body = http_get(url)
    if status != 200:
        raise CheckFailed(f"GET {url} -> HTTP {status}: {body[:500]!r}")
    if not ctype.startswith("application/json"):
        raise CheckFailed(f"GET {url} -> Content-Type {ctype!r}, expected application/json")
    try:
        return json.loads(body)
    except ValueError as e:
        raise CheckFailed(f"GET {url} -> invalid JSON ({e}): {body[:500]!r}") from e


# --------------------------------------------------------------------------- #
# Processes                                                                   #
# --------------------------------------------------------------------------- #


class Server:
    """`ordertrail run` on free loopback ports, stderr to a file."""

    def __init__(self, bin_path: str, workdir: Path, env: dict[str, str]):
        self.bin = bin_path
        self.workdir = workdir
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self.err_path = workdir / "ordertrail.stderr"
        self.ports: dict[str, int] = {}

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api_http']}"

    @property
    def otlp_grpc(self) -> str:
        return f"http://127.0.0.1:{self.ports['grpc']}"

    def start(self, config: Path, timeout: float, attempts: int = 2) -> float:
        last = ""
        for attempt in range(1, attempts + 1):
            grpc, http, api_http, api_grpc = free_ports(4)
            self.ports = {"grpc": grpc, "http": http, "api_http": api_http, "api_grpc": api_grpc}
            data_dir = self.workdir / f"data-{attempt}"
            argv = [self.bin, "run", "--config", str(config),
                    "--grpc-listen", f"127.0.0.1:{grpc}", "--http-listen", f"127.0.0.1:{http}",
                    "--api-http-listen", f"127.0.0.1:{api_http}",
                    "--api-grpc-listen", f"127.0.0.1:{api_grpc}", "--data-dir", str(data_dir)]
            log(f"starting ordertrail (attempt {attempt}): $ {shlex.join(argv)}")
            t0 = time.monotonic()
            with open(self.err_path, "ab") as err:
                self.proc = subprocess.Popen(argv, cwd=self.workdir, env=self.env,
                                             stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                             start_new_session=True)
            deadline = t0 + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last = f"ordertrail exited early with code {self.proc.returncode}"
                    break
                try:
                    status, _, _ = http_get(f"{self.api}/readyz", accept="text/plain", timeout=2)
                except OSError:
                    status = 0
                if status == 200:
                    secs = time.monotonic() - t0
                    log(f"ordertrail ready in {secs:.2f}s (api {self.api})")
                    return secs
                time.sleep(0.1)
            else:
                last = f"/readyz not 200 within {timeout:.0f}s"
            self.stop()
            log(f"{last}; stderr tail:\n{tail(self.err_path, 25)}")
        raise HarnessError(f"could not start ordertrail: {last}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            log("stopping ordertrail (SIGTERM)")
            kill_group(self.proc, grace=15)
            log(f"ordertrail exited with code {self.proc.returncode}")
        self.proc = None


# --------------------------------------------------------------------------- #
# Checks                                                                      #
# --------------------------------------------------------------------------- #


# schemathesis configuration (written to the workdir and passed with --config-file).
# - Only the four contract checks run (the CLI's --checks would override the
#   per-operation setting below, so they are chosen here instead).
# - GET /openapi.yaml: schemathesis leaves out the operation that served the schema
#   unless a filter names it, so the run adds `--include-path-regex .` to test all
#   operations. The spec declares its body as a YAML mapping with `openapi` and
#   `paths`, which is what schemathesis checks it against.
ST_CONFIG = """\
[checks]
enabled = false
not_a_server_error.enabled = true
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_schema_conformance.enabled = true
response_schema_conformance.validate-formats = true
"""
ST_SKIPPED: set[tuple[str, str]] = set()


def _body(resp: dict, limit: int = 600) -> str:
    import base64

    content = resp.get("content") or {}
    raw = base64.b64decode(content["$base64"]) if "$base64" in content else str(content).encode()
    text = raw.decode(errors="replace")
    return text if len(text) <= limit else text[:limit] + f"... ({len(raw)} bytes)"


def read_st_events(path: Path) -> tuple[dict[str, dict], list[dict]]:
    """Per-operation stats and every failed check, with its exact request and response."""
    from collections import Counter

    stats: dict[str, dict] = {}
    failures: list[dict] = []
    seen: set[tuple] = set()
    with open(path) as f:
        for line in f:
            ev = json.loads(line).get("ScenarioFinished")
            rec = (ev or {}).get("recorder") or {}
            if not rec.get("label") or not rec.get("checks"):
                continue
            cases = rec.get("cases") or {}
            interactions = rec.get("interactions") or {}

            def op_of(cid: str) -> str:
                # A scenario's label names its operation, except for stateful scenarios
                # ("Stateful tests"), whose cases each name theirs (the path template).
                if rec["label"] != "Stateful tests":
                    return rec["label"]
                v = (cases.get(cid) or {}).get("value") or {}
                return f"{v.get('method', '?').upper()} {v.get('path', '?')}"

            for cid, inter in interactions.items():
                st = stats.setdefault(op_of(cid), {"checks": Counter(), "status": Counter()})
                st["status"][(inter.get("response") or {}).get("status_code")] += 1
            for cid, checks in rec["checks"].items():
                label = op_of(cid)
                st = stats.setdefault(label, {"checks": Counter(), "status": Counter()})
                for c in checks:
                    st["checks"][c["name"]] += 1
                    if c.get("status") == "success":
                        continue
                    inter = interactions.get(cid) or {}
                    req, resp = inter.get("request") or {}, inter.get("response") or {}
                    info = ((c.get("failure_info") or {}).get("failure") or {})
                    key = (label, c["name"], info.get("code"), resp.get("status_code"), info.get("title"))
                    if key in seen:  # the same finding again (e.g. while shrinking)
                        continue
                    seen.add(key)
                    failures.append({
                        "operation": label, "check": c["name"], "code": info.get("code"),
                        "title": info.get("title"), "message": info.get("message", ""),
                        "request": f"{req.get('method')} {req.get('uri')}",
                        "response_status": resp.get("status_code"),
                        "response_type": ",".join((resp.get("headers") or {}).get("content-type", [])),
                        "response_body": _body(resp) if resp else "(no response)",
                    })
    return stats, failures


def check_schemathesis(a: argparse.Namespace, srv: Server, workdir: Path) -> str:
    st = Path(sys.executable).parent / "schemathesis"
    if not st.exists():
        st = Path(shutil.which("schemathesis") or "schemathesis")
    cfg = workdir / "schemathesis.toml"
    cfg.write_text(ST_CONFIG)
    report, events = workdir / "schemathesis-report.json", workdir / "schemathesis-events.ndjson"
    location = str(Path(a.spec).resolve()) if a.spec else f"{srv.api}/openapi.yaml"
    argv = [str(st), "--config-file", str(cfg), "run", location, "--url", srv.api,
            "--include-path-regex", ".",  # every operation, GET /openapi.yaml included
            "--max-examples", str(a.max_examples),
            "--workers", "1",
            "--request-timeout", "10",
            "--generation-database", "none",
            "--output-sanitize", "false",  # report the requests as sent (no secrets here)
            "--no-color",
            "--report", "json,ndjson", "--report-json-path", str(report),
            "--report-ndjson-path", str(events)]
    if a.seed != "random":
        argv += ["--seed", a.seed]
    # cwd = workdir: no stray schemathesis.toml is picked up, and reports stay out of the repo.
    rc, out = run_cmd(argv, a.st_timeout, workdir / "schemathesis.out", cwd=workdir, timed_out=CheckFailed,
                      env=dict(os.environ, NO_COLOR="1", COLUMNS="120"))
    if a.verbose:
        print(out, flush=True)
    try:
        rep = json.loads(report.read_text())
        stats, failures = read_st_events(events)
    except (OSError, ValueError, KeyError) as e:
        print(out[-6000:], flush=True)
        raise HarnessError(f"schemathesis exited {rc} without usable reports ({e})") from e
    tc, ops = rep.get("test_cases", {}), rep.get("operations", {})
    problems = []
    if rc != 0 or rep.get("failures") or rep.get("errors") or failures:
        problems.append(f"exit {rc}, {len(failures)} distinct failed checks, "
                        f"{len(rep.get('errors') or [])} errors")
    if ops.get("tested") != ops.get("total") or ops.get("errored") or ops.get("skipped"):
        problems.append(f"not every operation was tested: {ops}")
    if not rep.get("complete", False):
        problems.append(f"run incomplete (stop_reason {rep.get('stop_reason')!r})")
    for label, st_ in sorted(stats.items()):
        missing = [c for c in ST_CHECKS if not st_["checks"][c] and (label, c) not in ST_SKIPPED]
        if missing:
            problems.append(f"{label}: checks never ran: {missing}")
    if len(stats) != ops.get("total"):
        problems.append(f"check results for {len(stats)} of {ops.get('total')} operations")
    per_op = "; ".join(
        f"{label} " + "/".join(f"{k}x{v}" for k, v in sorted(st_["status"].items(), key=lambda kv: str(kv[0])))
        for label, st_ in sorted(stats.items()))
    summary = (f"{ops.get('tested')}/{ops.get('total')} operations, {tc.get('generated')} cases, "
               f"{len(failures)} failed checks, seed {rep.get('seed')}, {rep.get('running_time', 0):.1f}s")
    log(f"schemathesis responses by operation: {per_op}")
    if problems:
        for f in failures:
            print(f"---- schemathesis: {f['check']} ({f['code']} {f['title']}) on {f['operation']}\n"
                  f"  request:  {f['request']}\n"
                  f"  response: HTTP {f['response_status']} Content-Type {f['response_type']!r}\n"
                  f"  body:     {f['response_body']}\n"
                  f"  why:      " + f['message'].replace("\n", "\n            ")[:2500], flush=True)
        if not failures:
            i = out.find("FAILURES")
            print("---- schemathesis output ----\n" + (out[i:] if i >= 0 else out[-8000:])[-12000:],
                  flush=True)
        raise CheckFailed(f"{'; '.join(problems)}: {summary} (output: {workdir / 'schemathesis.out'})")
    return summary


def openapi_doc(srv: Server, a: argparse.Namespace) -> dict:
    import yaml

    if a.spec:
        return yaml.safe_load(Path(a.spec).read_text())
    status, ctype, body = http_get(f"{srv.api}/openapi.yaml", accept="application/yaml")
    if status != 200:
        raise CheckFailed(f"GET /openapi.yaml -> HTTP {status}")
    doc = yaml.safe_load(body)
    if not str(doc.get("openapi", "")).startswith("3.1"):
        raise CheckFailed(f"/openapi.yaml is OpenAPI {doc.get('openapi')!r}, expected 3.1.x")
    return doc


def response_validator(doc: dict, path: str, status: str = "200",
                       media: str = "application/json") -> Callable[[Any], list[str]]:
    """A 2020-12 validator for the response schema of GET path, refs resolved within doc."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    def esc(part: str) -> str:
        return part.replace("~", "~0").replace("/", "~1")

    try:
        op = doc["paths"][path]["get"]
        resp = op["responses"][status]
    except KeyError as e:
        raise CheckFailed(f"OpenAPI document has no GET {path} -> {status} ({e})") from e
    pointer = ["paths", path, "get", "responses", status]
    if "$ref" in resp:  # e.g. #/components/responses/BadRequest
        pointer = resp["$ref"].lstrip("#/").split("/")
        resp = doc
        for p in pointer:
            resp = resp[p.replace("~1", "/").replace("~0", "~")]
        pointer = [p.replace("~1", "/").replace("~0", "~") for p in pointer]
    if media not in resp.get("content", {}):
        raise CheckFailed(f"GET {path} -> {status} documents no {media} content")
    pointer += ["content", media, "schema"]
    base = "urn:ordertrail:openapi"
    registry = Registry().with_resource(base, Resource(contents=doc, specification=DRAFT202012))
    frag = urllib.parse.quote("/" + "/".join(esc(p) for p in pointer), safe="/~")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": f"{base}#{frag}"}
    fc = Draft202012Validator.FORMAT_CHECKER
    if "date-time" not in fc.checkers:
        raise HarnessError("jsonschema cannot check date-time (rfc3339-validator missing)")
    v = Draft202012Validator(schema, registry=registry, format_checker=fc)

    def validate(instance: Any) -> list[str]:
        return [f"at /{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in sorted(v.iter_errors(instance), key=lambda e: list(map(str, e.path)))]

    return validate


def check_documents(doc: dict, srv: Server, order: dict) -> str:
    cases = [
        ("/v1/orders/{order_id}", f"/v1/orders/{SEED_ORDER}"),
        ("/v1/orders", "/v1/orders?sla_status=breached"),
        ("/v1/exceptions", "/v1/exceptions"),
    ]
    errors: list[str] = []
    bodies: dict[str, Any] = {}
    for tmpl, url in cases:
        body = order if tmpl == "/v1/orders/{order_id}" else get_json(srv.api + url)
        bodies[tmpl] = body
        errs = response_validator(doc, tmpl)(body)
        errors += [f"GET {url}: {e}" for e in errs[:10]]
    # Populated, not vacuous: the documents must hold what the scenario produced.
    page = bodies["/v1/orders"]
    ids = [o.get("order_id") for o in page.get("orders", [])]
    if SEED_ORDER not in ids:
        errors.append(f"GET /v1/orders?sla_status=breached: {SEED_ORDER} missing (got {ids})")
    if any(o.get("sla_status") != "breached" for o in page.get("orders", [])):
        errors.append("GET /v1/orders?sla_status=breached returned a non-breached order")
    groups = bodies["/v1/exceptions"].get("groups", [])
    if not groups:
        errors.append("GET /v1/exceptions: no groups")
    if errors:
        raise CheckFailed(f"{len(errors)} problem(s) in the populated documents: "
                          + "\n    ".join(errors))
    return (f"Order ({len(order.get('milestones', []))} milestones, {len(order.get('exceptions', []))} "
            f"exceptions), OrderPage ({len(ids)} breached), ExceptionSummary ({len(groups)} groups) "
            f"valid incl. date-time formats")


def check_metrics(srv: Server) -> str:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
    from prometheus_client.parser import text_string_to_metric_families as prom_parse

    errors: list[str] = []
    status, ctype, body = http_get(f"{srv.api}/metrics", accept="text/plain")
    if status != 200 or not ctype.startswith("text/plain"):
        raise CheckFailed(f"GET /metrics -> HTTP {status}, Content-Type {ctype!r}")
    try:
        prom = list(prom_parse(body.decode()))
    except Exception as e:  # noqa: BLE001 - any parser error is a finding
        raise CheckFailed(f"Prometheus text does not parse: {type(e).__name__}: {e}") from e
    status, om_ctype, body = http_get(f"{srv.api}/metrics", accept="application/openmetrics-text")
    if status != 200 or not om_ctype.startswith("application/openmetrics-text"):
        raise CheckFailed(f"GET /metrics (OpenMetrics) -> HTTP {status}, Content-Type {om_ctype!r}")
    try:
        om = list(om_parse(body.decode()))
    except Exception as e:  # noqa: BLE001
        raise CheckFailed(f"OpenMetrics text does not parse: {type(e).__name__}: {e}") from e

    for label, fams in (("prometheus", prom), ("openmetrics", om)):
        names = {f.name for f in fams}
        missing = [n for n in REQUIRED_FAMILIES if n not in names]
        if missing:
            errors.append(f"{label}: missing families {missing}")
        breach = [s for f in fams if f.name == "ordertrail_sla_breaches" for s in f.samples
                  if s.labels.get("target") == "shipment_confirmation_latency"
                  and s.labels.get("owner") == "transport-logistics"]
        if not breach:
            errors.append(f"{label}: no ordertrail_sla_breaches sample with "
                          f"target=shipment_confirmation_latency, owner=transport-logistics")
        elif not any(s.value >= 1 for s in breach):
            errors.append(f"{label}: shipment_confirmation_latency breach count is 0")

    exemplars = [(f.name, s) for f in om if f.type == "histogram" for s in f.samples
                 if s.name.endswith("_bucket") and s.exemplar is not None]
    with_tid = [(n, s) for n, s in exemplars if HEX32.match(s.exemplar.labels.get("trace_id", ""))]
    if not with_tid:
        errors.append(f"openmetrics: no histogram bucket exemplar with a 32-hex trace_id "
                      f"({len(exemplars)} bucket exemplars in all)")
    if errors:
        raise CheckFailed("; ".join(errors))
    n, s = with_tid[0]
    return (f"{len(prom)} families (text) / {len(om)} (OpenMetrics), {len(with_tid)} bucket "
            f"exemplars with trace_id, e.g. {n} trace_id={s.exemplar.labels['trace_id']}")


def check_seed(order: dict) -> str:
    errors: list[str] = []
    nxt = order.get("next") or {}

    def expect(what: str, got: Any, want: Any) -> None:
        if got != want:
            errors.append(f"{what} = {got!r}, expected {want!r}")

    expect("sla_status", order.get("sla_status"), "breached")
    expect("stage", order.get("stage"), "pick_pack")
    expect("next.owner", nxt.get("owner"), "integration-team")
    expect("next.blocked_by.class", (nxt.get("blocked_by") or {}).get("class"), "integration")
    exc = [e for e in order.get("exceptions", [])
           if e.get("signature") == "approval-outside-system-of-record"]
    if not exc:
        errors.append("no exception with signature 'approval-outside-system-of-record' "
                      f"(signatures: {[e.get('signature') for e in order.get('exceptions', [])]})")
    else:
        expect("that exception's class", exc[0].get("class"), "policy")
        expect("that exception's actor", exc[0].get("actor"), "j.moreau@regional-distributor.example")
    if errors:
        raise CheckFailed("; ".join(errors))
    return (f"stage pick_pack, next.owner integration-team blocked by integration, "
            f"policy exception approval-outside-system-of-record by {exc[0]['actor']}")


# --------------------------------------------------------------------------- #
# Main                                                                        #
# --------------------------------------------------------------------------- #


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--save-order", metavar="PATH",
                   help=f"write the pretty-printed JSON of GET /v1/orders/{SEED_ORDER} here")
    p.add_argument("--max-examples", type=int, default=25,
                   help="schemathesis test cases per operation and phase (default %(default)s)")
    p.add_argument("--seed", default="20261126",
                   help="schemathesis seed, or 'random' (default %(default)s, reproducible)")
    p.add_argument("--st-timeout", type=float, default=85,
                   help="time budget of the schemathesis run in seconds (default %(default)s)")
    p.add_argument("--spec", metavar="FILE",
                   help="OpenAPI file to test against instead of the served /openapi.yaml "
                        "(to check the harness itself with a deliberately wrong spec)")
    p.add_argument("--orders", type=int, default=3, help="happy orders to simulate (default 3)")
    p.add_argument("--startup-timeout", type=float, default=30)
    p.add_argument("--breach-timeout", type=float, default=30,
                   help=f"how long to wait for {SEED_ORDER} to be breached (default 30)")
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument("--verbose", action="store_true", help="print schemathesis' full output")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    a = parse_args(argv)

    stop_on_signals()

    bin_path = ordertrail_bin()
    if not os.access(bin_path, os.X_OK):
        log(f"ERROR: ordertrail binary not found/executable: {bin_path} "
            f"(build it with `cargo build`, or set ORDERTRAIL_BIN)")
        print("api_contract: 0 passed, 1 failed", flush=True)
        return EXIT_HARNESS

    # The simulator must use the endpoint we give it, not inherited OTEL_* env; no colours in logs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    env.update(NO_COLOR="1", NO_PROXY="127.0.0.1,localhost")
    workdir = Path(tempfile.mkdtemp(prefix="api-contract-"))
    srv = Server(bin_path, workdir, env)
    results: list[tuple[str, bool, str]] = []
    timings: dict[str, float] = {}
    rc, fatal = EXIT_HARNESS, ""
    t_all = time.monotonic()

    def run_check(name: str, fn: Callable[[], str]) -> None:
        t0 = time.monotonic()
        try:
            detail = fn()
            results.append((name, True, detail))
            log(f"PASS {name}: {detail}")
        except CheckFailed as e:
            results.append((name, False, str(e)))
            log(f"FAIL {name}: {e}")
        finally:
            timings[f"{name}_s"] = time.monotonic() - t0

    try:
        # 1. config + server
        code, cfg = run_cmd([bin_path, "print-default-config"], 30, workdir / "default-config.yaml",
                            cwd=workdir, env=env)
        if code != 0:
            raise HarnessError(f"print-default-config exited {code}:\n{cfg[-2000:]}")
        config = workdir / "config.yaml"
        r = subprocess.run(["sed", "s/^  detection_delay: 10s$/  detection_delay: 3s/",
                            str(workdir / "default-config.yaml")],
                           capture_output=True, text=True, check=True, timeout=10)
        if "\n  detection_delay: 3s\n" not in r.stdout:
            raise HarnessError("default config has no line '  detection_delay: 10s' to replace")
        config.write_text(r.stdout)
        timings["startup_s"] = srv.start(config, a.startup_timeout)

        # 2. simulator
        t0 = time.monotonic()
        code, out = run_cmd([bin_path, "simulate", "--endpoint", srv.otlp_grpc, "--orders", str(a.orders)],
                            60, workdir / "simulate.out", cwd=workdir, env=env)
        timings["simulate_s"] = time.monotonic() - t0
        if code != 0:
            raise HarnessError(f"simulate exited {code}:\n{out[-3000:]}")
        log("simulated orders: " + " ".join(out.split()))
        if SEED_ORDER not in out.split():
            raise HarnessError(f"simulate did not report {SEED_ORDER}:\n{out[-2000:]}")

        # 3. wait for the SLA breach. The order-level sla_status already says "breached" as
        # soon as a pending deadline lies in the past (query.rs: sla_status), while the breach
        # itself (slas[].status, breached_at, the sla:* exception, ordertrail_sla_breaches) is
        # declared only after sla.detection_delay: wait for both.
        t0 = time.monotonic()
        deadline = t0 + a.breach_timeout
        order: dict = {}
        last = "no answer"
        while True:
            status, _, body = http_get(f"{srv.api}/v1/orders/{SEED_ORDER}")
            if status == 200:
                order = json.loads(body)
                declared = sorted(s.get("target") for s in order.get("slas", [])
                                  if s.get("status") == "breached")
                last = f"sla_status={order.get('sla_status')!r}, breached slas={declared}"
                if "sla_status_breached_s" not in timings and order.get("sla_status") == "breached":
                    timings["sla_status_breached_s"] = time.monotonic() - t0
                if order.get("sla_status") == "breached" and BREACH_TARGET in declared:
                    break
            else:
                last = f"HTTP {status}"
            if time.monotonic() >= deadline or not srv.alive():
                raise CheckFailed(f"{SEED_ORDER} not breached within {a.breach_timeout:.0f}s "
                                  f"(last: {last}; server alive: {srv.alive()})")
            time.sleep(0.25)
        timings["breach_declared_s"] = time.monotonic() - t0
        log(f"{SEED_ORDER}: sla_status 'breached' after {timings['sla_status_breached_s']:.1f}s, "
            f"{BREACH_TARGET} breach declared after {timings['breach_declared_s']:.1f}s")
        # Let late engine work settle (e.g. metrics of the breach), then take the final document.
        time.sleep(0.5)
        order = get_json(f"{srv.api}/v1/orders/{SEED_ORDER}")
        if a.save_order:
            out_path = Path(a.save_order)
            if not out_path.is_absolute():
                out_path = Path.cwd() / out_path
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(order, indent=2, ensure_ascii=False) + "\n")
            log(f"saved GET /v1/orders/{SEED_ORDER} to {out_path}")

        # 4. checks (each independent; one failing does not skip the others)
        doc = openapi_doc(srv, a)
        run_check("seed", lambda: check_seed(order))
        run_check("documents", lambda: check_documents(doc, srv, order))
        run_check("metrics", lambda: check_metrics(srv))
        run_check("schemathesis", lambda: check_schemathesis(a, srv, workdir))
        if not srv.alive():
            results.append(("server", False, "ordertrail died during the checks"))
        rc = EXIT_OK if all(ok for _, ok, _ in results) else EXIT_ASSERT
    except BaseException as e:  # noqa: BLE001 - report, clean up, exit with the outcome's code
        rc, fatal = outcome(e, CheckFailed)
    finally:
        srv.stop()
        if rc != EXIT_OK:
            log(f"ordertrail stderr tail ({srv.err_path}):\n{tail(srv.err_path, 40)}")
        timings["total_s"] = time.monotonic() - t_all
        finish(workdir, a.keep_workdir or rc != EXIT_OK, timings)
        print("==== api_contract summary ====", flush=True)
        for name, ok, detail in results:
            print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail.splitlines()[0][:200]}", flush=True)
        if fatal:
            print(f"  {fatal.splitlines()[0][:300]}", flush=True)
        passed = sum(1 for _, ok, _ in results if ok)
        failed = len(results) - passed + (1 if fatal else 0)
        # Plain summary line that CI log readers understand.
        print(f"api_contract: {passed} passed, {failed} failed", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
