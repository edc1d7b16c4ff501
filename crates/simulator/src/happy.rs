//! Happy orders: every step passes; the last two share a consolidated shipment and a batch invoice.

use super::*;

/// The business facts of one happy order, all derived from its position so that every run of the
/// demo shows the same orders.
pub(crate) struct HappyOrder {
    /// The order's number, e.g. 20001; its delivery, shipment, notice and invoice reuse it.
    pub(crate) number: u32,
    pub(crate) id: String,
    pub(crate) customer: String,
    pub(crate) segment: &'static str,
    pub(crate) lines: i64,
    pub(crate) warehouse: &'static str,
    pub(crate) quantity: i64,
    pub(crate) amount: f64,
    pub(crate) credit_utilisation: f64,
    pub(crate) carrier: &'static str,
}

impl HappyOrder {
    pub(crate) fn new(position: u32) -> Self {
        let number = HAPPY_ORDER_BASE_NUMBER + position;
        let odd = position % 2 == 1;
        let quantity = 20 + position * 12 % 60;
        // Unit prices are whole cents so that the amounts look like real invoice totals.
        let unit_price_cents = 4_250 + position % 7 * 385;
        Self {
            number,
            id: order_id(number),
            customer: format!("C-{}", 100 + position),
            segment: if odd { "key-account" } else { "standard" },
            lines: 3 + i64::from(position * 5 % 9),
            warehouse: if odd { "WH-EAST" } else { "WH-WEST" },
            quantity: i64::from(quantity),
            amount: f64::from(quantity * unit_price_cents) / 100.0,
            // Whole percentages, so that the exported values read like the ERP's own figures.
            credit_utilisation: f64::from(35 + position % 5 * 8) / 100.0,
            carrier: if odd { "NorthFreight" } else { "Baltic Road Lines" },
        }
    }
}

/// Plays `count` orders that pass every step, the last two of which share a consolidated shipment
/// and a batch invoice, and returns their ids in sequence.
pub(crate) fn happy_orders(systems: &Systems, base: SystemTime, count: usize) -> Vec<String> {
    // Orders arrive every 35 minutes, or closer together when there are many of them, so that even
    // a long run stays inside the two simulated business days.
    let spacing = minutes(35).min(hours(8) / u32::try_from(count.max(1)).unwrap_or(u32::MAX));
    // The last two orders share a shipment and an invoice; a single order has nobody to share with.
    let consolidated = if count >= 2 { 2 } else { 0 };

    let mut ids = Vec::with_capacity(count);
    let mut packed = Vec::with_capacity(consolidated);
    // Carriers pick up on the second morning in the order the goods were packed, one slot per order,
    // and the consolidated shipment gets the slot after the last one.
    let mut day_two_slot = base + days(1) + minutes(45);
    for (index, position) in (1..=u32::try_from(count).unwrap_or(u32::MAX)).enumerate() {
        let order = HappyOrder::new(position);
        let packed_at = capture_to_pack(systems, &order, base + minutes(30) + spacing * position);
        if index + consolidated >= count {
            packed.push((order, packed_at));
        } else {
            ship_and_invoice(systems, &order, packed_at, day_two_slot);
            ids.push(order.id);
        }
        day_two_slot += spacing;
    }

    if let [(first, first_packed), (second, second_packed)] = packed.as_slice() {
        ship_and_invoice_consolidated(systems, [first, second], (*first_packed).max(*second_packed), day_two_slot);
    }
    ids.extend(packed.into_iter().map(|(order, _)| order.id));
    ids
}

