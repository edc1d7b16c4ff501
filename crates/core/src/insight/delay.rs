//! The delay model: how long each SLA target's transition took, learned online from the clocks that settled, per
//! dimension value (warehouse, segment, carrier…) and for all orders together; and what that says about a clock
//! still running: the probability that it breaches, given how long it has run already.
//!
//! Each distribution is a DDSketch (relative-error quantiles in a bounded number of bins), so memory is bounded by
//! targets × dimension values × bins, whatever the number of orders, and two replicas' models merge exactly: the
//! model a store holds is the sum of what every replica learned.
//!
//! The estimate is the empirical conditional survival: of the past clocks that ran at least as long as this one
//! has, the share that ran past the allowance. It grows with the elapsed time (its denominator can only shrink),
//! so a clock has one **risk point**, the elapsed time at which the probability reaches the threshold, and the
//! engine checks the clock there instead of evaluating it continuously.

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config as SketchConfig, DDSketch};
use std::collections::BTreeMap;
use std::time::Duration;

/// Relative accuracy of the durations kept: 2 % of the value, a few minutes on a day.
const SKETCH_ALPHA: f64 = 0.02;
/// Bins per distribution at most: 1024 bins at 2 % span over twelve orders of magnitude, so no realistic range of
/// durations is collapsed, and a distribution never takes more than about 8 KiB.
const SKETCH_MAX_BINS: u32 = 1024;
/// Durations below a millisecond count as zero.
const SKETCH_MIN_SECONDS: f64 = 0.001;

/// How the model is used; from `sla.risk` in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskSettings {
    /// The breach probability at which a running clock puts its order at risk.
    pub threshold: f64,
    /// Settled clocks a distribution needs before it is used: a dimension value's own, else all orders'; with
    /// fewer than this for all orders, the fixed share (`sla.at_risk_share`) decides.
    pub min_samples: u64,
    /// Distinct values learned per dimension and target; further values are learned into all orders only.
    pub max_values_per_dimension: usize,
}

impl Default for RiskSettings {
    fn default() -> RiskSettings {
        RiskSettings { threshold: 0.5, min_samples: 20, max_values_per_dimension: 200 }
    }
}

/// One transition's durations, in seconds of the clock's own time (working time where a calendar applies).
#[derive(Clone, Serialize, Deserialize)]
pub struct Durations {
    sketch: DDSketch,
}

impl std::fmt::Debug for Durations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durations").field("count", &self.count()).finish()
    }
}

impl Default for Durations {
    fn default() -> Durations {
        Durations { sketch: DDSketch::new(SketchConfig::new(SKETCH_ALPHA, SKETCH_MAX_BINS, SKETCH_MIN_SECONDS)) }
    }
}

impl Durations {
    fn add(&mut self, seconds: f64) {
        self.sketch.add(seconds.max(0.0));
    }

    /// Settled clocks learned.
    pub fn count(&self) -> u64 {
        self.sketch.count() as u64
    }

    fn merge(&mut self, other: &Durations) {
        // Every distribution is made by `default`, so the configurations agree and the merge cannot fail; one
        // that did would leave this distribution as it was, which only forgoes the other's samples.
        let _ = self.sketch.merge(&other.sketch);
    }

    /// The duration of rank `rank` (0 = shortest) of the samples, within the sketch's accuracy. Kept within the
    /// exact minimum and maximum, so that it never decreases with the rank.
    fn at_rank(&self, rank: u64) -> f64 {
        let n = self.count();
        let (Some(min), Some(max)) = (self.sketch.min(), self.sketch.max()) else { return 0.0 };
        // The sketch turns a quantile q into rank ⌊q·(n-1)⌋; half a rank up lands on `rank` despite rounding.
        #[allow(clippy::cast_precision_loss)]
        let q = if n <= 1 || rank + 1 >= n { 1.0 } else { (rank as f64 + 0.5) / (n - 1) as f64 };
        self.sketch.quantile(q.min(1.0)).ok().flatten().unwrap_or(max).clamp(min, max)
    }

    /// How many samples took longer than `seconds`.
    pub fn longer_than(&self, seconds: f64) -> u64 {
        let n = self.count();
        let (mut low, mut high) = (0, n);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.at_rank(middle) > seconds {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        n - low
    }

    /// The duration at quantile `q`, in seconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.sketch.quantile(q.clamp(0.0, 1.0)).ok().flatten()
    }

