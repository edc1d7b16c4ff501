//! The seed order `SO-10042`: the "regional distributor" scenario, in which every step ordertrail should flag goes
//! wrong.

use super::*;

/// Plays order `SO-10042`, in which every step that ordertrail should flag goes wrong.
pub(crate) fn seed_scenario(systems: &Systems, base: SystemTime) {
    let number = SEED_ORDER_NUMBER;
    let order = order_id(number);
    let delivery = format!("DL-{number}");
    let shipment = format!("SH-{number}");

    // (a) The regional distributor's order is captured and its credit is approved as usual.
    let mut t = base + minutes(9);
    capture(systems, &order, "C-REG-7", "regional-distributor", 12, t);
    t += minutes(3) + seconds(14);
    credit_check(systems, &order, 0.81, t);

    // (b) A line is substituted because the ordered article is discontinued, which changes its
    // price.
    t += minutes(6);
    systems.erp.record(
        &root(),
        "order.line.substitute",
        SpanKind::Internal,
        t,
        millis(35),
        vec![
            KeyValue::new("order.id", order.clone()),
            KeyValue::new("product.substituted_from", "SKU-4410"),
            KeyValue::new("product.substituted_to", "SKU-4412"),
        ],
    );

    // (c) The pricing check that follows the substitution finds the new price outside tolerance.
    t += seconds(2);
    systems.erp.record_failed(
        "pricing.check",
        t,
        millis(120),
        vec![
            KeyValue::new("order.id", order.clone()),
            KeyValue::new("pricing.decision", "exception"),
            KeyValue::new("pricing.variance_pct", 7.5),
        ],
        PRICE_VARIANCE_ERROR,
    );

    // (d) Two hours later a pricing manager approves it by e-mail, and a clerk keys the approval
    // into the ERP without the approval itself ever reaching the system of record.
    t += hours(2) + minutes(10);
    systems.erp.record(
        &root(),
        "pricing.approve",
        SpanKind::Internal,
        t,
        millis(48),
        vec![
            KeyValue::new("order.id", order.clone()),
            KeyValue::new("approval.channel", "email"),
            KeyValue::new("enduser.id", "j.moreau@regional-distributor.example"),
            KeyValue::new("pricing.decision", "approved_offline"),
            KeyValue::new("erp.sync.status", "not_synchronized"),
        ],
    );

    // (e) The order is released to the warehouse through the middleware like any other.
    t += minutes(25);
    release(systems, &order, t);

    // (f) The WMS allocates against yesterday's inventory snapshot because the live feed is down.
    t += minutes(4);
    systems.wms.record(
        &root(),
        "inventory.allocate",
        SpanKind::Internal,
        t,
        millis(390),
        vec![
            KeyValue::new("order.id", order.clone()),
            KeyValue::new("warehouse.id", "WH-EAST"),
            KeyValue::new("inventory.snapshot_age_s", 86_400_i64),
            KeyValue::new("wms.allocation.source", "cached_snapshot"),
        ],
    );

    // (g) The stale allocation sends the picker to an empty location, so only part of the order is
    // picked, and what was picked is packed into a delivery.
    t += hours(3) + minutes(5);
    systems.wms.record_failed(
        "pick.confirm",
        t,
        millis(1_350),
        vec![
            KeyValue::new("order.id", order.clone()),
            KeyValue::new("wms.pick.status", "partial"),
            KeyValue::new("order.quantity.ordered", 40_i64),
            KeyValue::new("order.quantity.picked", 24_i64),
        ],
        SHORT_PICK_ERROR,
    );
    t += minutes(40);
    pack(systems, &order, &delivery, t);

    // (h) The TMS books a carrier for the delivery.
    t += minutes(25);
    book_carrier(systems, &delivery, &shipment, "NorthFreight", t);

    // (i) The next morning the carrier's pickup reaches the TMS, whose status update the middleware
    // cannot map for the ERP. The middleware accepts the call before mapping it, so the TMS sees
    // success and nobody retries; no shipment.pickup.confirm ever follows.
    let update = base + days(1) + hours(1) + minutes(40);
    let status_update = systems.tms.start(
        &root(),
        "PUT /api/shipments/{id}/status",
        SpanKind::Client,
        update,
        vec![
            KeyValue::new("http.request.method", "PUT"),
            KeyValue::new("url.path", format!("/api/shipments/{shipment}/status")),
            KeyValue::new("http.route", "/api/shipments/{id}/status"),
            KeyValue::new("http.response.status_code", 202_i64),
        ],
    );
    let mapping_start = update + millis(61);
    let mapping = systems.middleware.start(
        &status_update,
        "map carrier.status -> erp.shipment_confirmation",
        SpanKind::Internal,
        mapping_start,
        vec![
            KeyValue::new("mapping.source", "carrier.status"),
            KeyValue::new("mapping.target", "erp.shipment_confirmation"),
        ],
    );
    mapping.span().add_event_with_timestamp(
        "exception",
        mapping_start + millis(28),
        vec![
            KeyValue::new("exception.type", "MappingError"),
            KeyValue::new("exception.message", SHIP_DATE_MAPPING_ERROR),
        ],
    );
    fail(&mapping, SHIP_DATE_MAPPING_ERROR);
    end(&mapping, mapping_start + millis(34));
    end(&status_update, update + millis(180));

    // (j) When finance comes to invoice the order at midday, it cannot bill a shipment that the ERP
    // never saw confirmed.
    systems.finance.record_failed(
        "invoice.hold",
        base + days(1) + hours(5),
        millis(210),
        vec![
            KeyValue::new("order.id", order),
            KeyValue::new("invoice.id", format!("INV-{number}")),
            KeyValue::new("finance.hold.reason", "awaiting_shipment_confirmation"),
        ],
        INVOICE_HOLD_ERROR,
    );
}
