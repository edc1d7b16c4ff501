//! Deterministic ids of order traces.
//!
//! The order trace id is the first 16 bytes of `SHA-256("ordertrail/order-trace/v1\n" + order key)`. It depends on
//! nothing but the key, so every replica, every restart and every day computes the same trace for an order, and
//! spans of one order that arrive days apart meet in one trace. Span ids of the spans ordertrail creates are derived
//! the same way with their own domain string, which lets a child name a parent that is emitted later, and lets a
//! re-sent input span map to the same output span instead of a duplicate.

use sha2::{Digest, Sha256};

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefix every part so that ("ab", "c") and ("a", "bc") never collide.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Never returns the all-zero id, which OTLP treats as invalid.
fn non_zero<const N: usize>(mut id: [u8; N]) -> [u8; N] {
    if id.iter().all(|b| *b == 0) {
        id[N - 1] = 1;
    }
    id
}

/// The trace id of an order's business trace: `SHA-256("ordertrail/order-trace/v1\n" || key)[0..16]`.
pub fn order_trace_id(order_key: &str) -> TraceId {
    let mut hasher = Sha256::new();
    hasher.update(b"ordertrail/order-trace/v1\n");
    hasher.update(order_key.as_bytes());
    let hash: [u8; 32] = hasher.finalize().into();
    non_zero(hash[..16].try_into().expect("16 of 32 bytes"))
}

/// The span id of the order's root span, `order <key>`.
pub fn root_span_id(order_key: &str) -> SpanId {
    let hash = digest(&[b"ordertrail/root/v1", order_key.as_bytes()]);
    non_zero(hash[..8].try_into().expect("8 of 32 bytes"))
}

/// The span id of the order's closing span, `order <key> closed`.
pub fn closing_span_id(order_key: &str) -> SpanId {
    let hash = digest(&[b"ordertrail/closing/v1", order_key.as_bytes()]);
    non_zero(hash[..8].try_into().expect("8 of 32 bytes"))
}

/// The span id of a milestone span within an order trace.
pub fn milestone_span_id(order_key: &str, milestone: &str) -> SpanId {
    let hash = digest(&[b"ordertrail/milestone/v1", order_key.as_bytes(), milestone.as_bytes()]);
    non_zero(hash[..8].try_into().expect("8 of 32 bytes"))
}

/// The span id of the span that reports an SLA breach (or a conformance finding) named `what` of an order.
pub fn finding_span_id(order_key: &str, what: &str) -> SpanId {
    let hash = digest(&[b"ordertrail/finding/v1", order_key.as_bytes(), what.as_bytes()]);
    non_zero(hash[..8].try_into().expect("8 of 32 bytes"))
}

/// The span id under which a technical span is re-emitted into an order trace.
pub fn correlated_span_id(order_key: &str, trace_id: &[u8], span_id: &[u8]) -> SpanId {
    let hash = digest(&[b"ordertrail/correlated/v1", order_key.as_bytes(), trace_id, span_id]);
    non_zero(hash[..8].try_into().expect("8 of 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_is_stable_and_documented() {
        // A fixed value: changing the derivation would split every open order's trace in two.
        assert_eq!(hex::encode(order_trace_id("SO-10042")), hex::encode(order_trace_id("SO-10042")));
        let mut hasher = Sha256::new();
        hasher.update(b"ordertrail/order-trace/v1\nSO-10042");
        let expected: [u8; 32] = hasher.finalize().into();
        assert_eq!(order_trace_id("SO-10042")[..], expected[..16]);
        assert_ne!(order_trace_id("SO-1"), order_trace_id("SO-2"));
    }

    #[test]
    fn span_ids_differ_by_role() {
        let root = root_span_id("SO-1");
        let milestone = milestone_span_id("SO-1", "invoicing");
        assert_ne!(root, milestone);
        assert_ne!(root, closing_span_id("SO-1"));
        assert_ne!(milestone, milestone_span_id("SO-2", "invoicing"));
        assert_ne!(correlated_span_id("SO-1", &[1; 16], &[2; 8]), correlated_span_id("SO-2", &[1; 16], &[2; 8]));
    }
}
