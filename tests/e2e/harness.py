"""What the end-to-end harnesses share: exit codes, logging, output tails, loopback HTTP, free ports, process
groups, running a command under a deadline, and finding the ordertrail binary.

Stdlib only, so that both venvs (Phoenix's and the API contract's) can import it from this directory.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = "target/debug/ordertrail"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

EXIT_OK = 0
EXIT_ASSERT = 1
EXIT_HARNESS = 2


class HarnessError(Exception):
    """Environment / tooling problem (not a finding about ordertrail)."""


_prefix = "e2e"


def set_log_prefix(name: str) -> None:
    """Names the harness in every log line."""
    global _prefix
    _prefix = name


def log(msg: str) -> None:
    print(f"[{_prefix} {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tail(path: Path, n: int = 40, keep: Optional[Callable[[str], bool]] = None) -> str:
    """The last `n` lines of a captured output, without colour codes; `keep` filters lines first."""
    try:
        lines = ANSI.sub("", path.read_text(errors="replace")).splitlines()
    except OSError:
        return "(no output captured)"
    if keep is not None:
        lines = [line for line in lines if keep(line)]
    return "\n".join(lines[-n:]) if lines else "(empty)"


# No proxies: everything the harnesses talk to is on loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, accept: str = "application/json", timeout: float = 10.0) -> tuple[int, str, bytes]:
    """(status, content-type, body); HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct free ports on `host`; every socket stays open until all are picked, so none repeats."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"pid {proc.pid} ignored SIGTERM for {grace:.0f}s; SIGKILL")
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def run_cmd(
    argv: list[str],
    timeout: float,
    out_path: Path,
    cwd: Path,
    env: Optional[dict[str, str]] = None,
    timed_out: type[Exception] = HarnessError,
) -> tuple[int, str]:
    """Runs to completion (stdout+stderr to `out_path`) and returns (exit code, output without colour codes);
    kills its process group on timeout (raising `timed_out`) or on a signal."""
    log(f"$ {shlex.join(argv)}")
    with open(out_path, "wb") as out:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            raise HarnessError(f"cannot run {argv[0]!r}: {e}") from e
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc, grace=5)
            raise timed_out(f"command timed out after {timeout:.0f}s: {shlex.join(argv)}\n"
                            f"output tail:\n{tail(out_path)}")
        except BaseException:  # signal / Ctrl-C: don't leave the command running
            kill_group(proc, grace=5)
            raise
    return rc, ANSI.sub("", out_path.read_text(errors="replace"))


def ordertrail_bin() -> str:
    """$ORDERTRAIL_BIN, or the debug build: a bare name is looked up on PATH, a relative path is taken from the
    repository root."""
    bin_path = os.environ.get("ORDERTRAIL_BIN") or DEFAULT_BIN
    if os.sep not in bin_path:
        return shutil.which(bin_path) or bin_path
    if not os.path.isabs(bin_path):
        return str(REPO_ROOT / bin_path)
    return bin_path


def stop_on_signals() -> None:
    """Turns SIGTERM/SIGHUP (e.g. from `timeout`) into SystemExit, so that `finally` clauses stop what was started."""

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


def outcome(error: BaseException, finding: type[Exception]) -> tuple[int, str]:
    """The exit code and verdict of a run that ended with `error`; `finding` is the harness's failed-check type."""
    if isinstance(error, finding):
        return EXIT_ASSERT, f"FAIL: {error}"
    if isinstance(error, HarnessError):
        return EXIT_HARNESS, f"ERROR: {error}"
    if isinstance(error, KeyboardInterrupt):
        return 130, "ERROR: interrupted"
    if isinstance(error, SystemExit):
        return int(error.code or 1), f"ERROR: stopped by a signal (exit {error.code})"
    import traceback

    traceback.print_exception(error)
    return EXIT_HARNESS, f"ERROR: unexpected {type(error).__name__}: {error}"


def finish(workdir: Path, keep: bool, timings: dict[str, float]) -> None:
    """Logs the timings and keeps the working directory for a look when asked to or when the run failed."""
    log("timings: " + ", ".join(f"{k}={v:.2f}" for k, v in timings.items()))
    if keep:
        log(f"workdir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


class OrdertrailRun:
    """`ordertrail run` on free loopback ports with the embedded default."""

    def __init__(self, bin_path: str, workdir: Path):
        self.bin = bin_path
        self.workdir = workdir
        self.proc: Optional[subprocess.Popen] = None
        self.api = ""
        self.otlp_http = ""
        self.otlp_grpc = ""

    def start(self, timeout: float) -> None:
        grpc, http, api_http, api_grpc = free_ports(4)
        self.api = f"http://127.0.0.1:{api_http}"
        self.otlp_http = f"http://127.0.0.1:{http}/v1/traces"
        self.otlp_grpc = f"http://127.0.0.1:{grpc}"
        argv = [self.bin, "run", "--grpc-listen", f"127.0.0.1:{grpc}", "--http-listen", f"127.0.0.1:{http}",
                "--api-http-listen", f"127.0.0.1:{api_http}", "--api-grpc-listen", f"127.0.0.1:{api_grpc}",
                "--data-dir", str(self.workdir / "data")]
        log(f"$ {' '.join(argv)}")
        with open(self.workdir / "run.stderr", "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if http_get(f"{self.api}/readyz", accept="text/plain", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise HarnessError(f"ordertrail run did not get ready:\n{tail(self.workdir / 'run.stderr')}")

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc, grace=20)
