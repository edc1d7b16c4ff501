//! A history of orders with known delay causes, as plain data: the spans each system would record, with their
//! times, and why an order ran late. The risk benchmark replays it straight into the engine; the demo plays its
//! tail through the OpenTelemetry SDK, so that the delay model has a past to learn from and today's orders from the
//! slow warehouse show up at risk.
//!
//! The causes are those of the source text's regional distributor:
//! - **a slow warehouse**: WH-SOUTH releases orders to the floor 3-6 h after capture (the others within 2 h) and
//!   picks and packs slowly, with short picks;
//! - **a carrier with a mapping failure**: from the middle of the history on, the middleware fails to map Baltic
//!   Road Lines' pickup status (`field ShipDate: expected yyyy-MM-dd, got 11/26/2026`), and the shipment
//!   confirmation reaches the ERP a day or more late, when someone keys it in;
//! - **a credit backlog**: on every fifth day, from 08:00 to 14:00, credit control holds standard orders and
//!   releases them hours later.
//!
//! Every random choice comes from a small seeded generator, so a history is the same on every machine.

use std::time::Duration;

/// Why an order of the history ran late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DelayCause {
    SlowWarehouse,
    CarrierMappingFailure,
    CreditBacklog,
}

impl DelayCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DelayCause::SlowWarehouse => "slow warehouse",
            DelayCause::CarrierMappingFailure => "carrier mapping failure",
            DelayCause::CreditBacklog => "credit backlog",
        }
    }
}

/// An attribute value of a step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepValue {
    Text(String),
    Int(i64),
    Float(f64),
}

/// One span a system records.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryStep {
    /// The system's `service.name`.
    pub system: &'static str,
    pub name: &'static str,
    pub start_unix_nanos: u64,
    pub duration: Duration,
    pub attributes: Vec<(&'static str, StepValue)>,
    /// The span's error status message, when it failed.
    pub error: Option<String>,
}

