#!/usr/bin/env python3
"""The ops console in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`), driven over
WebDriver by Selenium, against the real binary.

  1. `ordertrail demo` (the README's first command) runs the seed scenario and keeps serving the console; the test
     reads the console's address from what the demo prints.
  2. Flow: every stage of the main path, left to right; the seed order's stage shows it open, breached, blocked,
     with its exception classes.
  3. Stalled list, reached by keyboard from the navigation: the seed order with owner `integration-team` and why.
  4. Order page: the timeline chart (milestones reached, SLA deadlines, exceptions), the e-mail approval (the
     pricing approval's actor and the policy exception it raised) and the link to the order trace.
  5. Team queues: `integration-team` sees the seed order and only its own items; `warehouse-operations` does not
     see the seed order as its own stalled item.
  6. Search by shipment number lands on the order; the page refreshes itself without reloading; the browser
     reports no error (a Content-Security-Policy violation would be one).
  7. Load times with 10,000 open orders: a second ordertrail (`run`) is sent 10,000 orders over OTLP/HTTP, and each
     view is timed from navigation to drawn. Reported, not asserted (BENCHMARKS.md has the figures).

Screenshots of each view go to --screenshots (default target/console-screenshots).
Exit codes: 0 pass, 1 a check failed, 2 the harness could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (EXIT_OK, HarnessError, REPO_ROOT, OrdertrailRun, http_get, kill_group, log,  # noqa: E402
                     ordertrail_bin, outcome, set_log_prefix, stop_on_signals, tail)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

SEED = "SO-10042"
SEED_SHIPMENT = "SH-10042"
SEED_OWNER = "integration-team"
WIDTH, HEIGHT = 1366, 900  # a laptop screen


class CheckFailed(Exception):
    """A finding about the console."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --------------------------------------------------------------------------- #
# Processes                                                                   #
# --------------------------------------------------------------------------- #

class Demo:
    """`ordertrail demo`, serving its console until stopped."""

    def __init__(self, bin_path: str, workdir: Path):
        self.out_path = workdir / "demo.out"
        self.bin = bin_path
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float) -> str:
        log(f"$ {self.bin} demo")
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen([self.bin, "demo"], stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.out_path.read_text(errors="replace")
            found = re.search(r"(http://127\.0\.0\.1:\d+)/ui", text)
            if found:
                log(f"the demo serves its console at {found.group(0)}")
                return found.group(1)
            if self.proc.poll() is not None:
                raise HarnessError(f"the demo exited with {self.proc.returncode}:\n{tail(self.out_path)}")
            time.sleep(0.2)
        raise HarnessError(f"the demo printed no console address within {timeout:.0f}s:\n{tail(self.out_path)}")

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc, grace=20)
            log(f"the demo exited with code {self.proc.returncode}")


# --------------------------------------------------------------------------- #
# The browser                                                                 #
# --------------------------------------------------------------------------- #

