//! The steps of the order-to-cash flow as each system records them, shared by the seed and the happy orders.

use super::*;

/// Records the portal's order capture (step 1).
pub(crate) fn capture(
    systems: &Systems,
    order: &str,
    customer: &str,
    segment: &'static str,
    lines: i64,
    at: SystemTime,
) {
    systems.portal.record(
        &root(),
        "POST /api/orders",
        SpanKind::Server,
        at,
        millis(180 + 7 * u64::try_from(lines).unwrap_or(0)),
        vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/api/orders"),
            KeyValue::new("url.path", "/api/orders"),
            KeyValue::new("http.response.status_code", 201_i64),
            KeyValue::new("app.order.id", order.to_owned()),
            KeyValue::new("customer.id", customer.to_owned()),
            KeyValue::new("customer.segment", segment),
            KeyValue::new("order.lines", lines),
        ],
    );
}

/// Records the ERP's approved credit check (step 2).
pub(crate) fn credit_check(systems: &Systems, order: &str, utilisation: f64, at: SystemTime) {
    systems.erp.record(
        &root(),
        "credit.check",
        SpanKind::Internal,
        at,
        millis(410),
        vec![
            KeyValue::new("order.id", order.to_owned()),
            KeyValue::new("credit.decision", "approved"),
            KeyValue::new("credit.limit_utilisation", utilisation),
        ],
    );
}

/// Records the release of an order from the ERP to the warehouse as one technical trace (step 4).
///
/// Only the ERP's producer span names the order: the middleware's consumer and mapping spans carry
/// no business key, as in most real middleware, so ordertrail has to let them inherit the order
/// from their trace.
pub(crate) fn release(systems: &Systems, order: &str, at: SystemTime) {
    let publish = systems.erp.start(
        &root(),
        "publish orders.released",
        SpanKind::Producer,
        at,
        vec![
            KeyValue::new("order.id", order.to_owned()),
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", "orders.released"),
            KeyValue::new("messaging.operation.type", "send"),
        ],
    );
    // The producer is done as soon as the broker has the message; the consumer picks it up later,
    // so the producer ends before its child starts.
    end(&publish, at + millis(9));

    let consumed = at + millis(1_400);
    let process = systems.middleware.start(
        &publish,
        "process orders.released",
        SpanKind::Consumer,
        consumed,
        vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.destination.name", "orders.released"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.consumer.group.name", "wms-bridge"),
        ],
    );
    systems.middleware.record(
        &process,
        "map ORDERS05 -> wms.order",
        SpanKind::Internal,
        consumed + millis(12),
        millis(31),
        vec![KeyValue::new("mapping.source", "ORDERS05"), KeyValue::new("mapping.target", "wms.order")],
    );
    end(&process, consumed + millis(64));
}

/// Records the WMS's pack confirmation, which is where an order first meets its delivery (step 7).
pub(crate) fn pack(systems: &Systems, order: &str, delivery: &str, at: SystemTime) {
    systems.wms.record(
        &root(),
        "pack.confirm",
        SpanKind::Internal,
        at,
        millis(250),
        vec![KeyValue::new("order.id", order.to_owned()), KeyValue::new("delivery.id", delivery.to_owned())],
    );
}

/// Records the TMS's carrier booking for one delivery, which knows the delivery but not the order
/// (step 8).
pub(crate) fn book_carrier(systems: &Systems, delivery: &str, shipment: &str, carrier: &'static str, at: SystemTime) {
    systems.tms.record(
        &root(),
        "carrier.book",
        SpanKind::Client,
        at,
        millis(870),
        vec![
            KeyValue::new("delivery.id", delivery.to_owned()),
            KeyValue::new("shipment.id", shipment.to_owned()),
            KeyValue::new("carrier.name", carrier),
        ],
    );
}

/// Records the carrier's pickup, which knows only the shipment (step 9). The consolidated shipment
/// has no tracking number of a single order, so `number` is optional.
pub(crate) fn confirm_pickup(systems: &Systems, shipment: &str, single_order: Option<(u32, i64)>, at: SystemTime) {
    let mut attributes = vec![KeyValue::new("shipment.id", shipment.to_owned())];
    // A shipment that carries one order reports that order's shipped quantity, which gives its fill rate.
    if let Some((number, quantity)) = single_order {
        attributes.push(KeyValue::new("carrier.tracking_number", format!("NF{:010}", u64::from(number) * 7_919)));
        attributes.push(KeyValue::new("order.quantity.shipped", quantity));
    }
    systems.tms.record(&root(), "shipment.pickup.confirm", SpanKind::Internal, at, millis(150), attributes);
}

/// Records the EDI gateway's advance shipping notice to the customer (step 10).
pub(crate) fn send_asn(systems: &Systems, shipment: &str, asn: &str, control: u32, at: SystemTime) {
    systems.edi.record(
        &root(),
        "EDI 856 send",
        SpanKind::Producer,
        at,
        millis(300),
        vec![
            KeyValue::new("shipment.id", shipment.to_owned()),
            KeyValue::new("edi.asn.id", asn.to_owned()),
            KeyValue::new("edi.control_number", format!("{control:09}")),
            KeyValue::new("edi.transaction_set", "856"),
        ],
    );
}

/// Records the portal's e-mail to the customer (step 12).
pub(crate) fn notify(systems: &Systems, order: &str, at: SystemTime) {
    systems.portal.record(
        &root(),
        "notification.send",
        SpanKind::Internal,
        at,
        millis(60),
        vec![KeyValue::new("order.id", order.to_owned()), KeyValue::new("notification.channel", "email")],
    );
}

/// Records a load balancer's health check, which belongs to no order at all.
pub(crate) fn health_check(systems: &Systems, at: SystemTime) {
    systems.portal.record(
        &root(),
        "GET /healthz",
        SpanKind::Server,
        at,
        millis(2),
        vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/healthz"),
            KeyValue::new("url.path", "/healthz"),
            KeyValue::new("http.response.status_code", 200_i64),
        ],
    );
}

pub(crate) fn order_id(number: u32) -> String {
    format!("SO-{number}")
}