impl HistoryStep {
    pub fn end_unix_nanos(&self) -> u64 {
        self.start_unix_nanos.saturating_add(u64::try_from(self.duration.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// One order of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryOrder {
    pub id: String,
    pub segment: &'static str,
    pub warehouse: &'static str,
    pub carrier: &'static str,
    /// When the order was captured.
    pub captured_unix_nanos: u64,
    /// What made it late, if anything did.
    pub causes: Vec<DelayCause>,
    /// Its spans, in the order they happened.
    pub steps: Vec<HistoryStep>,
}

/// What history to make.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryOptions {
    pub orders: usize,
    /// When the first order is captured.
    pub start_unix_nanos: u64,
    /// The time between two captures.
    pub spacing: Duration,
    pub seed: u64,
    /// Orders are numbered from here (`SO-<n>`), so that two histories can be told apart.
    pub first_number: u64,
}

pub const WAREHOUSES: [&str; 3] = ["WH-EAST", "WH-WEST", "WH-SOUTH"];
pub const CARRIERS: [&str; 2] = ["NorthFreight", "Baltic Road Lines"];
const SLOW_WAREHOUSE: &str = "WH-SOUTH";
const FAILING_CARRIER: &str = "Baltic Road Lines";

const MINUTE: u64 = 60_000_000_000;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// A small xorshift generator: deterministic, no dependency, good enough to spread durations.
#[derive(Debug, Clone)]
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [low, high).
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low).max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn text(value: impl Into<String>) -> StepValue {
    StepValue::Text(value.into())
}

fn step(
    system: &'static str,
    name: &'static str,
    at: u64,
    millis: u64,
    attributes: Vec<(&'static str, StepValue)>,
) -> HistoryStep {
    HistoryStep { system, name, start_unix_nanos: at, duration: Duration::from_millis(millis), attributes, error: None }
}

/// Makes the history.
pub fn generate(options: &HistoryOptions) -> Vec<HistoryOrder> {
    let mut random = Random(options.seed.max(1));
    let spacing = u64::try_from(options.spacing.as_nanos()).unwrap_or(u64::MAX);
    // The mapping failure starts halfway through the history and stays.
    let failure_from = options.start_unix_nanos + spacing.saturating_mul(options.orders as u64 / 2);
    (0..options.orders as u64)
        .map(|i| {
            let number = options.first_number + i;
            let captured = options.start_unix_nanos + i * spacing;
            order(&mut random, number, captured, failure_from)
        })
        .collect()
}

fn order(random: &mut Random, number: u64, captured: u64, failure_from: u64) -> HistoryOrder {
    let id = format!("SO-{number}");
    let segment = if random.chance(30) { "key-account" } else { "standard" };
    let warehouse = WAREHOUSES[usize::try_from(random.next() % 3).unwrap_or(0)];
    let carrier = CARRIERS[usize::try_from(random.next() % 2).unwrap_or(0)];
    let mut causes = Vec::new();
    let mut steps = Vec::new();
    let oid = || ("order.id", text(format!("SO-{number}")));
    steps.push(step(
        "customer-portal",
        "order.create",
        captured,
        220,
        vec![
            oid(),
            ("customer.id", text(format!("C-{}", 100 + number % 40))),
            ("customer.segment", text(segment)),
            // The ship-from warehouse and the carrier are chosen at entry, from the customer's address and terms.
            ("warehouse.id", text(warehouse)),
            ("carrier.name", text(carrier)),
        ],
    ));
    // Credit: minutes, except in a backlog (every fifth day, 08:00-14:00 UTC, standard orders) when it is held.
    let hour_of_day = captured % DAY / HOUR;
    let backlog = (captured / DAY) % 5 == 0 && (8..14).contains(&hour_of_day) && segment == "standard";
    let mut t = captured + random.between(5, 20) * MINUTE;
    if backlog {
        causes.push(DelayCause::CreditBacklog);
        let mut held = step("erp", "credit.check", t, 380, vec![oid(), ("credit.decision", text("hold"))]);
        held.error = Some(format!(
            "credit hold: limit utilisation {}% above the {}% limit; review queue position {}",
            91 + random.between(0, 8),
            90,
            random.between(20, 140)
        ));
        steps.push(held);
        t += random.between(180, 360) * MINUTE;
    }
    steps.push(step("erp", "credit.check", t, 410, vec![oid(), ("credit.decision", text("approved"))]));
    t += random.between(10, 30) * MINUTE;
    steps.push(step("wms", "inventory.allocate", t, 95, vec![oid(), ("warehouse.id", text(warehouse))]));
    // Release to the floor: a slow warehouse takes hours.
    let slow = warehouse == SLOW_WAREHOUSE;
    t += if slow { random.between(180, 360) } else { random.between(15, 100) } * MINUTE;
    if slow && captured + 2 * HOUR < t {
        causes.push(DelayCause::SlowWarehouse);
    }
    steps.push(step("wms", "wave.release", t, 60, vec![oid(), ("warehouse.id", text(warehouse))]));
    t += if slow { random.between(240, 540) } else { random.between(60, 240) } * MINUTE;
    if slow && random.chance(40) {
        let mut short =
            step("wms", "pick.confirm", t - 20 * MINUTE, 70, vec![oid(), ("wms.pick.status", text("partial"))]);
        short.error = Some(format!(
            "short pick: {} units not found at location {}-{:02}-{}",
            random.between(2, 30),
            ["A", "B", "C"][usize::try_from(random.next() % 3).unwrap_or(0)],
            random.between(1, 40),
            random.between(1, 6)
        ));
        steps.push(short);
    }
    steps.push(step("wms", "pack.confirm", t, 80, vec![oid(), ("delivery.id", text(format!("DL-{number}")))]));
    let packed = t;
    t += 20 * MINUTE;
    steps.push(step(
        "tms",
        "carrier.book",
        t,
        150,
        vec![
            ("delivery.id", text(format!("DL-{number}"))),
            ("shipment.id", text(format!("SH-{number}"))),
            ("carrier.name", text(carrier)),
        ],
    ));
    // The carrier's pickup: hours, unless the middleware fails to map the failing carrier's status.
    let failing = carrier == FAILING_CARRIER && captured >= failure_from;
    let pickup = packed + random.between(180, 900) * MINUTE;
    if failing {
        causes.push(DelayCause::CarrierMappingFailure);
        let mut mapping = step(
            "integration-middleware",
            "map carrier.status -> erp.shipment_confirmation",
            pickup,
            30,
            vec![("shipment.id", text(format!("SH-{number}"))), ("mapping.source", text("carrier.status"))],
        );
        let day = 1 + (pickup / DAY) % 28;
        mapping.error = Some(format!("field ShipDate: expected yyyy-MM-dd, got 12/{day:02}/2026"));
        steps.push(mapping);
        // Someone notices the next morning and keys the confirmation in.
        t = packed + random.between(26 * 60, 40 * 60) * MINUTE;
    } else {
        t = pickup;
    }
    steps.push(step("tms", "shipment.pickup.confirm", t, 120, vec![("shipment.id", text(format!("SH-{number}")))]));
    t += random.between(10, 60) * MINUTE;
    steps.push(step(
        "finance",
        "invoice.create",
        t,
        300,
        vec![oid(), ("invoice.id", text(format!("INV-{number}"))), ("shipment.id", text(format!("SH-{number}")))],
    ));
    HistoryOrder { id, segment, warehouse, carrier, captured_unix_nanos: captured, causes, steps }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> Vec<HistoryOrder> {
        generate(&HistoryOptions {
            orders: 600,
            start_unix_nanos: 1_780_000_000 * 1_000_000_000,
            spacing: Duration::from_secs(20 * 60),
            seed: 7,
            first_number: 50_000,
        })
    }

    #[test]
    fn the_same_seed_gives_the_same_history_and_every_cause_occurs() {
        let (a, b) = (history(), history());
        assert_eq!(a, b);
        let count = |cause| a.iter().filter(|o| o.causes.contains(&cause)).count();
        assert!(count(DelayCause::SlowWarehouse) > 100, "{}", count(DelayCause::SlowWarehouse));
        assert!(count(DelayCause::CarrierMappingFailure) > 100);
        assert!(count(DelayCause::CreditBacklog) > 5);
        // The failure begins halfway: no order before it is affected.
        assert!(a[..300].iter().all(|o| !o.causes.contains(&DelayCause::CarrierMappingFailure)));
    }

    #[test]
    fn steps_are_in_time_order_and_a_failing_carrier_confirms_a_day_late() {
        for order in history() {
            let starts: Vec<u64> = order.steps.iter().map(|s| s.start_unix_nanos).collect();
            assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{}", order.id);
            let at = |name: &str| order.steps.iter().rev().find(|s| s.name == name).unwrap().start_unix_nanos;
            let latency = at("shipment.pickup.confirm") - at("pack.confirm");
            if order.causes.contains(&DelayCause::CarrierMappingFailure) {
                assert!(latency > 24 * HOUR, "{}", order.id);
            } else {
                assert!(latency < 16 * HOUR, "{}", order.id);
            }
        }
    }
}