def browser(chromium: str, driver: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", f"--window-size={WIDTH},{HEIGHT}", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def drawn(driver: webdriver.Chrome, what: str, timeout: float = 20) -> None:
    """Waits until the view in the URL is drawn (the console marks `main` when it has drawn a view)."""
    try:
        WebDriverWait(driver, timeout).until(
            lambda d: d.execute_script(
                "const m = document.getElementById('main');"
                "return m.dataset.ready === 'true' && !m.querySelector('.loading') && m.dataset.view === arguments[0];",
                driver.execute_script("return location.hash"),
            )
        )
    except TimeoutException:
        raise CheckFailed(f"{what} was not drawn within {timeout:.0f}s; page text:\n"
                          f"{driver.find_element(By.TAG_NAME, 'main').text[:2000]}")


def go(driver: webdriver.Chrome, url: str, what: str) -> None:
    driver.get(url)
    drawn(driver, what)


def shot(driver: webdriver.Chrome, directory: Path, name: str) -> None:
    # The whole page, not only the window: a long accountability list is part of the order page.
    height = driver.execute_script("return Math.max(document.body.scrollHeight, window.innerHeight)")
    driver.set_window_size(WIDTH, min(max(HEIGHT, height + 120), 2400))
    path = directory / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(WIDTH, HEIGHT)
    log(f"screenshot {path}")


def rows(driver: webdriver.Chrome, css: str) -> list[list[str]]:
    # In one script, so that a view redrawn by the live refresh meanwhile cannot leave half-read, stale rows.
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(r => [...r.querySelectorAll('td')].map(c => c.innerText.trim()));", css)


def browser_errors(driver: webdriver.Chrome) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


# --------------------------------------------------------------------------- #
# Checks on the seed scenario                                                 #
# --------------------------------------------------------------------------- #

def seed_checks(driver: webdriver.Chrome, base: str, trace_id: str, screenshots: Path) -> None:
    flow = json.loads(http_get(f"{base}/v1/flow")[2])
    main_path = [s["stage"] for s in flow["stages"]]

    # Flow: the stages left to right, the seed order's with its state and classes.
    go(driver, f"{base}/ui", "the flow")
    cards = driver.find_elements(By.CSS_SELECTOR, "ol.flow li.stage")
    check([c.get_attribute("data-stage") for c in cards] == main_path,
          f"the flow draws the main path in order: {[c.get_attribute('data-stage') for c in cards]} vs {main_path}")
    xs = [c.rect["x"] for c in cards]
    check(xs == sorted(xs), f"stages run left to right: {xs}")
    seed_stage = json.loads(http_get(f"{base}/v1/orders/{SEED}")[2])["stage"]
    card = driver.find_element(By.CSS_SELECTOR, f'li.stage[data-stage="{seed_stage}"]')
    text = card.text
    # The demo's history has orders at the seed's stage too: the card shows what the API counts, and the API counts
    # the seed among the breached and blocked.
    counts = next(s for s in flow["stages"] if s["stage"] == seed_stage)
    check(counts["open"] >= 1 and counts["breached"] >= 1 and counts["blocked"] >= 1,
          f"the seed's stage counts it open, breached and blocked: {counts}")
    for expected in (f"{counts['open']}\nopen", f"at risk {counts['at_risk']}", f"breached {counts['breached']}",
                     f"blocked {counts['blocked']}", "integration"):
        check(expected.replace("\n", " ") in text.replace("\n", " "), f"the {seed_stage} card shows {expected!r}: {text!r}")
    risky = [s for s in flow["stages"] if s["at_risk"] > 0]
    check(risky, f"the history's orders in flight put some stage at risk: {flow['stages']}")
    risky_card = driver.find_element(By.CSS_SELECTOR, f'li.stage[data-stage="{risky[0]["stage"]}"]').text
    check(f"at risk {risky[0]['at_risk']}" in risky_card.replace("\n", " "), f"the at-risk count is drawn: {risky_card!r}")
    check(all(c.rect["x"] + c.rect["width"] <= WIDTH + 1 for c in cards),
          "every stage fits a laptop screen's width")
    shot(driver, screenshots, "flow")

    # The stage lists its orders.
    card.find_element(By.TAG_NAME, "a").click()
    drawn(driver, "the stage's list")
    check(SEED in driver.find_element(By.TAG_NAME, "main").text, "the stage's list names the seed order")

    # Stalled list, reached with the keyboard: Tab to the navigation link and press Enter.
    driver.get("about:blank")
    go(driver, f"{base}/ui#/flow", "the flow, loaded afresh")
    for _ in range(8):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        if driver.switch_to.active_element.get_attribute("data-view") == "stalled":
            break
    focused = driver.switch_to.active_element
    check(focused.get_attribute("data-view") == "stalled",
          f"the stalled list's link is reachable by Tab, focus is on {focused.tag_name} {focused.text!r}")
    focused.send_keys(Keys.ENTER)
    drawn(driver, "the stalled list")
    stalled = rows(driver, "main table tbody tr")
    seed_rows = [r for r in stalled if r and r[0] == SEED]
    check(len(seed_rows) == 1, f"the seed order is in the stalled list once: {stalled}")
    row = seed_rows[0]
    check(row[2] == SEED_OWNER, f"its owner is {SEED_OWNER}: {row}")
    check("integration exception" in row[3] and "ShipDate" in row[3], f"the reason says why: {row}")
    shot(driver, screenshots, "stalled")

    # Order page: timeline, e-mail approval, trace link.
    driver.find_element(By.LINK_TEXT, SEED).click()
    drawn(driver, "the order page")
    svg = driver.find_element(By.CSS_SELECTOR, ".timeline svg")
    reached = svg.find_elements(By.CSS_SELECTOR, "circle")
    deadlines = svg.find_elements(By.CSS_SELECTOR, "line.deadline, line.deadline-met")
    exceptions = svg.find_elements(By.CSS_SELECTOR, "path.exception, path.resolved")
    check(len(reached) >= 5, f"the timeline draws the milestones reached: {len(reached)}")
    check(len(deadlines) >= 1, "the timeline draws the SLA deadlines")
    check(len(exceptions) >= 3, f"the timeline draws the exceptions: {len(exceptions)}")
    xs = [float(c.get_attribute("cx")) for c in reached]
    check(xs == sorted(xs), f"milestones on a time axis, in the order reached: {xs}")
    accountability = rows(driver, "main table:nth-of-type(1) tbody tr")
    pricing = [r for r in accountability if r and r[0] == "pricing approval"]
    check(pricing and pricing[0][8] == "j.moreau@regional-distributor.example",
          f"the pricing approval shows who approved by e-mail: {pricing}")
    # The approval by e-mail raised a policy exception naming the approver (columns: class, owner, milestone,
    # reason, status, first seen, system, actor).
    exception_rows = rows(driver, "main table:nth-of-type(2) tbody tr")
    outside = [r for r in exception_rows if r and r[3] == "approval-outside-system-of-record"]
    check(len(outside) == 1 and outside[0][0] == "policy" and outside[0][1] == "commercial-controls"
          and outside[0][7] == "j.moreau@regional-distributor.example",
          f"the e-mail approval's policy exception is on the order page: {exception_rows}")
    link = driver.find_element(By.CSS_SELECTOR, "a.trace-link")
    check(trace_id in link.get_attribute("href"), f"the trace link opens the order trace: {link.get_attribute('href')}")
    check(SEED_OWNER in driver.find_element(By.CSS_SELECTOR, ".next").text, "the next action's owner is shown")
    recommended = driver.find_element(By.CSS_SELECTOR, ".recommended").text
    check("Correct the carrier status mapping" in recommended and "integration-team" in recommended,
          f"the carrier-status-mapping playbook's action is recommended: {recommended!r}")
    shot(driver, screenshots, "order")

    # Insight: orders at risk with their probability and basis, recurring patterns with their playbook.
    go(driver, f"{base}/ui#/insight", "the insight view")
    at_risk = rows(driver, "section[aria-labelledby=at-risk] tbody tr")
    check(at_risk and all(r[5].endswith("%") and r[6] for r in at_risk),
          f"orders at risk are listed with a probability and what it is based on: {at_risk[:3]}")
    patterns = rows(driver, "section[aria-labelledby=patterns] tbody tr")
    shipdate = [r for r in patterns if r and r[3] == "field ShipDate: expected yyyy-MM-dd, got <date>"]
    check(len(shipdate) == 1 and shipdate[0][0] == "integration" and shipdate[0][8] == "carrier-status-mapping"
          and int(shipdate[0][5]) >= 2, f"the carrier mapping failure is one recurring pattern with its playbook: {patterns}")
    shot(driver, screenshots, "insight")
    # The list redraws as more clocks reach their risk point, so the order is opened by its address.
    link = driver.execute_script("return document.querySelector('section[aria-labelledby=at-risk] tbody tr a').href")
    go(driver, link, "an order at risk")
    risk = driver.find_element(By.CSS_SELECTOR, ".risk").text
    check("breach probability" in risk and "past orders" in risk, f"the order page says why it is at risk: {risk!r}")
    check(driver.find_elements(By.CSS_SELECTOR, ".timeline svg rect.at-risk"), "the timeline marks when it was found at risk")

    # Team queues: chosen in the page; each shows only its own items.
    go(driver, f"{base}/ui#/team", "the team view")
    Select(driver.find_element(By.ID, "team-select")).select_by_visible_text(SEED_OWNER)
    drawn(driver, "the integration team's queue")
    mine = rows(driver, "section[aria-labelledby=team-stalled] tbody tr")
    check(any(r[0] == SEED for r in mine), f"{SEED_OWNER}'s queue has the seed order: {mine}")
    check(all(r[2] == SEED_OWNER for r in mine), f"only {SEED_OWNER}'s stalled orders: {mine}")
    classes = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "section[aria-labelledby=team-exceptions] tbody td:first-child")]
    owned = {c["class"].replace("_", " ") for c in flow["exception_classes"] if c["owner"] == SEED_OWNER}
    check(classes and set(classes) <= owned, f"only classes {SEED_OWNER} owns: {classes} vs {owned}")
    shot(driver, screenshots, "team")
    Select(driver.find_element(By.ID, "team-select")).select_by_visible_text("warehouse-operations")
    drawn(driver, "the warehouse team's queue")
    theirs = rows(driver, "section[aria-labelledby=team-stalled] tbody tr")
    check(not any(r and r[0] == SEED for r in theirs), f"the seed order is not the warehouse's to act on: {theirs}")

    # Search by an alias lands on the order.
    box = driver.find_element(By.ID, "search-input")
    box.clear()
    box.send_keys(SEED_SHIPMENT, Keys.ENTER)
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return location.hash") == f"#/order/{SEED}")
    drawn(driver, "the order found by its shipment")

    # Live: the page asks again on its own, without reloading.
    driver.execute_script("window.__stillThisPage = true")
    before = driver.find_element(By.ID, "status").text
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "status").text != before)
    check(driver.execute_script("return window.__stillThisPage === true"), "the refresh did not reload the page")

    errors = browser_errors(driver)
    check(not errors, f"the browser reported errors: {errors}")


