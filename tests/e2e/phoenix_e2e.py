#!/usr/bin/env python3
"""End-to-end test: ordertrail -> OTLP/gRPC -> Arize Phoenix -> REST read-back.

Stdlib only (the fake sender used by --self-test needs the OpenTelemetry SDK,
which the e2e venv has). Run it with the venv's python, normally through
tests/e2e/run_phoenix_e2e.sh, which creates the venv.

Flow:
  1. start Phoenix (from this interpreter's environment) on free 127.0.0.1
     ports, in a throw-away working dir, with telemetry / external resources off;
  2. run the trace-id command  (default: $ORDERTRAIL_BIN trace-id SO-10042);
  3. run the sender command    (default: $ORDERTRAIL_BIN demo --no-ui --export-endpoint
     http://127.0.0.1:<grpc port>);
  4. poll GET /v1/projects/{project}/spans?trace_id=<id> until the order trace
     satisfies the assertions, or the query timeout expires;
  5. stop Phoenix (always), exit 0 on success, 1 on a failed assertion, 2 on a
     harness / environment error.

Every step is bounded in time. See --help for the knobs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any, Optional

from harness import (EXIT_HARNESS, EXIT_OK, REPO_ROOT, HarnessError, finish, free_ports, http_get,
                     kill_group, log, ordertrail_bin, outcome, run_cmd, set_log_prefix, stop_on_signals, tail)

TRACE_ID_RE = re.compile(r"^[0-9a-fA-F]{32}$")

class AssertionFailed(Exception):
    """The trace read back from Phoenix does not satisfy the expectations."""


set_log_prefix("phoenix-e2e")

ACCESS_LOG_RE = re.compile(r'^INFO: +\S+ - "(GET|POST) ')


def not_access_log(line: str) -> bool:
    return not ACCESS_LOG_RE.match(line)


# --------------------------------------------------------------------------- #
# Fake ordertrail (used by --self-test): mimics the CLI contract of the binary #
# --------------------------------------------------------------------------- #


def fake_trace_id(order: str) -> str:
    return hashlib.sha256(f"ordertrail-fake:{order}".encode()).hexdigest()[:32]


def fake_ordertrail(argv: list[str]) -> int:
    """`fake-ordertrail trace-id ORDER` | `fake-ordertrail demo --export-endpoint URL`."""
    p = argparse.ArgumentParser(prog="phoenix_e2e.py fake-ordertrail")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("trace-id")
    t.add_argument("order")
    d = sub.add_parser("demo")
    d.add_argument("--export-endpoint", required=True)
    d.add_argument("--no-ui", action="store_true", help="as the real demo: exit after the timelines")
    d.add_argument("--order", default="SO-10042")
    d.add_argument("--gzip", action="store_true", help="gzip-compress OTLP requests")
    a = p.parse_args(argv)
    if a.cmd == "trace-id":
        print(fake_trace_id(a.order))
        return 0

    # Imported lazily: only the self-test needs the SDK.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class FixedTraceIds(RandomIdGenerator):
        next_trace: Optional[int] = None

        def generate_trace_id(self) -> int:
            if self.next_trace is not None:
                tid, self.next_trace = self.next_trace, None
                return tid
            return super().generate_trace_id()

    ids = FixedTraceIds()
    kwargs: dict[str, Any] = {"endpoint": a.export_endpoint, "insecure": True, "timeout": 10}
    if a.gzip:
        from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression

        kwargs["compression"] = Compression.Gzip
    provider = TracerProvider(
        resource=Resource.create({"service.name": "ordertrail-fake"}), id_generator=ids
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(**kwargs)))
    tracer = provider.get_tracer("ordertrail-fake")

    def order_trace(order: str, milestones: list[str]) -> None:
        ids.next_trace = int(fake_trace_id(order), 16)
        attrs = {"order.id": order}
        with tracer.start_as_current_span(f"order {order}", attributes=attrs):
            for i, m in enumerate(milestones):
                with tracer.start_as_current_span(
                    f"milestone {m}",
                    attributes={**attrs, "order.milestone": m, "order.seq": i},
                ):
                    with tracer.start_as_current_span(
                        f"erp.step {m}", attributes={**attrs, "source.system": "ERP"}
                    ):
                        pass

    # Noise: another order, so the trace-id filter is really exercised.
    order_trace("SO-99999", ["pricing_approval"])
    order_trace(a.order, ["pricing_approval", "shipment_confirmation", "invoicing"])
    flushed = provider.force_flush(timeout_millis=15000)
    provider.shutdown()
    print(f"fake demo: exported order traces to {a.export_endpoint} (flushed={flushed})")
    return 0 if flushed else 1


# --------------------------------------------------------------------------- #
# Phoenix process management                                                  #
# --------------------------------------------------------------------------- #


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def http_json(url: str, timeout: float = 10.0) -> Any:
    status, _, body = http_get(url, timeout=timeout)
    if status != 200:
        raise HarnessError(f"GET {url} -> HTTP {status}: {body[:300]!r}")
    return json.loads(body)


class Phoenix:
    def __init__(self, python: str, workdir: Path, startup_timeout: float):
        self.python = python
        self.workdir = workdir
        self.startup_timeout = startup_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.http_port = 0
        self.grpc_port = 0
        self.log_path = workdir / "phoenix.log"
        self.startup_secs = 0.0
        self.version = "?"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PHOENIX_", "OTEL_")) and k not in ("http_proxy", "https_proxy")
        }
        tmp = self.workdir / "tmp"
        tmp.mkdir(exist_ok=True)
        env.update(
            {
                "PHOENIX_HOST": "127.0.0.1",
                "PHOENIX_PORT": str(self.http_port),
                "PHOENIX_GRPC_PORT": str(self.grpc_port),
                "PHOENIX_WORKING_DIR": str(self.workdir / "data"),
                # SQLite in the working dir (the default), spelled out for clarity.
                "PHOENIX_SQL_DATABASE_URL": f"sqlite:///{self.workdir / 'data' / 'phoenix.db'}",
                # Offline / no phone-home.
                "PHOENIX_TELEMETRY_ENABLED": "false",
                "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
                "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
                "PHOENIX_AGENTS_DISABLE_WEB_ACCESS": "true",
                "PHOENIX_AGENTS_DISABLE_BASH": "true",
                "PHOENIX_AGENTS_DISABLE_GITHUB": "true",
                "PHOENIX_ENABLE_MCP_SERVER": "false",
                "PHOENIX_ENABLE_AUTH": "false",
                # Quiet logs (migrations otherwise echo every SQL statement).
                "PHOENIX_LOG_MIGRATIONS": "false",
                "PHOENIX_LOGGING_LEVEL": "info",
                "TMPDIR": str(tmp),  # Phoenix keeps a pid dir under $TMPDIR/.arize-phoenix
                "PYTHONUNBUFFERED": "1",
                "NO_PROXY": "127.0.0.1,localhost",
            }
        )
        return env

    def start(self, attempts: int = 2) -> None:
        last_err = ""
        for attempt in range(1, attempts + 1):
            # Phoenix binds gRPC on [::]/0.0.0.0, so the wildcard address is probed.
            self.http_port, self.grpc_port = free_ports(2, host="0.0.0.0")
            (self.workdir / "data").mkdir(exist_ok=True)
            log(
                f"starting Phoenix (attempt {attempt}): http={self.http_port} "
                f"grpc={self.grpc_port} workdir={self.workdir}"
            )
            t0 = time.monotonic()
            with open(self.log_path, "ab") as out:
                self.proc = subprocess.Popen(
                    [self.python, "-m", "phoenix.server.main", "serve"],
                    cwd=self.workdir,
                    env=self._env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = t0 + self.startup_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last_err = f"Phoenix exited early with code {self.proc.returncode}"
                    break
                try:
                    status, _, _ = http_get(f"{self.base_url}/readyz", timeout=2)
                except OSError:
                    status = 0
                if status == 200 and tcp_open(self.grpc_port):
                    self.startup_secs = time.monotonic() - t0
                    _, _, ver = http_get(f"{self.base_url}/arize_phoenix_version", timeout=5)
                    self.version = ver.decode(errors="replace").strip()
                    log(f"Phoenix {self.version} ready in {self.startup_secs:.1f}s")
                    return
                time.sleep(0.25)
            else:
                last_err = f"Phoenix not ready within {self.startup_timeout:.0f}s"
            self.stop()
            log(f"{last_err}; log tail:\n{tail(self.log_path)}")
        raise HarnessError(f"could not start Phoenix: {last_err} (log: {self.log_path})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            log("stopping Phoenix")
            kill_group(self.proc, grace=20)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


# --------------------------------------------------------------------------- #
# Commands under test                                                         #
# --------------------------------------------------------------------------- #


def expand(template: str, values: dict[str, str]) -> list[str]:
    """Fill {placeholders} (shell-quoted; {bin} is already a quoted command line), then split."""
    quoted = {k: (v if k == "bin" else shlex.quote(v)) for k, v in values.items()}
    try:
        return shlex.split(template.format(**quoted))
    except (KeyError, IndexError, ValueError) as e:
        raise HarnessError(f"bad placeholder in command {template!r}: {e}") from e


# --------------------------------------------------------------------------- #
# Reading spans back                                                          #
# --------------------------------------------------------------------------- #


def get_attr(attrs: dict[str, Any], dotted: str) -> Any:
    """Attributes come back flat ({"order.id": ...}); fall back to nested form."""
    if dotted in attrs:
        return attrs[dotted]
    cur: Any = attrs
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def list_projects(base: str) -> list[str]:
    names: list[str] = []
    cursor: Optional[str] = None
    for _ in range(50):
        q = {"limit": "100"}
        if cursor:
            q["cursor"] = cursor
        d = http_json(f"{base}/v1/projects?{urllib.parse.urlencode(q)}")
        names += [p["name"] for p in d.get("data", [])]
        cursor = d.get("next_cursor")
        if not cursor:
            break
    return names


def fetch_spans(base: str, project: str, params: dict[str, str], max_pages: int = 50) -> list[dict]:
    """GET /v1/projects/{project}/spans with the given filters, following next_cursor."""
    spans: list[dict] = []
    cursor: Optional[str] = None
    for _ in range(max_pages):
        q = dict(params, limit="1000")
        if cursor:
            q["cursor"] = cursor
        url = f"{base}/v1/projects/{urllib.parse.quote(project, safe='')}/spans?{urllib.parse.urlencode(q)}"
        status, _, body = http_get(url)
        if status == 404:  # project does not exist (yet)
            return []
        if status != 200:
            raise HarnessError(f"GET {url} -> HTTP {status}: {body[:300]!r}")
        d = json.loads(body)
        spans += d.get("data", [])
        cursor = d.get("next_cursor")
        if not cursor:
            break
    return spans


def trace_spans(base: str, projects: Optional[list[str]], trace_id: str) -> tuple[list[dict], list[str]]:
    names = projects if projects else list_projects(base)
    spans: list[dict] = []
    hit: list[str] = []
    for p in names:
        got = fetch_spans(base, p, {"trace_id": trace_id})
        if got:
            hit.append(p)
            spans += got
    return spans, hit


def check(spans: list[dict], a: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    failures: list[str] = []
    milestones: set[str] = set()
    bad_order: list[str] = []
    for s in spans:
        attrs = s.get("attributes") or {}
        if get_attr(attrs, a.order_attr) != a.order:
            bad_order.append(f"{s.get('name')!r} ({a.order_attr}={get_attr(attrs, a.order_attr)!r})")
        m = get_attr(attrs, a.milestone_attr)
        if isinstance(m, list):
            milestones.update(str(x) for x in m)
        elif m is not None:
            milestones.add(str(m))
    roots = [s for s in spans if s.get("name") == a.root_name]
    if len(spans) < a.min_spans:
        failures.append(f"expected at least {a.min_spans} spans in the trace, found {len(spans)}")
    if not roots:
        failures.append(f"no span named {a.root_name!r} in the trace")
    elif not a.allow_root_parent and not any(r.get("parent_id") is None for r in roots):
        failures.append(
            f"span {a.root_name!r} has a parent ({roots[0].get('parent_id')}), expected it to be the root"
        )
    if bad_order:
        shown = ", ".join(bad_order[:5]) + (" ..." if len(bad_order) > 5 else "")
        failures.append(
            f"{len(bad_order)} span(s) lack {a.order_attr}={a.order!r}: {shown}"
        )
    names = {str(s.get("name")) for s in spans}
    for expected in a.expect_span:
        if expected not in names:
            failures.append(f"no span named {expected!r} in the trace")
    for unexpected in a.expect_no_span:
        if unexpected in names:
            failures.append(f"a span named {unexpected!r} is in the trace")
    if len(milestones) < a.min_milestones:
        failures.append(
            f"expected at least {a.min_milestones} distinct {a.milestone_attr} values, "
            f"found {len(milestones)}: {sorted(milestones)}"
        )
    info = {
        "span_count": len(spans),
        "milestones": sorted(milestones),
        "span_names": sorted({str(s.get("name")) for s in spans}),
    }
    return failures, info


def diagnose_missing(base: str, projects: Optional[list[str]], a: argparse.Namespace) -> str:
    """When the trace id matches nothing, say where spans of this order did land."""
    lines = []
    try:
        names = projects if projects else list_projects(base)
        lines.append(f"projects in Phoenix: {names}")
        for p in names:
            by_order = fetch_spans(base, p, {"attribute": f"{a.order_attr}:{json.dumps(a.order)}"}, 2)
            tids = sorted({s["context"]["trace_id"] for s in by_order})
            total = len(fetch_spans(base, p, {}, 2))
            lines.append(
                f"  project {p!r}: >= {total} span(s) total; spans with "
                f"{a.order_attr}={a.order!r} are in trace(s) {tids or 'none'}"
            )
    except Exception as e:  # diagnostics must never mask the real failure
        lines.append(f"(diagnostics failed: {e})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# Main                                                                        #
# --------------------------------------------------------------------------- #


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--order", default="SO-10042", help="order id to check (default %(default)s)")
    p.add_argument("--root-name", default=None, help="expected root span name (default 'order ORDER')")
    p.add_argument("--min-spans", type=int, default=5)
    p.add_argument("--min-milestones", type=int, default=3)
    p.add_argument("--expect-span", action="append", default=[],
                   help="a span name the trace must contain (repeatable), e.g. an SLA breach span")
    p.add_argument("--expect-no-span", action="append", default=[],
                   help="a span name the trace must not contain (repeatable), e.g. the closing span of an "
                        "order that is still open")
    p.add_argument("--order-attr", default="order.id")
    p.add_argument("--milestone-attr", default="order.milestone")
    p.add_argument("--allow-root-parent", action="store_true",
                   help="accept a root-named span that has a parent_id")
    p.add_argument("--trace-id", default=None, help="skip the trace-id command and use this id")
    p.add_argument(
        "--trace-id-cmd", default=None,
        help="command printing the 32-hex trace id (placeholders: {order} {bin}); "
             "default '{bin} trace-id {order}'",
    )
    p.add_argument(
        "--sender-cmd", default=None,
        help="command exporting spans (placeholders: {endpoint} {grpc_port} {http_port} "
             "{order} {bin}); default '{bin} demo --no-ui --export-endpoint {endpoint}'",
    )
    p.add_argument("--self-test", action="store_true",
                   help="use the built-in fake ordertrail (Python OTel SDK) instead of the binary")
    p.add_argument("--self-test-gzip", action="store_true", help="fake sender gzip-compresses")
    p.add_argument("--project", action="append", default=None,
                   help="Phoenix project(s) to search (default: all projects)")
    p.add_argument("--phoenix-python", default=sys.executable,
                   help="python that has arize-phoenix installed (default: this one)")
    p.add_argument("--startup-timeout", type=float, default=120)
    p.add_argument("--cmd-timeout", type=float, default=30, help="timeout of the trace-id command")
    p.add_argument("--sender-timeout", type=float, default=180)
    p.add_argument("--query-timeout", type=float, default=60,
                   help="how long to poll Phoenix for the trace after the sender exited")
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument("--verbose", action="store_true", help="print command outputs and spans")
    a = p.parse_args(argv)
    if a.root_name is None:
        a.root_name = f"order {a.order}"
    return a


def main(argv: list[str]) -> int:
    if argv[:1] == ["fake-ordertrail"]:
        return fake_ordertrail(argv[1:])
    a = parse_args(argv)

    stop_on_signals()

    bin_path = ordertrail_bin()
    if a.self_test:
        bin_q = shlex.join([sys.executable, str(Path(__file__).resolve()), "fake-ordertrail"])
        gz = " --gzip" if a.self_test_gzip else ""
        a.trace_id_cmd = a.trace_id_cmd or "{bin} trace-id {order}"
        a.sender_cmd = a.sender_cmd or "{bin} demo --no-ui --export-endpoint {endpoint} --order {order}" + gz
    else:
        bin_q = shlex.quote(bin_path)
        a.trace_id_cmd = a.trace_id_cmd or "{bin} trace-id {order}"
        a.sender_cmd = a.sender_cmd or "{bin} demo --no-ui --export-endpoint {endpoint}"
        uses_bin = (a.trace_id is None and "{bin}" in a.trace_id_cmd) or "{bin}" in a.sender_cmd
        if uses_bin and not os.access(bin_path, os.X_OK):
            log(f"FAIL: ordertrail binary not found/executable: {bin_path} "
                f"(build it with `cargo build`, or set ORDERTRAIL_BIN)")
            return EXIT_HARNESS

    # Commands under test must use the endpoint we give them, not inherited OTEL_* env.
    cmd_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    workdir = Path(tempfile.mkdtemp(prefix="phoenix-e2e-"))
    phoenix = Phoenix(a.phoenix_python, workdir, a.startup_timeout)
    timings: dict[str, float] = {}
    rc, verdict = EXIT_HARNESS, "ERROR: unexpected exception"
    t_all = time.monotonic()
    try:
        # 1. trace id (before Phoenix: cheap, and fails fast on a broken binary)
        if a.trace_id:
            trace_id = a.trace_id
        else:
            argv_tid = expand(a.trace_id_cmd, {"order": a.order, "bin": bin_q})
            code, out = run_cmd(argv_tid, a.cmd_timeout, workdir / "trace-id.out", cwd=REPO_ROOT, env=cmd_env)
            lines = [l.strip() for l in out.splitlines() if l.strip()]
            if code != 0:
                raise HarnessError(f"trace-id command exited {code}; output:\n{out[-2000:]}")
            if len(lines) != 1 or not TRACE_ID_RE.match(lines[0]):
                raise AssertionFailed(
                    f"trace-id command must print exactly one 32-hex-char line, got: {out[-500:]!r}"
                )
            trace_id = lines[0]
        if not TRACE_ID_RE.match(trace_id) or int(trace_id, 16) == 0:
            raise AssertionFailed(f"invalid trace id {trace_id!r}")
        trace_id = trace_id.lower()  # Phoenix stores/filters lower-case hex only
        log(f"trace id for {a.order}: {trace_id}")

        # 2. Phoenix
        phoenix.start()
        timings["phoenix_start_s"] = phoenix.startup_secs

        # 3. sender
        values = {
            "endpoint": phoenix.otlp_grpc_endpoint,
            "grpc_port": str(phoenix.grpc_port),
            "http_port": str(phoenix.http_port),
            "order": a.order,
            "bin": bin_q,
        }
        t0 = time.monotonic()
        code, out = run_cmd(expand(a.sender_cmd, values), a.sender_timeout, workdir / "sender.out", cwd=REPO_ROOT, env=cmd_env)
        timings["sender_s"] = time.monotonic() - t0
        if a.verbose or code != 0:
            print(out[-4000:], flush=True)
        if code != 0:
            raise HarnessError(f"sender exited {code} (output above)")
        if not phoenix.alive():
            raise HarnessError(f"Phoenix died while receiving spans; log tail:\n{tail(phoenix.log_path)}")

        # 4. poll Phoenix
        base = phoenix.base_url
        log(f"polling {base}/v1/projects/{{project}}/spans?trace_id={trace_id} "
            f"(up to {a.query_timeout:.0f}s)")
        t_sent = time.monotonic()
        deadline = t_sent + a.query_timeout
        failures: list[str] = ["no query made"]
        info: dict[str, Any] = {}
        spans: list[dict] = []
        hit_projects: list[str] = []
        first_seen: Optional[float] = None
        while True:
            spans, hit_projects = trace_spans(base, a.project, trace_id)
            if spans and first_seen is None:
                first_seen = time.monotonic() - t_sent
            failures, info = check(spans, a)
            if not failures:
                # Let late spans land, then check once more (catches e.g. a stray span
                # without order.id that arrives in a later batch).
                timings["queryable_after_sender_exit_s"] = time.monotonic() - t_sent
                time.sleep(1.0)
                spans, hit_projects = trace_spans(base, a.project, trace_id)
                failures, info = check(spans, a)
                break
            if time.monotonic() >= deadline or not phoenix.alive():
                break
            time.sleep(0.25)
        if first_seen is not None:
            timings["first_span_visible_s"] = first_seen

        if a.verbose:
            print(json.dumps(spans, indent=1)[:20000], flush=True)
        if failures:
            msg = "\n  - ".join(failures)
            extra = "" if spans else "\n" + diagnose_missing(base, a.project, a)
            raise AssertionFailed(
                f"trace {trace_id} in Phoenix does not match expectations after "
                f"{time.monotonic() - t_sent:.1f}s:\n  - {msg}{extra}"
            )
        log(
            f"PASS: trace {trace_id} (project {', '.join(hit_projects)}): "
            f"{info['span_count']} spans, root {a.root_name!r} present, all with "
            f"{a.order_attr}={a.order}, milestones {info['milestones']}"
        )
        rc, verdict = EXIT_OK, "PASS"
    except BaseException as e:  # noqa: BLE001 - report, clean up, exit with the outcome's code
        rc, verdict = outcome(e, AssertionFailed)
    finally:
        if rc != EXIT_OK and phoenix.log_path.exists():
            log(
                f"Phoenix log tail, access log lines dropped ({phoenix.log_path}):\n"
                + tail(phoenix.log_path, 25, keep=not_access_log)
            )
        phoenix.stop()
        timings["total_s"] = time.monotonic() - t_all
        finish(workdir, a.keep_workdir or rc != EXIT_OK, timings)
        if rc != EXIT_OK:
            log(verdict)
        # Plain summary line that CI log readers understand.
        print(f"phoenix_e2e: {int(rc == EXIT_OK)} passed, {int(rc != EXIT_OK)} failed", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
