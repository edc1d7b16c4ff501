//! Admission by bytes: every request holds a reservation from one budget for the memory it makes ordertrail
//! hold (the body as received, the body decompressed, the request decoded) from before that memory is allocated
//! until the request is answered. A request the budget cannot take is refused with a retryable status before it
//! costs anything, so memory stays bounded however the senders behave; the memory limiter, which looks at
//! resident memory, stays as the backstop for what the budget does not count (the engine's own state).
//!
//! Refusals are shared fairly: once more than half the budget is taken, one sender may hold at most an equal
//! share of it, counting itself and one newcomer (a lone flood takes at most half), so a flood from one address
//! does not starve the rest. A sender holding nothing may always start one request that fits the free budget.
//! A single request that needs more than half the budget could never be admitted while anyone else sends: it is
//! refused for good (RESOURCE_EXHAUSTED / 413), not retryably.

use crate::telemetry::Counters;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Permanent: the request alone needs more than half the budget.
    #[error("the request needs {needed} bytes to receive and decode, more than half the admission budget of {limit} bytes (pipeline.admission_limit_mib); send smaller requests")]
    NeverFits { needed: u64, limit: u64 },
    #[error("ordertrail is taking in {in_flight} bytes of requests (limit {limit}); retry later")]
    Budget { in_flight: u64, limit: u64 },
    #[error(
        "this sender already has {held} bytes of requests in flight, its share while others are sending; retry later"
    )]
    Share { held: u64 },
}

#[derive(Debug, Default)]
struct Ledger {
    in_flight: u64,
    by_sender: HashMap<IpAddr, u64>,
}

/// The budget, shared by the OTLP receivers.
#[derive(Debug)]
pub struct Admission {
    limit: u64,
    ledger: Mutex<Ledger>,
    counters: Arc<Counters>,
}

/// A reservation; given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    sender: IpAddr,
    bytes: u64,
}

impl Admission {
    pub fn new(limit: u64, counters: Arc<Counters>) -> Arc<Admission> {
        counters.admission_limit_bytes.store(limit, std::sync::atomic::Ordering::Relaxed);
        Arc::new(Admission { limit, ledger: Mutex::default(), counters })
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes reserved now, for the metrics and tests.
    pub fn in_flight(&self) -> u64 {
        self.ledger().in_flight
    }

    /// Reserves `bytes` for a new request from `sender`.
    pub fn admit(self: &Arc<Self>, sender: IpAddr, bytes: u64) -> Result<Admitted, Refusal> {
        let mut admitted = Admitted { admission: self.clone(), sender, bytes: 0 };
        admitted.grow(bytes)?;
        Ok(admitted)
    }

    /// Reserves `more` bytes for a request of `sender` that holds `request` bytes already, judged by everything
    /// that sender holds across its requests.
    fn reserve(&self, sender: IpAddr, request: u64, more: u64) -> Result<(), Refusal> {
        if more == 0 {
            return Ok(());
        }
        if request + more > self.limit / 2 {
            Counters::add(&self.counters.requests_refused_admission, 1);
            return Err(Refusal::NeverFits { needed: request + more, limit: self.limit });
        }
        let mut ledger = self.ledger();
        let held = ledger.by_sender.get(&sender).copied().unwrap_or(0);
        let others = ledger.by_sender.keys().filter(|s| **s != sender).count() as u64;
        let under_pressure = ledger.in_flight + more > self.limit / 2;
        let refusal = if ledger.in_flight + more > self.limit {
            Some(Refusal::Budget { in_flight: ledger.in_flight, limit: self.limit })
        } else if under_pressure && held > 0 && held + more > self.limit / (others + 2) {
            Some(Refusal::Share { held })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            drop(ledger);
            Counters::add(&self.counters.requests_refused_admission, 1);
            return Err(refusal);
        }
        ledger.in_flight += more;
        *ledger.by_sender.entry(sender).or_default() += more;
        self.counters.admitted_bytes.store(ledger.in_flight, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn release(&self, sender: IpAddr, bytes: u64) {
        let mut ledger = self.ledger();
        ledger.in_flight = ledger.in_flight.saturating_sub(bytes);
        self.counters.admitted_bytes.store(ledger.in_flight, std::sync::atomic::Ordering::Relaxed);
        if let Some(held) = ledger.by_sender.get_mut(&sender) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                ledger.by_sender.remove(&sender);
            }
        }
    }
}

impl Admitted {
    /// Makes `buf` able to hold `needed` bytes, reserving the capacity it grows by first. Capacity doubles as a
    /// vector grows (what the allocator really hands out), so the reservation follows capacity, not length.
    pub fn make_room<B: GrowableBuffer>(&mut self, buf: &mut B, needed: usize) -> Result<(), Refusal> {
        let capacity = buf.capacity();
        if needed <= capacity {
            return Ok(());
        }
        let target = needed.max(capacity.saturating_mul(2));
        self.grow((target - capacity) as u64)?;
        buf.reserve_to(target);
        Ok(())
    }

    /// Reserves `more` bytes before allocating them.
    pub fn grow(&mut self, more: u64) -> Result<(), Refusal> {
        self.admission.reserve(self.sender, self.bytes, more)?;
        self.bytes += more;
        Ok(())
    }

    /// Gives back what is held beyond `bytes`, once buffers it covered are freed.
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.admission.release(self.sender, self.bytes - bytes);
            self.bytes = bytes;
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(self.sender, self.bytes);
    }
}

/// A buffer whose capacity [`Admitted::make_room`] reserves for before growing it.
pub trait GrowableBuffer {
    fn capacity(&self) -> usize;
    /// Grows the capacity to at least `target` bytes.
    fn reserve_to(&mut self, target: usize);
}