# --------------------------------------------------------------------------- #
# Load time with many open orders                                             #
# --------------------------------------------------------------------------- #

def otlp_span(trace: str, span: int, name: str, start_ns: int, attrs: dict[str, str]) -> dict:
    return {
        "traceId": trace, "spanId": f"{span:016x}", "name": name, "kind": 1,
        "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + 40_000_000),
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()],
    }


def send_orders(endpoint: str, count: int) -> None:
    """`count` open orders spread over the first stages, captured over the last two days: some on time, some
    overdue, a few with a failed step."""
    rng = random.Random(7)
    now = time.time_ns()
    minute = 60_000_000_000
    batch: list[dict] = []
    # (system, span name, attributes, share of the orders that got this far which go on, minutes after the last)
    steps = [("erp", "credit.check", {"credit.decision": "approved"}, 0.8, 4),
             ("wms", "inventory.allocate", {}, 0.75, 30), ("wms", "wave.release", {}, 0.75, 60),
             ("wms", "pick.confirm", {}, 0.7, 120), ("tms", "shipment.confirm", {}, 0.5, 300)]
    for i in range(count):
        order = f"SO-L{i:06d}"
        t = now - rng.randint(5, 48 * 60) * minute
        # Each system sends its own trace, as they do: the order key is what joins them.
        trace_of = {"erp": f"0001{i:028x}", "wms": f"0002{i:028x}", "tms": f"0003{i:028x}"}
        by_system: dict[str, list[dict]] = {"erp": [otlp_span(trace_of["erp"], 1, "order.create", t,
                                                             {"order.id": order, "customer.id": f"C-{i % 300}"})]}
        for n, (system, name, attrs, share, after) in enumerate(steps, start=2):
            t += after * minute
            if rng.random() > share or t > now:
                break
            span = otlp_span(trace_of[system], n, name, t, {"order.id": order, **attrs})
            by_system.setdefault(system, []).append(span)
        for system, spans in by_system.items():
            batch.append({"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": system}}]},
                          "scopeSpans": [{"spans": spans}]})
        if len(batch) >= 250 or i == count - 1:
            body = json.dumps({"resourceSpans": batch}).encode()
            request = urllib.request.Request(endpoint, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30) as r:
                if r.status != 200:
                    raise HarnessError(f"OTLP/HTTP answered {r.status}")
            batch = []


