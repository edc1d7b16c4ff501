//! Insight: what the orders' history says about the orders still running. The delay model learns how long each SLA
//! target's transition takes and turns a running clock's elapsed time into a probability of breaching; the pattern
//! book groups exception reasons into templates and notices new and rising ones. Both are pure: they take `now` and
//! the spans' own times as arguments, and are persisted by the service as opaque blobs.

pub mod delay;
pub mod patterns;

use delay::DelayModel;
use patterns::PatternBook;
use serde::{Deserialize, Serialize};

/// What the store keeps of insight, as one record: the delay model, the sum of what every replica learned, and
/// the pattern book of the replica that saved last.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SavedInsight {
    pub delay: DelayModel,
    #[serde(default)]
    pub patterns: PatternBook,
}

/// What a commit adds to the stored insight: the durations learned since the last save, and the pattern book when
/// it changed.
#[derive(Debug, Default, Clone)]
pub struct InsightChanges {
    pub learned: DelayModel,
    pub patterns: Option<PatternBook>,
    /// `sla.risk.max_values_per_dimension`: the stored model keeps no more values than the engines do.
    pub max_values_per_dimension: usize,
}

/// A stored insight record that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("stored insight record is unreadable: {0}")]
pub struct InsightDecodeError(#[source] serde_json::Error);

impl SavedInsight {
    pub fn decode(bytes: &[u8]) -> Result<SavedInsight, InsightDecodeError> {
        serde_json::from_slice(bytes).map_err(InsightDecodeError)
    }

    pub fn encode(&self) -> Vec<u8> {
        // A model of maps, strings and finite numbers always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// What the store holds after a commit of `changes` over `stored`: the stored durations plus those learned
    /// since. A stored record that cannot be read is replaced, and the error returned with the new record, so that
    /// one bad record costs the model's history and not every later commit.
    pub fn merged(stored: Option<&[u8]>, changes: &InsightChanges) -> (Vec<u8>, Option<InsightDecodeError>) {
        let (mut saved, error) = match stored.map(SavedInsight::decode) {
            None => (SavedInsight::default(), None),
            Some(Ok(saved)) => (saved, None),
            Some(Err(e)) => (SavedInsight::default(), Some(e)),
        };
        saved.delay.merge_bounded(&changes.learned, changes.max_values_per_dimension);
        // Pattern counts are not additive across replicas the way durations are (a window's count seen by two
        // replicas would be counted twice), so the book is the saving replica's own.
        if let Some(patterns) = &changes.patterns {
            saved.patterns = patterns.clone();
        }
        (saved.encode(), error)
    }
}
