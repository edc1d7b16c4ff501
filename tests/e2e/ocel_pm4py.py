#!/usr/bin/env python3
"""The OCEL 2.0 export read by pm4py: a real ordertrail (`run`) is sent the simulator's orders (the seed scenario
and happy orders) through the real OpenTelemetry SDK (`ordertrail simulate`), `ordertrail export-ocel` writes the
log, pm4py (`read_ocel2_json`) loads it and computes its object-centric directly-follows graph
(`discover_ocdfg`). The graph's edges for orders must be exactly the successions of each order's milestones,
exceptions and breaches as the order API reports them, and include the main path of the happy orders.

Exit codes: 0 pass, 1 a check failed, 2 the harness could not run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (EXIT_OK, OrdertrailRun, http_get, log, ordertrail_bin, outcome,  # noqa: E402
                     set_log_prefix, stop_on_signals)

import pm4py  # noqa: E402

SEED = "SO-10042"
# The last export, kept for a look (the working directory is removed).
REPORT_COPY = Path(tempfile.gettempdir()) / "ordertrail-last.jsonocel"
MAIN_PATH = ["order_capture", "credit_approval", "pricing_approval", "inventory_allocation", "pick_release",
             "pick_pack", "shipment_confirmation", "invoicing"]


class CheckFailed(Exception):
    """A finding about the export."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def nanos(text: str) -> int:
    """An RFC 3339 time as Unix nanoseconds, keeping every digit (Python's datetime keeps microseconds)."""
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z", text)
    if not match:
        raise CheckFailed(f"not an RFC 3339 UTC time: {text}")
    whole = time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")
    import calendar
    fraction = (match.group(2) or "").ljust(9, "0")[:9]
    return calendar.timegm(whole) * 1_000_000_000 + int(fraction)


def expected_successions(view: dict) -> set[tuple[str, str]]:
    """What follows what in one order, from the order API: milestones reached, exceptions raised and resolved
    (not the breach exceptions, which are told as breaches), SLA breaches at their deadlines."""
    events = [(nanos(m["reached_at"]), m["name"]) for m in view["milestones"] if m.get("reached_at")]
    for e in view["exceptions"]:
        if e["signature"].startswith("sla:"):
            continue
        events.append((nanos(e["first_seen"]), f"{e['class']} exception raised"))
        if e.get("resolved_at"):
            events.append((nanos(e["resolved_at"]), f"{e['class']} exception resolved"))
    events += [(nanos(s["deadline"]), "sla breached") for s in view["slas"] if s["status"] == "breached"]
    # Events at the same instant follow one another by type, as the export orders them.
    events.sort()
    return {(a[1], b[1]) for a, b in zip(events, events[1:])}


def main() -> int:
    set_log_prefix("ocel")
    stop_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="ordertrail-ocel-"))
    bin_path = ordertrail_bin()
    server = OrdertrailRun(bin_path, workdir)
    try:
        server.start(60)
        sent = subprocess.run([bin_path, "simulate", "--endpoint", server.otlp_grpc, "--orders", "5"],
                              capture_output=True, text=True, timeout=120, check=True)
        orders = [line.strip() for line in sent.stdout.splitlines() if line.strip()]
        check(SEED in orders and len(orders) == 6, f"the simulator's orders: {orders}")
        # Milestones settle and the seed order's clocks breach after the detection delay.
        deadline = time.monotonic() + 90
        while True:
            views = {o: json.loads(http_get(f"{server.api}/v1/orders/{o}")[2]) for o in orders}
            breached = sum(s["status"] == "breached" for s in views[SEED].get("slas", []))
            closed = sum(v.get("status") == "closed" for v in views.values())
            if breached == 2 and closed == 5:
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"the orders did not settle: {breached} breaches, {closed} closed")
            time.sleep(0.5)
        path = workdir / "orders.jsonocel"
        subprocess.run([bin_path, "export-ocel", "--api", server.api, "--output", str(path)], check=True, timeout=60)
        log(f"exported {path.stat().st_size} bytes")
        shutil.copy(path, REPORT_COPY)

        ocel = pm4py.read_ocel2_json(str(path))
        check(set(ocel.objects["ocel:type"]) >= {"order", "shipment", "delivery", "invoice"},
              f"object types: {sorted(set(ocel.objects['ocel:type']))}")
        check(set(ocel.objects[ocel.objects["ocel:type"] == "order"]["ocel:oid"]) == set(orders),
              "every simulated order is an object")
        o2o = ocel.o2o
        seed_shipment = o2o[(o2o["ocel:oid"] == "shipment:SH-10042")]
        check(list(seed_shipment["ocel:oid_2"]) == [SEED], f"the seed's shipment relates to its order: {seed_shipment}")
        ocdfg = pm4py.discover_ocdfg(ocel)
        edges = set(ocdfg["edges"]["event_couples"]["order"].keys())
        expected = set().union(*(expected_successions(v) for v in views.values()))
        check(edges == expected,
              f"the order type's directly-follows edges are the orders' successions:\n"
              f"  only in pm4py: {sorted(edges - expected)}\n  only in the API: {sorted(expected - edges)}")
        main_path = set(zip(MAIN_PATH, MAIN_PATH[1:]))
        check(main_path <= edges, f"the happy orders' main path is in the graph: missing {sorted(main_path - edges)}")
        seed = expected_successions(views[SEED])
        check(any("policy exception raised" in pair for pair in seed) and
              any("integration exception raised" in pair for pair in seed) and
              any("sla breached" in pair for pair in seed),
              f"the seed's e-mail approval, mapping failure and breaches are in its succession: {sorted(seed)}")
        log(f"PASS: {len(ocel.events)} events, {len(ocel.objects)} objects, {len(edges)} directly-follows edges "
            f"for orders, all matching the order API; the main path and the seed's exceptions among them")
        return EXIT_OK
    except BaseException as error:  # noqa: BLE001 - every failure gets a verdict
        code, verdict = outcome(error, CheckFailed)
        log(verdict)
        return code
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