/// Plays a happy order from capture to packing (steps 1 to 7) and returns when it was packed.
pub(crate) fn capture_to_pack(systems: &Systems, order: &HappyOrder, captured: SystemTime) -> SystemTime {
    let position = order.number - HAPPY_ORDER_BASE_NUMBER;
    let mut t = captured;
    capture(systems, &order.id, &order.customer, order.segment, order.lines, t);

    t += minutes(2) + seconds(13 * u64::from(position % 4));
    credit_check(systems, &order.id, order.credit_utilisation, t);

    t += minutes(12);
    systems.erp.record(
        &root(),
        "pricing.approve",
        SpanKind::Internal,
        t,
        millis(85),
        vec![KeyValue::new("order.id", order.id.clone()), KeyValue::new("pricing.decision", "approved")],
    );

    t += minutes(30);
    release(systems, &order.id, t);

    t += minutes(4);
    systems.wms.record(
        &root(),
        "inventory.allocate",
        SpanKind::Internal,
        t,
        millis(380),
        vec![
            KeyValue::new("order.id", order.id.clone()),
            KeyValue::new("warehouse.id", order.warehouse),
            KeyValue::new("inventory.snapshot_age_s", 120_i64),
            KeyValue::new("wms.allocation.status", "complete"),
        ],
    );

    // The WMS's own API is keyed by the order in its path only, which ordertrail reads through its
    // url.path pattern.
    t += minutes(50);
    systems.wms.record(
        &root(),
        "POST /api/orders/{id}/release",
        SpanKind::Server,
        t,
        millis(45),
        vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/api/orders/{id}/release"),
            KeyValue::new("url.path", format!("/api/orders/{}/release", order.id)),
            KeyValue::new("http.response.status_code", 200_i64),
        ],
    );

    t += hours(2) + minutes(30);
    systems.wms.record(
        &root(),
        "pick.confirm",
        SpanKind::Internal,
        t,
        millis(1_100),
        vec![
            KeyValue::new("order.id", order.id.clone()),
            KeyValue::new("wms.pick.status", "complete"),
            KeyValue::new("order.quantity.ordered", order.quantity),
            KeyValue::new("order.quantity.picked", order.quantity),
        ],
    );

    t += minutes(35);
    pack(systems, &order.id, &format!("DL-{}", order.number), t);
    t + millis(250)
}

/// Plays the rest of a happy order shipped on its own (steps 8 to 12): the carrier is booked soon
/// after packing on the first day, and picks the goods up on the second day at `pickup`.
pub(crate) fn ship_and_invoice(systems: &Systems, order: &HappyOrder, packed: SystemTime, pickup: SystemTime) {
    let number = order.number;
    let shipment = format!("SH-{number}");

    book_carrier(systems, &format!("DL-{number}"), &shipment, order.carrier, packed + minutes(25));
    confirm_pickup(systems, &shipment, Some((number, order.quantity)), pickup);
    send_asn(systems, &shipment, &format!("ASN-{number}"), number, pickup + minutes(8));

    let invoiced = pickup + minutes(45);
    systems.finance.record(
        &root(),
        "invoice.create",
        SpanKind::Internal,
        invoiced,
        millis(140),
        vec![
            KeyValue::new("order.id", order.id.clone()),
            KeyValue::new("invoice.id", format!("INV-{number}")),
            KeyValue::new("invoice.amount", order.amount),
            KeyValue::new("invoice.currency", "EUR"),
        ],
    );
    notify(systems, &order.id, invoiced + minutes(2));
}

/// Plays the shared end of two happy orders: one consolidated shipment, one notice, one batch
/// invoice.
pub(crate) fn ship_and_invoice_consolidated(
    systems: &Systems,
    orders: [&HappyOrder; 2],
    last_packed: SystemTime,
    pickup: SystemTime,
) {
    let order_ids =
        || Value::Array(Array::String(orders.iter().map(|order| StringValue::from(order.id.clone())).collect()));

    // The consolidated booking names its orders directly, because it replaces both deliveries' own
    // bookings and so has no single delivery to be resolved through.
    systems.tms.record(
        &root(),
        "carrier.book",
        SpanKind::Client,
        last_packed + minutes(25),
        millis(940),
        vec![
            KeyValue::new("shipment.id", CONSOLIDATED_SHIPMENT_ID),
            KeyValue::new("order.ids", order_ids()),
            KeyValue::new("carrier.name", "NorthFreight"),
        ],
    );
    confirm_pickup(systems, CONSOLIDATED_SHIPMENT_ID, None, pickup);
    send_asn(systems, CONSOLIDATED_SHIPMENT_ID, CONSOLIDATED_ASN_ID, CONSOLIDATED_CONTROL_NUMBER, pickup + minutes(8));

    let invoiced = pickup + hours(1);
    systems.finance.record(
        &root(),
        "invoice.batch.post",
        SpanKind::Internal,
        invoiced,
        millis(320),
        vec![
            KeyValue::new("order.ids", order_ids()),
            KeyValue::new("invoice.amount", orders.iter().map(|order| order.amount).sum::<f64>()),
            KeyValue::new("invoice.currency", "EUR"),
        ],
    );
    for (offset, order) in (0..).zip(orders) {
        notify(systems, &order.id, invoiced + minutes(2) + seconds(offset));
    }
}