    /// The probability of running past `allowed` for a clock that has run `elapsed` (both in seconds): of the
    /// samples longer than `elapsed`, the share longer than `allowed`. A clock longer than every sample has
    /// probability 1: nothing known ever took this long.
    pub fn breach_probability(&self, allowed: f64, elapsed: f64) -> f64 {
        let still_running = self.longer_than(elapsed);
        if still_running == 0 {
            return 1.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let p = self.longer_than(allowed.max(elapsed)) as f64 / still_running as f64;
        p.clamp(0.0, 1.0)
    }

    /// The elapsed time, in seconds, at which the breach probability reaches `threshold`: zero when the share of
    /// samples longer than `allowed` reaches it already, else the smallest elapsed time past which at most
    /// (longer than allowed) / threshold samples remain. Never beyond `allowed`.
    pub fn risk_point(&self, allowed: f64, threshold: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return allowed;
        }
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let remaining = (self.longer_than(allowed) as f64 / threshold).floor() as u64;
        if remaining >= n {
            return 0.0;
        }
        self.at_rank(n - 1 - remaining).min(allowed)
    }
}

/// What a risk judgement is based on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RiskBasis {
    /// The durations of past orders with the same value of this dimension.
    Dimension { dimension: String, value: String, samples: u64 },
    /// The durations of all past orders.
    AllOrders { samples: u64 },
    /// Too few past orders: the fixed share of the allowance (`sla.at_risk_share`).
    Share { share_percent: u64 },
}

impl std::fmt::Display for RiskBasis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RiskBasis::Dimension { dimension, value, samples } => {
                write!(f, "{samples} past orders with {dimension} {value}")
            }
            RiskBasis::AllOrders { samples } => write!(f, "{samples} past orders"),
            RiskBasis::Share { share_percent } => write!(f, "{share_percent} % of the allowance used"),
        }
    }
}

/// The model's answer for one running clock.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskJudgement {
    /// Elapsed clock time at which the order is at risk.
    pub risk_point: Duration,
    /// The breach probability at the elapsed time asked about; `None` on the fixed share, which gives none.
    pub probability: Option<f64>,
    pub basis: RiskBasis,
}

/// One dimension value's durations: (dimension, value, durations).
pub type ValueDurations<'a> = (&'a str, &'a str, &'a Durations);

/// A dimension value that may decide a judgement.
struct Candidate<'a> {
    /// How far its share of breaches is from all orders'.
    distance: f64,
    durations: &'a Durations,
    basis: RiskBasis,
}

/// Durations per SLA target: for all orders, and per dimension value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TargetDurations {
    all: Durations,
    /// dimension → value → durations.
    by_value: BTreeMap<String, BTreeMap<String, Durations>>,
}

/// Learned transition durations for every SLA target; serialised whole by the service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DelayModel {
    /// By target name, so that a model survives targets being added or reordered in the configuration.
    targets: BTreeMap<String, TargetDurations>,
    /// Dimension values not learned on their own because their dimension had `max_values_per_dimension` already.
    #[serde(default)]
    values_refused: u64,
}

impl DelayModel {
    /// Learns that a clock of `target` for an order with these dimension values took `duration`.
    pub fn learn(
        &mut self,
        settings: &RiskSettings,
        target: &str,
        dimensions: &BTreeMap<String, String>,
        duration: Duration,
    ) {
        let seconds = duration.as_secs_f64();
        let durations = self.targets.entry(target.to_string()).or_default();
        durations.all.add(seconds);
        for (dimension, value) in dimensions {
            let values = durations.by_value.entry(dimension.clone()).or_default();
            if !values.contains_key(value) && values.len() >= settings.max_values_per_dimension {
                self.values_refused += 1;
                continue;
            }
            values.entry(value.clone()).or_default().add(seconds);
        }
    }

    /// Adds another model's samples (another replica's, or what this one learned since its last save), keeping at
    /// most `max_values_per_dimension` values per dimension and target: a value beyond it counts for all orders only.
    pub fn merge_bounded(&mut self, other: &DelayModel, max_values_per_dimension: usize) {
        for (target, theirs) in &other.targets {
            let ours = self.targets.entry(target.clone()).or_default();
            ours.all.merge(&theirs.all);
            for (dimension, values) in &theirs.by_value {
                let our_values = ours.by_value.entry(dimension.clone()).or_default();
                for (value, durations) in values {
                    if !our_values.contains_key(value) && our_values.len() >= max_values_per_dimension {
                        self.values_refused += 1;
                        continue;
                    }
                    our_values.entry(value.clone()).or_default().merge(durations);
                }
            }
        }
        self.values_refused += other.values_refused;
    }

    pub fn is_empty(&self) -> bool {
        self.targets.values().all(|t| t.all.count() == 0)
    }