impl GrowableBuffer for Vec<u8> {
    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }

    fn reserve_to(&mut self, target: usize) {
        self.reserve_exact(target.saturating_sub(self.len()));
    }
}

impl GrowableBuffer for bytes::BytesMut {
    fn capacity(&self) -> usize {
        bytes::BytesMut::capacity(self)
    }

    fn reserve_to(&mut self, target: usize) {
        self.reserve(target.saturating_sub(self.len()));
    }
}

/// Why a gzip body could not be inflated.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("gzip body is corrupt: {0}")]
    Corrupt(std::io::Error),
    #[error("decompressed body exceeds {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Bytes inflated at a time: each step is reserved before it is allocated.
const INFLATE_STEP: usize = 64 * 1024;

impl Admitted {
    /// Inflates a gzip body, reserving the output's capacity before allocating it and stopping one byte past
    /// `limit`: a gzip bomb costs at most `limit` bytes, and only while the budget has them.
    pub fn inflate(&mut self, gzip: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        use std::io::Read;
        let mut decoder = flate2::read::GzDecoder::new(gzip);
        let mut out: Vec<u8> = Vec::new();
        loop {
            let step = INFLATE_STEP.min(limit + 1 - out.len().min(limit));
            let start = out.len();
            self.make_room(&mut out, start + step)?;
            out.resize(start + step, 0);
            let read = decoder.read(&mut out[start..]).map_err(InflateError::Corrupt)?;
            out.truncate(start + read);
            if out.len() > limit {
                return Err(InflateError::TooLarge(limit));
            }
            if read == 0 {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let admission = Admission::new(1000, Arc::default());
        let mut first = admission.admit(ip(1), 300).unwrap();
        assert!(first.grow(100).is_ok());
        assert_eq!(admission.in_flight(), 400);
        first.shrink_to(150);
        assert_eq!(admission.in_flight(), 150);
        drop(first);
        assert_eq!(admission.in_flight(), 0);
        assert_eq!(Counters::get(&admission.counters.admitted_bytes), 0);
        assert_eq!(Counters::get(&admission.counters.admission_limit_bytes), 1000);
        let held = [admission.admit(ip(1), 450).unwrap(), admission.admit(ip(2), 450).unwrap()];
        assert!(matches!(admission.admit(ip(3), 101), Err(Refusal::Budget { .. })));
        assert_eq!(Counters::get(&admission.counters.requests_refused_admission), 1);
        drop(held);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit_or_the_budget_whichever_comes_first() {
        let bomb = gzip(&vec![0u8; 60 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024, "{} bytes inflate to 60 MiB", bomb.len());
        let admission = Admission::new(256 * 1024 * 1024, Arc::default());
        let mut admitted = admission.admit(ip(1), bomb.len() as u64).unwrap();
        assert!(matches!(admitted.inflate(&bomb, 1024 * 1024), Err(InflateError::TooLarge(_))));
        // The output's capacity, which doubles as it grows, is what is charged.
        assert!(admitted.bytes() <= bomb.len() as u64 + 2 * (1024 * 1024 + INFLATE_STEP as u64));
        let small = Admission::new(4 * 1024 * 1024, Arc::default());
        let mut admitted = small.admit(ip(1), 0).unwrap();
        assert!(matches!(admitted.inflate(&bomb, 64 * 1024 * 1024), Err(InflateError::Refused(_))));
        assert!(small.in_flight() <= 4 * 1024 * 1024);
        let mut admitted = admission.admit(ip(2), 0).unwrap();
        let text = b"an ordinary body".repeat(10_000);
        assert_eq!(admitted.inflate(&gzip(&text), 1024 * 1024).unwrap(), text);
        assert!(matches!(admitted.inflate(b"not gzip at all", 1024), Err(InflateError::Corrupt(_))));
    }

    #[test]
    fn one_flooding_sender_leaves_room_for_the_others() {
        let admission = Admission::new(1200, Arc::default());
        // Alone, a sender may take half; its first request always fits if the budget has room.
        let mut flood = vec![admission.admit(ip(1), 500).unwrap(), admission.admit(ip(1), 100).unwrap()];
        assert!(matches!(admission.admit(ip(1), 100), Err(Refusal::Share { .. })));
        // A second sender gets in, and its share shrinks as more senders arrive.
        let good = admission.admit(ip(2), 300).unwrap();
        assert!(matches!(admission.admit(ip(2), 200), Err(Refusal::Share { .. })), "a third of 1200 is 400");
        assert!(admission.admit(ip(3), 250).is_ok(), "a newcomer always starts one request that fits");
        flood.clear();
        assert!(admission.admit(ip(2), 50).is_ok());
        drop(good);
    }

    #[test]
    fn shares_apply_only_under_pressure_and_a_request_that_can_never_fit_is_refused_for_good() {
        let admission = Admission::new(1200, Arc::default());
        // Many senders holding little do not shrink anyone's room while the budget is mostly free.
        let small: Vec<Admitted> = (10..60).map(|n| admission.admit(ip(n), 2).unwrap()).collect();
        let mut request = admission.admit(ip(1), 100).unwrap();
        assert!(request.grow(300).is_ok(), "400 of 1200 in flight: no pressure, no share");
        // Zero-byte reservations are not senders.
        let empty: Vec<Admitted> = (100..200).map(|n| admission.admit(ip(n), 0).unwrap()).collect();
        assert_eq!(admission.ledger().by_sender.len(), 51);
        // More than half the budget for one request can never pass: permanent.
        assert!(matches!(admission.admit(ip(2), 601), Err(Refusal::NeverFits { .. })));
        assert!(matches!(request.grow(300), Err(Refusal::NeverFits { .. })));
        drop((small, empty, request));
        assert_eq!(admission.in_flight(), 0);
    }
}