def load_times(driver: webdriver.Chrome, chromium: str, bin_path: str, workdir: Path, orders: int,
               screenshots: Path) -> list[tuple[str, float, float]]:
    server = OrdertrailRun(bin_path, workdir)
    server.start(60)
    try:
        t0 = time.monotonic()
        send_orders(server.otlp_http, orders)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            open_orders = json.loads(http_get(f"{server.api}/v1/flow")[2])["open_orders"]
            if open_orders >= orders:
                break
            time.sleep(0.5)
        else:
            raise HarnessError(f"only {open_orders} of {orders} orders were open after 120 s")
        log(f"{orders} open orders sent and taken in {time.monotonic() - t0:.1f}s")
        results = []
        for name, hash_ in (("flow", "#/flow"), ("stalled and breached", "#/stalled"),
                            ("one stage's orders", "#/stage/order_capture"),
                            ("team queue", "#/team/credit-control"), ("order page", "#/order/SO-L000042")):
            times = []
            for _ in range(3):
                driver.get("about:blank")
                go(driver, f"{server.api}/ui{hash_}", name)
                times.append(driver.execute_script("return performance.now()"))
            api_ms = driver.execute_script(
                "return Math.max(0, ...performance.getEntriesByType('resource')"
                ".filter(e => e.name.includes('/v1/')).map(e => e.duration))")
            results.append((name, sorted(times)[1], api_ms))
            log(f"{name}: drawn {sorted(times)[1]:.0f} ms after navigation (median of 3); slowest API call {api_ms:.0f} ms")
        go(driver, f"{server.api}/ui#/flow", "the flow")
        shot(driver, screenshots, "flow-10000")
        return results
    finally:
        server.stop()