    /// Dimension values refused (see `RiskSettings::max_values_per_dimension`).
    pub fn values_refused(&self) -> u64 {
        self.values_refused
    }

    /// Settled clocks learned for `target`.
    pub fn samples(&self, target: &str) -> u64 {
        self.targets.get(target).map_or(0, |t| t.all.count())
    }

    /// All orders' durations of `target`, and each dimension value's, for the API.
    pub fn distributions(&self, target: &str) -> Option<(&Durations, Vec<ValueDurations<'_>>)> {
        let t = self.targets.get(target)?;
        let values = t
            .by_value
            .iter()
            .flat_map(|(d, values)| values.iter().map(move |(v, durations)| (d.as_str(), v.as_str(), durations)))
            .collect();
        Some((&t.all, values))
    }

    /// Judges a running clock of `target` with `allowed` clock time that has run `elapsed`. Of the order's
    /// dimension values with enough samples of their own, the one whose share of breaches differs most from all
    /// orders' decides: that is the value that tells something about this order (a slow warehouse, a carrier
    /// with a failing interface, or a fast warehouse that makes a breach unlikely), where a value shared by half
    /// the orders tells nothing. The choice does not depend on `elapsed`, so a clock's risk point is the same
    /// whenever it is asked for. Without such a value, all orders' durations decide; with too few of those,
    /// `None` (the caller uses the fixed share).
    pub fn judge(
        &self,
        settings: &RiskSettings,
        target: &str,
        dimensions: &BTreeMap<String, String>,
        allowed: Duration,
        elapsed: Duration,
    ) -> Option<RiskJudgement> {
        let t = self.targets.get(target)?;
        if t.all.count() < settings.min_samples {
            return None;
        }
        let (allowed, elapsed) = (allowed.as_secs_f64(), elapsed.as_secs_f64());
        let overall = t.all.breach_probability(allowed, 0.0);
        // Ties go to the earlier risk point.
        let mut best: Option<Candidate<'_>> = None;
        for (dimension, value) in dimensions {
            let Some(durations) = t.by_value.get(dimension).and_then(|values| values.get(value)) else { continue };
            if durations.count() < settings.min_samples {
                continue;
            }
            let distance = (durations.breach_probability(allowed, 0.0) - overall).abs();
            let better = best.as_ref().is_none_or(|b| {
                distance > b.distance
                    || (distance == b.distance
                        && durations.risk_point(allowed, settings.threshold)
                            < b.durations.risk_point(allowed, settings.threshold))
            });
            if better {
                let basis = RiskBasis::Dimension {
                    dimension: dimension.clone(),
                    value: value.clone(),
                    samples: durations.count(),
                };
                best = Some(Candidate { distance, durations, basis });
            }
        }
        let (durations, basis) = match best {
            Some(c) => (c.durations, c.basis),
            None => (&t.all, RiskBasis::AllOrders { samples: t.all.count() }),
        };
        let p = durations.breach_probability(allowed, elapsed);
        // Rounded up to the millisecond: the risk point is a sample's duration, and an elapsed time a rounding short
        // of it would still count that sample as running longer, and give a probability just under the threshold.
        let point = (durations.risk_point(allowed, settings.threshold).max(0.0) * 1000.0).ceil() / 1000.0;
        Some(RiskJudgement { risk_point: Duration::from_secs_f64(point), probability: Some(p), basis })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(h: f64) -> Duration {
        Duration::from_secs_f64(h * 3600.0)
    }

    fn dims(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn settings() -> RiskSettings {
        RiskSettings { threshold: 0.5, min_samples: 10, max_values_per_dimension: 3 }
    }

    #[test]
    fn the_probability_is_the_share_of_clocks_this_long_that_ran_past_the_allowance() {
        let mut d = Durations::default();
        // 1 h … 10 h, one each: 4½ h allowed (between samples, as the sketch keeps them within 2 %), so 6 of 10
        // breach; of those past 7 h, all do.
        for h in 1..=10 {
            d.add(f64::from(h) * 3600.0);
        }
        let allowed = 4.5 * 3600.0;
        assert_eq!(d.longer_than(allowed), 6);
        assert!((d.breach_probability(allowed, 0.0) - 0.6).abs() < 1e-9);
        // Past 2 h, 8 remain, 6 of which breach.
        assert!((d.breach_probability(allowed, 2.5 * 3600.0) - 0.75).abs() < 1e-9);
        assert!((d.breach_probability(allowed, 11.0 * 3600.0) - 1.0).abs() < 1e-9, "longer than anything known");
        // 0.6 ≥ 0.5 from the start; at a threshold of 0.8 the clock must outlast 7 samples (6 / 0.8 = 7.5 → 7 left).
        assert_eq!(d.risk_point(allowed, 0.5), 0.0);
        let point = d.risk_point(allowed, 0.8);
        assert!((point / 3600.0 - 3.0).abs() < 0.1, "{point}");
        assert!(d.breach_probability(allowed, point) >= 0.8 - 1e-9);
    }

    #[test]
    fn a_value_with_enough_samples_of_its_own_decides_and_the_slowest_value_wins() {
        let mut model = DelayModel::default();
        let s = settings();
        for i in 0..40 {
            // WH-EAST takes 1-2 h, WH-SOUTH 5-7 h against a 4 h allowance; the carrier dimension differs not.
            let (warehouse, h) = if i % 2 == 0 { ("WH-EAST", 1.0) } else { ("WH-SOUTH", 5.0) };
            let spread = f64::from(i % 5) * 0.5;
            model.learn(&s, "release", &dims(&[("warehouse", warehouse), ("carrier", "NF")]), hours(h + spread));
        }
        let south =
            model.judge(&s, "release", &dims(&[("warehouse", "WH-SOUTH"), ("carrier", "NF")]), hours(4.0), hours(0.5));
        let south = south.unwrap();
        assert_eq!(south.risk_point, Duration::ZERO, "every WH-SOUTH release breached");
        assert!(matches!(&south.basis, RiskBasis::Dimension { value, .. } if value == "WH-SOUTH"));
        let east = model.judge(&s, "release", &dims(&[("warehouse", "WH-EAST")]), hours(4.0), hours(0.5)).unwrap();
        assert_eq!(east.probability, Some(0.0));
        // Past the slowest WH-EAST release (3 h, within 2 %), nothing known took this long.
        assert!((east.risk_point.as_secs_f64() / 3600.0 - 3.0).abs() < 0.07, "{:?}", east.risk_point);
        // At its risk point, a clock's probability has reached the threshold (not a rounding short of it).
        for (warehouse, carrier) in [("WH-EAST", "NF"), ("WH-SOUTH", "NF")] {
            let d = dims(&[("warehouse", warehouse), ("carrier", carrier)]);
            let point = model.judge(&s, "release", &d, hours(4.0), Duration::ZERO).unwrap().risk_point;
            let at_point = model.judge(&s, "release", &d, hours(4.0), point).unwrap();
            assert!(at_point.probability.unwrap() >= s.threshold, "{warehouse}: {at_point:?}");
        }
        // A value not seen falls back to all orders; a target not learned gives no judgement.
        let other = model.judge(&s, "release", &dims(&[("warehouse", "WH-NEW")]), hours(4.0), hours(0.5)).unwrap();
        assert_eq!(other.basis, RiskBasis::AllOrders { samples: 40 });
        assert!(model.judge(&s, "invoice", &dims(&[]), hours(4.0), hours(1.0)).is_none());
    }

    #[test]
    fn too_few_samples_give_no_judgement_and_values_are_bounded() {
        let mut model = DelayModel::default();
        let s = settings();
        for (i, w) in ["A", "B", "C", "D", "E"].iter().enumerate() {
            model.learn(&s, "release", &dims(&[("warehouse", w)]), hours(1.0 + i as f64));
        }
        assert!(model.judge(&s, "release", &dims(&[("warehouse", "A")]), hours(4.0), hours(1.0)).is_none());
        assert_eq!(model.values_refused(), 2, "three values kept per dimension");
        assert_eq!(model.samples("release"), 5, "all five learned for all orders");
    }

    #[test]
    fn models_merge_and_survive_serialisation() {
        let s = settings();
        let (mut a, mut b) = (DelayModel::default(), DelayModel::default());
        for h in 1..=10 {
            a.learn(&s, "release", &dims(&[("warehouse", "A")]), hours(f64::from(h)));
            b.learn(&s, "release", &dims(&[("warehouse", "A")]), hours(f64::from(h) + 10.0));
        }
        a.merge_bounded(&b, 3);
        assert_eq!(a.samples("release"), 20);
        let json = serde_json::to_string(&a).unwrap();
        let back: DelayModel = serde_json::from_str(&json).unwrap();
        let judge = |m: &DelayModel| m.judge(&s, "release", &dims(&[("warehouse", "A")]), hours(12.0), hours(5.0));
        assert_eq!(judge(&a), judge(&back));
        assert!(judge(&a).unwrap().probability.unwrap() > 0.5, "9 of the 15 longer than 5 h ran past 12 h");
    }
}