# --------------------------------------------------------------------------- #
# Main                                                                        #
# --------------------------------------------------------------------------- #

def main() -> int:
    set_log_prefix("console")
    stop_on_signals()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    p.add_argument("--chromedriver", default=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    p.add_argument("--screenshots", default=str(REPO_ROOT / "target" / "console-screenshots"))
    p.add_argument("--load-orders", type=int, default=10_000, help="open orders for the load times; 0 skips them")
    p.add_argument("--report", default=str(REPO_ROOT / "target" / "console-load.md"))
    a = p.parse_args()
    for tool in (a.chromium, a.chromedriver):
        if not shutil.which(tool):
            log(f"ERROR: {tool} not found; install Debian's chromium and chromium-driver")
            return 2
    screenshots = Path(a.screenshots)
    screenshots.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ordertrail-console-"))
    bin_path = ordertrail_bin()
    trace_id = subprocess.run([bin_path, "trace-id", SEED], capture_output=True, text=True, check=True).stdout.strip()
    demo = Demo(bin_path, workdir)
    driver = None
    try:
        base = demo.start(180)
        driver = browser(a.chromium, a.chromedriver)
        seed_checks(driver, base, trace_id, screenshots)
        log("PASS: flow, stalled list, order page, team queues, search and live refresh on the seed scenario")
        demo.stop()
        if a.load_orders:
            results = load_times(driver, a.chromium, bin_path, workdir, a.load_orders, screenshots)
            lines = [f"Console views with {a.load_orders:,} open orders (median of 3 loads, debug or release as run):",
                     "", "| view | drawn after navigation | slowest API call |", "|---|---|---|"]
            lines += [f"| {n} | {t:.0f} ms | {api:.0f} ms |" for n, t, api in results]
            Path(a.report).write_text("\n".join(lines) + "\n")
            log(f"load times written to {a.report}")
        return EXIT_OK
    except BaseException as error:  # noqa: BLE001 - every failure gets a verdict and the output tails
        code, verdict = outcome(error, CheckFailed)
        log(verdict)
        log(f"demo output tail:\n{tail(demo.out_path)}")
        if driver is not None:
            try:
                shot(driver, screenshots, "failure")
            except Exception:  # noqa: BLE001
                pass
        return code
    finally:
        if driver is not None:
            driver.quit()
        demo.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
