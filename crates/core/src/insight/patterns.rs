//! Recurring exception patterns, found the way log template miners (Drain and its kin) find them.
//!
//! An exception reason such as `short pick: 16 units not found at location` says the same thing for every order it
//! hits; only its numbers, ids, dates and addresses change. [`template`] masks those variable parts so that the
//! reasons of many orders fall into one template, and a [`PatternBook`] counts each template per exception class,
//! milestone and system over windows aligned to the Unix epoch: how often in total and in the latest windows, since
//! when, for how many orders, and whether it is rising. A template the book has not seen before, or one whose count
//! in a window jumps well above its recent baseline, is reported as a [`PatternEvent`] so that someone is told.
//!
//! The book is pure and bounded. It reads no clock: every instant is an argument in Unix nanoseconds, and an
//! occurrence counts in the window of the span's own time, so a replay or a late span lands where it happened. It
//! keeps at most [`PatternSettings::max_patterns`] patterns, [`PatternSettings::windows_kept`] windows and
//! [`PatternSettings::max_orders_tracked`] orders per pattern, and counts the new patterns it refuses.
//!
//! The views depend only on the multiset of observations, not on the order in which they arrived, with these
//! exceptions: a pattern's `example` is the first reason that *arrived*; the events are emitted as observations
//! arrive (a late span never raises a rate jump, and whichever occurrence arrives first is the one reported as new);
//! and once `max_patterns` is reached, which patterns were admitted depends on which came first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::nanos;

/// The longest template, in bytes; longer ones are cut on a character boundary, because a template is a label that
/// people read and a key that is stored, not a copy of the reason.
pub const MAX_TEMPLATE_BYTES: usize = 200;

/// The longest example reason kept per pattern, in bytes, so that one enormous reason cannot bloat the book.
pub const MAX_EXAMPLE_BYTES: usize = 500;

/// The longest class, milestone, system or order key kept, in bytes; they come from span attributes, and a
/// misbehaving sender must not be able to make the book grow without bound through them.
pub const MAX_FIELD_BYTES: usize = 200;

/// The most windows a pattern keeps, whatever the settings say, because every view allocates one count per kept
/// window and pattern.
pub const MAX_WINDOWS_KEPT: usize = 10_000;

/// How much of a reason is looked at when masking it. Twenty times the template's length leaves room for masks that
/// shorten the text (a long address becomes `<email>`) while keeping the regular expressions' work bounded.
const MAX_REASON_SCAN_BYTES: usize = 4096;

/// How many of the most recent distinct orders a view lists.
const RECENT_ORDERS: usize = 5;

/// The longest unit glued to a number (`12kg`, `30ms`, `16units`) that is kept beside the `<num>` mask.
const MAX_UNIT_BYTES: usize = 5;

/// The template of a reason that is empty or only whitespace.
const EMPTY_TEMPLATE: &str = "<empty>";

/// E-mail addresses; they are masked first because their local part and domain may contain digits and dots that
/// the later masks would otherwise cut into pieces.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+").expect("the e-mail pattern is valid")
});

/// Dates, date-times and times. A date followed by a time (after `T` or one space) and an offset is one match, so
/// that a date-time collapses to one `<date>`. Only four-digit years are dates in the slash and dot forms, so that
/// fractions (`3/4`) and version numbers (`1.2.3`) are left to the number mask. ASCII digits only: `\d` would also
/// match the digits of other scripts, which the rest of the masking does not treat as numbers.
static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?x)
        \b
        (?:
            [0-9]{4}-[0-9]{1,2}-[0-9]{1,2}          # 2026-11-26
          | [0-9]{4}/[0-9]{1,2}/[0-9]{1,2}          # 2026/11/26
          | [0-9]{1,2}/[0-9]{1,2}/[0-9]{4}          # 11/26/2026
          | [0-9]{1,2}\.[0-9]{1,2}\.[0-9]{4}        # 26.11.2026
        )
        (?:
            [T\x20][0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?
            (?:Z|[+\-][0-9]{2}(?::?[0-9]{2})?)?
        )?
        \b
      |
        \b[0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?(?:Z|[+\-][0-9]{2}(?::?[0-9]{2})?)?\b   # 10:15, 10:15:00Z
        ",
    )
    .expect("the date pattern is valid")
});

/// UUIDs, masked as a whole before the token pass. The token pass would mask almost every UUID by its digits
/// anyway; this one also masks the rare UUID made of letters only, which would otherwise read as a word.
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b")
        .expect("the uuid pattern is valid")
});

/// A token: word characters, possibly joined by `-`, `.`, `,`, `/` or `#` (so `SO-10042`, `1,250.00` and
/// `yyyy-MM-dd` are one token each), with an optional leading sign and trailing `%`. A token starts and ends with a
/// word character, so the punctuation around it (`(`, `:`, a full stop) stays outside.
static TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[+\-]?\w(?:[\w.,/#\-]*\w)?%?").expect("the token pattern is valid"));

/// Masks the variable parts of an exception reason, so that the reasons of different orders that say the same
/// thing share one template.
///
/// The masks apply in this order of precedence: e-mail addresses become `<email>`; dates, date-times and times
/// (`2026-11-26`, `2026-11-26T10:15:00.5+01:00`, `11/26/2026`, `26.11.2026`, `10:15`) become one `<date>` each;
/// UUIDs become `<id>`. Then, token by token: a run of eight or more hexadecimal characters with at least one digit
/// (a hash, a trace id, a bare document number) becomes `<id>`; a number, signed, decimal or with thousands
/// separators, becomes `<num>`, keeping a trailing `%` or a short lower-case unit glued to it (`7.5%` gives
/// `<num>%`, `12kg` gives `<num>kg`); any other token that contains a digit (`SO-10042`, `WH-EAST-3`,
/// `NF0000079190`) becomes `<id>`. Tokens without digits (`ShipDate`, `yyyy-MM-dd`) stay. Whitespace is collapsed
/// to single spaces and trimmed, the result is cut to [`MAX_TEMPLATE_BYTES`] on a character boundary, and an empty
/// reason gives `<empty>`. Only the first 4 KiB of a reason are looked at.
pub fn template(reason: &str) -> String {
    let scanned = cut(reason, MAX_REASON_SCAN_BYTES);
    let collapsed = scanned.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return EMPTY_TEMPLATE.to_owned();
    }
    let text = EMAIL.replace_all(&collapsed, "<email>");
    let text = DATE.replace_all(&text, "<date>");
    let text = UUID.replace_all(&text, "<id>");
    let masked = mask_tokens(&text);
    cut(&masked, MAX_TEMPLATE_BYTES).trim_end().to_owned()
}

/// Masks every token of `text`, copying what lies between the tokens unchanged.
fn mask_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for token in TOKEN.find_iter(text) {
        out.push_str(&text[copied..token.start()]);
        push_masked_token(&mut out, token.as_str());
        copied = token.end();
    }
    out.push_str(&text[copied..]);
    out
}

/// Appends the mask of one token (or the token itself when it has no digit, which makes it a word, not a value).
fn push_masked_token(out: &mut String, token: &str) {
    if !token.bytes().any(|b| b.is_ascii_digit()) {
        out.push_str(token);
        return;
    }
    // Hexadecimal runs come before numbers so that a bare eight-digit document number is an identifier, not a
    // quantity: quantities that large are rare in exception reasons, document numbers are everywhere.
    if token.len() >= 8 && token.bytes().all(|b| b.is_ascii_hexdigit()) {
        out.push_str("<id>");
        return;
    }
    let (body, percent) = match token.strip_suffix('%') {
        Some(body) => (body, "%"),
        None => (token, ""),
    };
    let unsigned = body.strip_prefix(['+', '-']).unwrap_or(body);
    if is_number(unsigned) {
        out.push_str("<num>");
        out.push_str(percent);
        return;
    }
    if percent.is_empty() {
        if let Some(unit_start) = unsigned.find(|c: char| c.is_ascii_alphabetic()) {
            let (number, unit) = unsigned.split_at(unit_start);
            if is_number(number) && unit.len() <= MAX_UNIT_BYTES && unit.bytes().all(|b| b.is_ascii_lowercase()) {
                out.push_str("<num>");
                out.push_str(unit);
                return;
            }
        }
    }
    out.push_str("<id>");
}

/// Whether `text` is digit groups joined by single `.` or `,` separators: `16`, `7.5`, `1,250.00`, `1.250,00`.
fn is_number(text: &str) -> bool {
    !text.is_empty()
        && text.split(['.', ',']).all(|group| !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit()))
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What a pattern is keyed by: the same template under another exception class, milestone or system is another
/// pattern, because it usually has another cause and another owner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PatternKey {
    /// The exception class the reason was raised under.
    pub class: String,
    /// The milestone the exception was raised at, when the span names one.
    pub milestone: Option<String>,
    /// The system (ERP, WMS, TMS, ...) that raised the exception.
    pub system: String,
    /// The reason with its variable parts masked, as [`template`] gives it.
    pub template: String,
}

impl PatternKey {
    /// The pattern's stable id: the first 16 hex digits of a SHA-256 over the key's fields. It depends on nothing but
    /// the key, so the same pattern has the same id on every replica, after every restart and in every link.
    pub fn id(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"ordertrail/pattern/v1");
        let milestone = self.milestone.as_deref();
        // A tag tells a missing milestone from an empty one, and length prefixes keep ("ab", "c") and ("a", "bc")
        // apart.
        hasher.update([u8::from(milestone.is_some())]);
        for part in [self.class.as_str(), milestone.unwrap_or(""), self.system.as_str(), self.template.as_str()] {
            hasher.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        let hash: [u8; 32] = hasher.finalize().into();
        hex::encode(&hash[..8])
    }
}

/// The limits and thresholds of a pattern book. The service fills them from its configuration; the defaults suit a
/// distributor with thousands of orders a day.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternSettings {
    /// The width of one counting window (default one hour). Windows are aligned to the Unix epoch, so every replica
    /// counts an occurrence in the same window. A zero width is taken as one nanosecond.
    pub window: Duration,
    /// How many windows each pattern keeps for its trend and its rate baseline (default 24, a day of hours), at
    /// least one and at most [`MAX_WINDOWS_KEPT`].
    pub windows_kept: usize,
    /// How many patterns the book holds (default 1000); further new patterns are refused and counted, so that a
    /// sender emitting unmaskable reasons cannot grow the book without bound.
    pub max_patterns: usize,
    /// A window's count is a rate jump when it reaches this factor times the mean of the earlier kept windows
    /// (default 3.0), because a pattern that triples within an hour has usually got a new cause.
    pub jump_factor: f64,
    /// A rate jump also needs at least this many occurrences in the window (default 5), so that one or two
    /// occurrences of a rare pattern never make a jump.
    pub jump_min_count: u64,
    /// How many distinct orders each pattern remembers for "orders affected" (default 256); beyond that the count is a
    /// lower bound and the most recent orders are kept.
    pub max_orders_tracked: usize,
}

impl Default for PatternSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(3600),
            windows_kept: 24,
            max_patterns: 1000,
            jump_factor: 3.0,
            jump_min_count: 5,
            max_orders_tracked: 256,
        }
    }
}

impl PatternSettings {
    /// The window width in nanoseconds, at least one so that dividing by it is always defined.
    fn window_nanos(&self) -> u64 {
        nanos(self.window).max(1)
    }

    /// The number of windows kept, clamped to `1..=MAX_WINDOWS_KEPT`.
    fn kept(&self) -> u64 {
        u64::try_from(self.windows_kept.clamp(1, MAX_WINDOWS_KEPT)).unwrap_or(1)
    }
}

/// Something about a pattern worth telling someone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PatternEvent {
    /// A template not seen before (for this class, milestone and system): a new way for orders to fail.
    New {
        /// The pattern's id.
        id: String,
        /// What the pattern is keyed by.
        key: PatternKey,
        /// The raw reason, cut to [`MAX_EXAMPLE_BYTES`].
        example: String,
        /// The order it was seen on.
        order: String,
        /// The span's own time.
        at_unix_nanos: u64,
    },
    /// A window's count reached `jump_factor` times the baseline (and `jump_min_count`); emitted at most once per
    /// pattern and window, so that a burst is told once, not once per occurrence.
    RateJump {
        /// The pattern's id.
        id: String,
        /// What the pattern is keyed by.
        key: PatternKey,
        /// Where the window starts.
        window_start_unix_nanos: u64,
        /// The window's count when the jump was noticed.
        count: u64,
        /// The mean count of the earlier kept windows (0 when the pattern was quiet in all of them).
        baseline_per_window: f64,
    },
}

/// Where a pattern is heading, as of the `now` a view is computed for.
///
/// The kept windows ending with the one containing `now` are split into an earlier and a later half (the middle
/// window is left out when their number is odd): the later half's count at least 1.5 times the earlier's, and at
/// least 2, is rising; at most the earlier's divided by 1.5 (with something in the earlier half) is falling; anything
/// else is steady. A pattern first seen in the window containing `now` is new, and one with nothing in the kept
/// windows is quiet; both take precedence over the comparison, quiet first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    /// First seen within the window containing `now`.
    New,
    /// More in the later half of the kept windows than in the earlier half.
    Rising,
    /// About as many in both halves.
    Steady,
    /// Fewer in the later half.
    Falling,
    /// Nothing in the kept windows.
    Quiet,
}

/// One pattern as of some `now`, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatternView {
    /// The stable id, [`PatternKey::id`].
    pub id: String,
    /// The exception class.
    pub class: String,
    /// The milestone, when the spans name one.
    pub milestone: Option<String>,
    /// The system that raised the exception.
    pub system: String,
    /// The masked reason.
    pub template: String,
    /// The first raw reason that arrived, cut to [`MAX_EXAMPLE_BYTES`].
    pub example: String,
    /// All occurrences ever, including those older than the kept windows.
    pub total: u64,
    /// Occurrences in the window containing `now`.
    pub in_last_window: u64,
    /// Occurrences in the kept windows (the last 24 hours by default).
    pub in_kept_windows: u64,
    /// The counts of the kept windows, oldest first, ending with the window containing `now`.
    pub per_window: Vec<u64>,
    /// The earliest span time seen.
    pub first_seen_unix_nanos: u64,
    /// The latest span time seen.
    pub last_seen_unix_nanos: u64,
    /// Distinct orders affected: exact up to `max_orders_tracked`, then that number as a lower bound.
    pub orders_affected: u64,
    /// Whether more distinct orders were seen than are remembered, which makes `orders_affected` a lower bound.
    pub orders_affected_capped: bool,
    /// Up to five of the most recent distinct orders (by their latest span time), newest first.
    pub recent_orders: Vec<String>,
    /// Where the pattern is heading, see [`Trend`].
    pub trend: Trend,
}

/// What the book knows of one pattern.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PatternState {
    key: PatternKey,
    example: String,
    total: u64,
    first_seen_unix_nanos: u64,
    last_seen_unix_nanos: u64,
    /// `(window index, count)` of the windows with occurrences, ascending, none older than `windows_kept` windows
    /// before the newest. Only non-empty windows are stored, so a rare pattern costs a few entries, not a full ring.
    windows: VecDeque<(u64, u64)>,
    /// Each remembered order with the span time of its latest occurrence.
    orders: BTreeMap<String, u64>,
    /// Whether more distinct orders were seen than `orders` holds.
    orders_capped: bool,
    /// The window of the last rate jump, so that a burst raises one event, not one per occurrence.
    last_jump_window: Option<u64>,
}

impl PatternState {
    fn new(key: PatternKey, example: String, at_unix_nanos: u64) -> Self {
        Self {
            key,
            example,
            total: 0,
            first_seen_unix_nanos: at_unix_nanos,
            last_seen_unix_nanos: at_unix_nanos,
            windows: VecDeque::new(),
            orders: BTreeMap::new(),
            orders_capped: false,
            last_jump_window: None,
        }
    }

    /// Counts one occurrence everywhere it counts.
    fn record(&mut self, settings: &PatternSettings, order: String, at_unix_nanos: u64) {
        self.total = self.total.saturating_add(1);
        self.first_seen_unix_nanos = self.first_seen_unix_nanos.min(at_unix_nanos);
        self.last_seen_unix_nanos = self.last_seen_unix_nanos.max(at_unix_nanos);
        self.remember_order(order, at_unix_nanos, settings.max_orders_tracked);
        self.count_in_window(at_unix_nanos / settings.window_nanos(), settings.kept());
    }

    /// Counts an occurrence in its window, unless the window lies before the kept range, and drops the windows that
    /// fell out of the range. The kept range only depends on the newest window seen, so the counts end up the same
    /// whatever order the occurrences arrive in.
    fn count_in_window(&mut self, window: u64, kept: u64) {
        let newest = self.windows.back().map_or(window, |&(newest, _)| newest.max(window));
        let oldest_kept = newest.saturating_sub(kept - 1);
        while self.windows.front().is_some_and(|&(w, _)| w < oldest_kept) {
            self.windows.pop_front();
        }
        if window < oldest_kept {
            return;
        }
        match self.windows.binary_search_by_key(&window, |&(w, _)| w) {
            Ok(index) => {
                if let Some((_, count)) = self.windows.get_mut(index) {
                    *count = count.saturating_add(1);
                }
            }
            Err(index) => self.windows.insert(index, (window, 1)),
        }
    }

    /// Remembers an order for "orders affected". At the cap the most recent orders are kept, ranked by their latest
    /// span time and then by key: the least recent is evicted when a more recent newcomer arrives. The least recent
    /// remembered order only ever gets more recent, so an evicted order never comes back with an older time, and the
    /// remembered set ends up the same whatever order the occurrences arrive in.
    fn remember_order(&mut self, order: String, at_unix_nanos: u64, max_orders: usize) {
        if let Some(latest) = self.orders.get_mut(&order) {
            *latest = (*latest).max(at_unix_nanos);
            return;
        }
        // The cap may have been lowered since the orders were remembered.
        while self.orders.len() > max_orders {
            self.orders_capped = true;
            let Some(least) = self.least_recent_order() else { break };
            self.orders.remove(&least);
        }
        if self.orders.len() < max_orders {
            self.orders.insert(order, at_unix_nanos);
            return;
        }
        self.orders_capped = true;
        let Some(least) = self.least_recent_order() else { return };
        let least_at = self.orders.get(&least).copied().unwrap_or(0);
        if (at_unix_nanos, &order) > (least_at, &least) {
            self.orders.remove(&least);
            self.orders.insert(order, at_unix_nanos);
        }
    }

    fn least_recent_order(&self) -> Option<String> {
        self.orders.iter().min_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0))).map(|(order, _)| order.clone())
    }

    fn count_at(&self, window: u64) -> u64 {
        self.windows
            .binary_search_by_key(&window, |&(w, _)| w)
            .ok()
            .and_then(|i| self.windows.get(i))
            .map_or(0, |e| e.1)
    }

    /// Checks the window of an occurrence just recorded for a rate jump.
    ///
    /// Only the pattern's newest window is checked: an occurrence in an older window is a late span, history rather
    /// than something happening now, and checking it could raise a second jump for a window already past. A pattern
    /// first seen in this window has no baseline; its `New` event says all there is to say.
    fn rate_jump(&mut self, id: &str, settings: &PatternSettings, window: u64) -> Option<PatternEvent> {
        let newest = self.windows.back()?.0;
        if window != newest || self.last_jump_window.is_some_and(|jumped| jumped >= window) {
            return None;
        }
        let width = settings.window_nanos();
        if self.first_seen_unix_nanos / width >= window {
            return None;
        }
        let count = self.count_at(window);
        if count < settings.jump_min_count {
            return None;
        }
        // All stored windows before the newest lie within the kept range, and the missing ones count as zero.
        let earlier_span = settings.kept() - 1;
        let earlier = self.windows.iter().filter(|(w, _)| *w < window).fold(0u64, |sum, (_, c)| sum.saturating_add(*c));
        let baseline = if earlier_span == 0 { 0.0 } else { earlier as f64 / earlier_span as f64 };
        // With nothing in the earlier windows any burst of `jump_min_count` is a jump: the pattern existed before
        // (it is not new in this window) and has come back. Written as "reached" so that a factor that is not a
        // number never makes a jump.
        let reached = (count as f64) >= settings.jump_factor * baseline;
        if earlier > 0 && !reached {
            return None;
        }
        self.last_jump_window = Some(window);
        Some(PatternEvent::RateJump {
            id: id.to_owned(),
            key: self.key.clone(),
            window_start_unix_nanos: window.saturating_mul(width),
            count,
            baseline_per_window: baseline,
        })
    }

    fn view(&self, id: &str, settings: &PatternSettings, now_unix_nanos: u64) -> PatternView {
        let width = settings.window_nanos();
        let kept = settings.kept();
        let now_window = now_unix_nanos / width;
        let per_window: Vec<u64> =
            (0..kept).map(|i| now_window.checked_sub(kept - 1 - i).map_or(0, |w| self.count_at(w))).collect();
        let in_kept_windows = per_window.iter().fold(0u64, |sum, c| sum.saturating_add(*c));
        let in_last_window = per_window.last().copied().unwrap_or(0);
        let trend = if in_kept_windows == 0 {
            Trend::Quiet
        } else if self.first_seen_unix_nanos / width == now_window {
            Trend::New
        } else {
            trend_of(&per_window)
        };
        let mut recent: Vec<(&String, u64)> = self.orders.iter().map(|(order, at)| (order, *at)).collect();
        recent.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        PatternView {
            id: id.to_owned(),
            class: self.key.class.clone(),
            milestone: self.key.milestone.clone(),
            system: self.key.system.clone(),
            template: self.key.template.clone(),
            example: self.example.clone(),
            total: self.total,
            in_last_window,
            in_kept_windows,
            per_window,
            first_seen_unix_nanos: self.first_seen_unix_nanos,
            last_seen_unix_nanos: self.last_seen_unix_nanos,
            orders_affected: u64::try_from(self.orders.len()).unwrap_or(u64::MAX),
            orders_affected_capped: self.orders_capped,
            recent_orders: recent.into_iter().take(RECENT_ORDERS).map(|(order, _)| order.clone()).collect(),
            trend,
        }
    }
}

/// Compares the later half of the windows with the earlier half, as [`Trend`] documents.
fn trend_of(per_window: &[u64]) -> Trend {
    let half = per_window.len() / 2;
    let sum = |windows: &[u64]| windows.iter().fold(0u64, |sum, c| sum.saturating_add(*c));
    let earlier = sum(&per_window[..half]);
    let later = sum(&per_window[per_window.len() - half..]);
    // Integer arithmetic: later >= 1.5 × earlier is 2 × later >= 3 × earlier.
    if later >= 2 && later.saturating_mul(2) >= earlier.saturating_mul(3) {
        Trend::Rising
    } else if earlier > 0 && later.saturating_mul(3) <= earlier.saturating_mul(2) {
        Trend::Falling
    } else {
        Trend::Steady
    }
}

/// The recurring exception patterns of all orders, with their windowed counts. It is plain data (serde), so the
/// service persists it as one blob and restores it after a restart.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PatternBook {
    /// The patterns by id; a `BTreeMap` so that everything derived from it comes out in the same order every time.
    patterns: BTreeMap<String, PatternState>,
    /// Observations refused because they would have started a pattern beyond `max_patterns`.
    refused: u64,
}

impl PatternBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one occurrence of an exception and returns the events it caused.
    ///
    /// `key_parts` is the exception's class, milestone and system. `at_unix_nanos` is the span's own time, so that a
    /// replay or a late span counts in the window it happened in, not the one it arrived in. The first occurrence of
    /// a pattern gives [`PatternEvent::New`] and nothing else; a later one may give one [`PatternEvent::RateJump`]
    /// for its window. An occurrence that would start a pattern beyond `max_patterns` is refused, counted in
    /// [`PatternBook::refused`], and gives no event.
    pub fn observe(
        &mut self,
        settings: &PatternSettings,
        key_parts: (&str, Option<&str>, &str),
        reason: &str,
        order: &str,
        at_unix_nanos: u64,
    ) -> Vec<PatternEvent> {
        let (class, milestone, system) = key_parts;
        let key = PatternKey {
            class: cut(class, MAX_FIELD_BYTES).to_owned(),
            milestone: milestone.map(|m| cut(m, MAX_FIELD_BYTES).to_owned()),
            system: cut(system, MAX_FIELD_BYTES).to_owned(),
            template: template(reason),
        };
        let id = key.id();
        let order = cut(order, MAX_FIELD_BYTES).to_owned();
        let Some(state) = self.patterns.get_mut(&id) else {
            if self.patterns.len() >= settings.max_patterns {
                self.refused = self.refused.saturating_add(1);
                return Vec::new();
            }
            let example = cut(reason, MAX_EXAMPLE_BYTES).to_owned();
            let mut state = PatternState::new(key.clone(), example.clone(), at_unix_nanos);
            state.record(settings, order.clone(), at_unix_nanos);
            self.patterns.insert(id.clone(), state);
            return vec![PatternEvent::New { id, key, example, order, at_unix_nanos }];
        };
        // Two keys sharing 64 bits of a SHA-256 are all but impossible; should it happen, the second is refused
        // rather than merged into a pattern that says something else.
        if state.key != key {
            self.refused = self.refused.saturating_add(1);
            return Vec::new();
        }
        state.record(settings, order, at_unix_nanos);
        state.rate_jump(&id, settings, at_unix_nanos / settings.window_nanos()).into_iter().collect()
    }

    /// The patterns as of `now`, busiest in the window containing `now` first; ties go to the most occurrences in
    /// total, then to the id, so that the list is the same every time.
    pub fn patterns(&self, settings: &PatternSettings, now_unix_nanos: u64) -> Vec<PatternView> {
        let mut views: Vec<PatternView> =
            self.patterns.iter().map(|(id, state)| state.view(id, settings, now_unix_nanos)).collect();
        views.sort_by(|a, b| {
            b.in_last_window.cmp(&a.in_last_window).then_with(|| b.total.cmp(&a.total)).then_with(|| a.id.cmp(&b.id))
        });
        views
    }

    /// One pattern as of `now`, by its id.
    pub fn get(&self, settings: &PatternSettings, id: &str, now_unix_nanos: u64) -> Option<PatternView> {
        self.patterns.get(id).map(|state| state.view(id, settings, now_unix_nanos))
    }

    /// Removes the patterns with nothing in the kept windows as of `now` and returns how many it removed. The book
    /// refuses new patterns once full; pruning the quiet ones now and then makes room for the new ones. A pruned
    /// pattern that comes back is new again, which is what it is to the people watching.
    pub fn prune(&mut self, settings: &PatternSettings, now_unix_nanos: u64) -> usize {
        let oldest_kept = (now_unix_nanos / settings.window_nanos()).saturating_sub(settings.kept() - 1);
        let width = settings.window_nanos();
        let before = self.patterns.len();
        self.patterns.retain(|_, state| state.last_seen_unix_nanos / width >= oldest_kept);
        before - self.patterns.len()
    }

    /// How many observations were refused because they would have started a pattern beyond `max_patterns`; the
    /// service exports it as a counter, so that a full book does not go unnoticed.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// How many patterns the book holds.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether the book holds no pattern.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000_000_000;
    /// No events, typed so that comparisons with it need no annotations.
    const NONE: [PatternEvent; 0] = [];
    /// An hour-aligned instant in late 2025.
    const T0: u64 = 490_000 * HOUR;

    fn wms(
        book: &mut PatternBook,
        settings: &PatternSettings,
        reason: &str,
        order: &str,
        at: u64,
    ) -> Vec<PatternEvent> {
        book.observe(settings, ("short_pick", Some("picked"), "wms"), reason, order, at)
    }

    fn only(book: &PatternBook, settings: &PatternSettings, now: u64) -> PatternView {
        let views = book.patterns(settings, now);
        assert_eq!(views.len(), 1, "{views:#?}");
        views.into_iter().next().unwrap()
    }

    #[test]
    fn templates_mask_the_simulators_reasons() {
        let cases = [
            ("price variance 7.5% above tolerance", "price variance <num>% above tolerance"),
            ("short pick: 16 units not found at location", "short pick: <num> units not found at location"),
            ("field ShipDate: expected yyyy-MM-dd, got 11/26/2026", "field ShipDate: expected yyyy-MM-dd, got <date>"),
            ("invoice blocked: no shipment confirmation", "invoice blocked: no shipment confirmation"),
            (
                "approved by j.moreau@regional-distributor.example on 2026-11-26T09:12:00Z",
                "approved by <email> on <date>",
            ),
            (
                "order SO-10042 not found in WMS (request 7f3a9c2e-5b1d-4e8f-a6c0-2d9b4e1f8a73)",
                "order <id> not found in WMS (request <id>)",
            ),
        ];
        for (reason, expected) in cases {
            assert_eq!(template(reason), expected, "{reason}");
        }
    }

    #[test]
    fn templates_mask_dates_numbers_and_ids_of_every_shape() {
        let cases = [
            ("due 26.11.2026 at 10:15", "due <date> at <date>"),
            ("due 2026-11-26 10:15:00.250+01:00.", "due <date>."),
            ("due 2026-11-26T10:15:00,5-05:00, late", "due <date>, late"),
            ("cut-off 10:15:00 missed", "cut-off <date> missed"),
            ("total 1,250.00 EUR, delta -3 and +0.5%", "total <num> EUR, delta <num> and <num>%"),
            ("weight 12kg over 30ms", "weight <num>kg over <num>ms"),
            ("consolidation SH-CONS-1 at WH-EAST-3", "consolidation <id> at <id>"),
            ("NF0000079190 for DL-20001 and ASN-90001", "<id> for <id> and <id>"),
            ("hash deadbeef vs 0badc0de, EAN 40012345", "hash deadbeef vs <id>, EAN <id>"),
            ("  lots   of\t\nspace  ", "lots of space"),
            ("", "<empty>"),
            (" \t\n", "<empty>"),
        ];
        for (reason, expected) in cases {
            assert_eq!(template(reason), expected, "{reason:?}");
        }
        let long = "é".repeat(300);
        let cut = template(&long);
        assert!(cut.len() <= MAX_TEMPLATE_BYTES && cut.len() >= MAX_TEMPLATE_BYTES - 1, "{}", cut.len());
        assert!(long.starts_with(&cut));
    }

    #[test]
    fn reasons_differing_only_in_variables_share_a_template() {
        assert_eq!(
            template("order SO-10042 short by 16 units at 2026-11-26T09:12:00Z, ask ops@a.example"),
            template("order SO-977 short by 3 units at 2026-12-01T18:00:00.123Z, ask j.doe@b.example"),
        );
        assert_ne!(template("short pick: 16 units"), template("over pick: 16 units"));
    }

    proptest::proptest! {
        #[test]
        fn templates_are_bounded_digit_free_and_idempotent(reason in "\\PC{0,300}|[a-zA-Z0-9 .,:/@%+#-]{0,300}") {
            let once = template(&reason);
            proptest::prop_assert!(!once.is_empty() && once.len() <= MAX_TEMPLATE_BYTES);
            proptest::prop_assert!(!once.bytes().any(|b| b.is_ascii_digit()), "{once:?}");
            proptest::prop_assert_eq!(template(&once), once.clone());
        }
    }

    #[test]
    fn one_pattern_groups_orders_and_the_key_separates_class_milestone_and_system() {
        let settings = PatternSettings::default();
        let mut book = PatternBook::new();
        wms(&mut book, &settings, "short pick: 16 units not found at location", "SO-1", T0);
        wms(&mut book, &settings, "short pick: 3 units not found at location", "SO-2", T0 + 1);
        let view = only(&book, &settings, T0 + 2);
        assert_eq!(view.template, "short pick: <num> units not found at location");
        assert_eq!(view.example, "short pick: 16 units not found at location");
        assert_eq!((view.total, view.orders_affected, view.orders_affected_capped), (2, 2, false));
        assert_eq!(view.recent_orders, ["SO-2", "SO-1"]);
        assert_eq!((view.first_seen_unix_nanos, view.last_seen_unix_nanos), (T0, T0 + 1));
        assert_eq!(view.id.len(), 16);
        assert!(view.id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(book.get(&settings, &view.id, T0 + 2), Some(view.clone()));
        assert_eq!(book.get(&settings, "0000000000000000", T0 + 2), None);

        let reason = "short pick: 5 units not found at location";
        for key_parts in [
            ("stock_out", Some("picked"), "wms"),
            ("short_pick", Some("packed"), "wms"),
            ("short_pick", None, "wms"),
            ("short_pick", Some(""), "wms"),
            ("short_pick", Some("picked"), "erp"),
        ] {
            let events = book.observe(&settings, key_parts, reason, "SO-3", T0 + 3);
            assert!(matches!(events.as_slice(), [PatternEvent::New { .. }]), "{key_parts:?}: {events:?}");
        }
        assert_eq!(book.len(), 6);
        let ids: std::collections::BTreeSet<String> =
            book.patterns(&settings, T0 + 4).into_iter().map(|view| view.id).collect();
        assert_eq!(ids.len(), 6);
    }

    #[test]
    fn new_fires_once_for_the_first_occurrence_only() {
        let settings = PatternSettings::default();
        let mut book = PatternBook::new();
        let first = wms(&mut book, &settings, "short pick: 16 units", "SO-1", T0 + 5);
        let key = PatternKey {
            class: "short_pick".into(),
            milestone: Some("picked".into()),
            system: "wms".into(),
            template: "short pick: <num> units".into(),
        };
        assert_eq!(
            first,
            [PatternEvent::New {
                id: key.id(),
                key,
                example: "short pick: 16 units".into(),
                order: "SO-1".into(),
                at_unix_nanos: T0 + 5,
            }]
        );
        for i in 0..10 {
            assert_eq!(wms(&mut book, &settings, &format!("short pick: {i} units"), "SO-2", T0 + 6 + i), NONE);
        }
        assert_eq!(only(&book, &settings, T0 + 20).total, 11);
    }

    #[test]
    fn rate_jump_fires_once_when_both_thresholds_are_met() {
        // A baseline of exactly one per window: ten windows of one, and the kept range holds them all.
        let settings = PatternSettings { windows_kept: 11, jump_factor: 6.0, jump_min_count: 5, ..Default::default() };
        let mut book = PatternBook::new();
        for hour in 0..10 {
            let events = wms(&mut book, &settings, "short pick: 1 units", "SO-1", T0 + hour * HOUR + 600);
            assert_eq!(events.len(), usize::from(hour == 0), "hour {hour}: {events:?}");
        }
        let burst = T0 + 10 * HOUR;
        let mut jumps = Vec::new();
        for i in 1..=8u64 {
            for event in wms(&mut book, &settings, "short pick: 2 units", &format!("SO-{i}"), burst + i) {
                jumps.push((i, event));
            }
        }
        // The fifth reaches jump_min_count but not 6 × the baseline; the sixth reaches both; the rest are the same
        // window again.
        let id = only(&book, &settings, burst).id;
        match jumps.as_slice() {
            [(6, PatternEvent::RateJump { id: jump_id, window_start_unix_nanos, count, baseline_per_window, .. })] => {
                assert_eq!(jump_id, &id);
                assert_eq!((*window_start_unix_nanos, *count), (burst, 6));
                assert!((baseline_per_window - 1.0).abs() < 1e-9, "{baseline_per_window}");
            }
            other => panic!("expected one jump at the sixth occurrence, got {other:?}"),
        }
        // The next window starts afresh: its own burst can jump again.
        let next = burst + HOUR;
        // Its baseline is (9 + 8) / 10 = 1.7 per window, so the eleventh occurrence (11 >= 6 × 1.7) is the jump.
        let mut more = Vec::new();
        for i in 1..=12u64 {
            for event in wms(&mut book, &settings, "short pick: 9 units", "SO-9", next + i) {
                more.push((i, event));
            }
        }
        assert!(matches!(more.as_slice(), [(11, PatternEvent::RateJump { count: 11, .. })]), "{more:?}");
    }

    #[test]
    fn jump_min_count_alone_applies_when_the_baseline_is_zero() {
        let settings = PatternSettings { windows_kept: 3, ..Default::default() };
        let mut book = PatternBook::new();
        // A brand-new pattern bursting in its first window is New, never a jump.
        let events: Vec<_> =
            (0..10).flat_map(|i| wms(&mut book, &settings, "short pick: 1 units", "SO-1", T0 + i)).collect();
        assert!(matches!(events.as_slice(), [PatternEvent::New { .. }]), "{events:?}");
        // Back after ten quiet hours: the earlier kept windows are empty, so the fifth occurrence is the jump.
        let back = T0 + 10 * HOUR;
        let mut fired = Vec::new();
        for i in 1..=7u64 {
            for event in wms(&mut book, &settings, "short pick: 1 units", "SO-1", back + i) {
                fired.push((i, event));
            }
        }
        match fired.as_slice() {
            [(5, PatternEvent::RateJump { count: 5, baseline_per_window, .. })] => {
                assert_eq!(*baseline_per_window, 0.0)
            }
            other => panic!("expected one jump at the fifth occurrence, got {other:?}"),
        }
    }

    #[test]
    fn late_spans_count_in_their_own_window_and_raise_no_jump() {
        let settings = PatternSettings { windows_kept: 4, ..Default::default() };
        let mut book = PatternBook::new();
        wms(&mut book, &settings, "short pick: 1 units", "SO-1", T0);
        wms(&mut book, &settings, "short pick: 1 units", "SO-1", T0 + 3 * HOUR);
        // Late spans for hour 1: counted there, and no jump although hour 1 now has ten against nothing before.
        let late: Vec<_> =
            (0..10).flat_map(|i| wms(&mut book, &settings, "short pick: 1 units", "SO-2", T0 + HOUR + i)).collect();
        assert_eq!(late, NONE);
        // Too late for the kept range: only the total and the first-seen time count it.
        wms(&mut book, &settings, "short pick: 1 units", "SO-3", T0 - 5 * HOUR);
        let view = only(&book, &settings, T0 + 3 * HOUR);
        assert_eq!(view.per_window, [1, 10, 0, 1]);
        assert_eq!((view.total, view.in_kept_windows, view.in_last_window), (13, 12, 1));
        assert_eq!(view.first_seen_unix_nanos, T0 - 5 * HOUR);
        assert_eq!(view.recent_orders, ["SO-1", "SO-2", "SO-3"]);
    }

    #[test]
    fn trend_is_rising_falling_steady_new_or_quiet_as_of_now() {
        let settings = PatternSettings { windows_kept: 4, ..Default::default() };
        let mut book = PatternBook::new();
        let mut add = |class: &str, hour: u64, count: u64| {
            for i in 0..count {
                book.observe(&settings, (class, None, "wms"), "short pick", "SO-1", T0 + hour * HOUR + i);
            }
        };
        for (hour, count) in [(0, 1), (1, 1), (2, 2), (3, 3)] {
            add("rising", hour, count);
        }
        for hour in 0..4 {
            add("falling_later", hour, 3);
            add("steady", hour, 2);
        }
        add("new", 3, 1);
        let trends = |now: u64| -> BTreeMap<String, (Trend, Vec<u64>)> {
            book.patterns(&settings, now).into_iter().map(|view| (view.class, (view.trend, view.per_window))).collect()
        };
        let in_hour_3 = trends(T0 + 3 * HOUR + 1);
        assert_eq!(in_hour_3["rising"], (Trend::Rising, vec![1, 1, 2, 3]));
        assert_eq!(in_hour_3["steady"], (Trend::Steady, vec![2, 2, 2, 2]));
        assert_eq!(in_hour_3["falling_later"].0, Trend::Steady);
        assert_eq!(in_hour_3["new"], (Trend::New, vec![0, 0, 0, 1]));
        let in_hour_5 = trends(T0 + 5 * HOUR);
        assert_eq!(in_hour_5["falling_later"], (Trend::Falling, vec![3, 3, 0, 0]));
        assert_eq!(in_hour_5["new"], (Trend::Falling, vec![0, 1, 0, 0]));
        let in_hour_9 = trends(T0 + 9 * HOUR);
        assert!(in_hour_9.values().all(|(trend, per_window)| *trend == Trend::Quiet && per_window == &[0; 4]));
        assert_eq!(trend_of(&[0, 1, 0, 0, 0]), Trend::Falling);
        assert_eq!(trend_of(&[0, 0, 5, 0, 1]), Trend::Steady, "the middle window is left out and 1 < 2");
    }

    #[test]
    fn views_list_the_busiest_in_the_latest_window_first() {
        let settings = PatternSettings::default();
        let mut book = PatternBook::new();
        for i in 0..5 {
            book.observe(&settings, ("old", None, "wms"), "many before", "SO-1", T0 + i);
        }
        for i in 0..2 {
            book.observe(&settings, ("a", None, "wms"), "two now", "SO-1", T0 + HOUR + i);
            book.observe(&settings, ("b", None, "wms"), "two now", "SO-1", T0 + HOUR + i);
        }
        book.observe(&settings, ("a", None, "wms"), "two now", "SO-1", T0);
        let order: Vec<(String, u64, u64)> =
            book.patterns(&settings, T0 + HOUR).into_iter().map(|v| (v.class, v.in_last_window, v.total)).collect();
        assert_eq!(order, [("a".to_owned(), 2, 3), ("b".to_owned(), 2, 2), ("old".to_owned(), 0, 5)]);
    }

    #[test]
    fn max_patterns_refuses_and_counts_further_templates() {
        let settings = PatternSettings { max_patterns: 2, ..Default::default() };
        let mut book = PatternBook::new();
        assert_eq!(wms(&mut book, &settings, "short pick: 1 units", "SO-1", T0).len(), 1);
        assert_eq!(wms(&mut book, &settings, "bin empty", "SO-1", T0).len(), 1);
        assert_eq!(wms(&mut book, &settings, "scanner offline", "SO-1", T0), NONE);
        assert_eq!(wms(&mut book, &settings, "scanner offline", "SO-2", T0), NONE);
        assert_eq!((book.len(), book.refused()), (2, 2));
        // The admitted patterns still count.
        assert_eq!(wms(&mut book, &settings, "bin empty", "SO-2", T0 + 1), NONE);
        assert_eq!(book.patterns(&settings, T0 + 1).iter().map(|v| v.total).sum::<u64>(), 3);
        assert_eq!(book.refused(), 2);
    }

    #[test]
    fn orders_affected_is_exact_up_to_the_cap_then_a_lower_bound() {
        let settings = PatternSettings { max_orders_tracked: 3, ..Default::default() };
        let mut book = PatternBook::new();
        for (order, at) in [("SO-1", 1), ("SO-2", 2), ("SO-3", 3), ("SO-1", 4)] {
            wms(&mut book, &settings, "bin empty", order, T0 + at);
        }
        let view = only(&book, &settings, T0 + 10);
        assert_eq!((view.orders_affected, view.orders_affected_capped), (3, false));
        assert_eq!(view.recent_orders, ["SO-1", "SO-3", "SO-2"]);
        // A fourth order evicts the least recent (SO-2); an older one than all remembered is not kept.
        wms(&mut book, &settings, "bin empty", "SO-4", T0 + 5);
        wms(&mut book, &settings, "bin empty", "SO-0", T0);
        let view = only(&book, &settings, T0 + 10);
        assert_eq!((view.orders_affected, view.orders_affected_capped), (3, true));
        assert_eq!(view.recent_orders, ["SO-4", "SO-1", "SO-3"]);
        assert_eq!(view.total, 6);
    }

    /// A small deterministic shuffle, so that the test needs no random number crate and fails the same way twice.
    fn shuffle<T>(items: &mut [T], mut seed: u64) {
        for i in (1..items.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let j = usize::try_from(seed % (u64::try_from(i).unwrap() + 1)).unwrap();
            items.swap(i, j);
        }
    }

    type Observation = ((&'static str, Option<&'static str>, &'static str), String, String, u64);

    fn observations() -> Vec<Observation> {
        let keys = [("short_pick", Some("picked"), "wms"), ("asn_rejected", None, "edi"), ("short_pick", None, "wms")];
        (0..240u64)
            .map(|i| {
                let key = keys[usize::try_from(i % 3).unwrap()];
                let reason = match i % 4 {
                    0 => format!("short pick: {} units not found at location", i % 17),
                    1 => format!("order SO-{} not found in WMS", 10_000 + i),
                    2 => format!("price variance {}.5% above tolerance", i % 9),
                    _ => "invoice blocked: no shipment confirmation".to_owned(),
                };
                // Thirty hours, so that some occurrences fall out of the 24 kept windows, and bursts in some hours.
                let at = T0 + (i * 7 % 30) * HOUR + (i % 5) * 1_000 + if i % 11 == 0 { 29 * HOUR } else { 0 };
                (key, reason, format!("SO-{}", i % 13), at)
            })
            .collect()
    }

    fn replay(settings: &PatternSettings, observations: &[Observation]) -> PatternBook {
        let mut book = PatternBook::new();
        for (key, reason, order, at) in observations {
            book.observe(settings, *key, reason, order, *at);
        }
        book
    }

    fn without_examples(mut views: Vec<PatternView>) -> Vec<PatternView> {
        for view in &mut views {
            view.example.clear();
        }
        views
    }

    #[test]
    fn views_do_not_depend_on_arrival_order() {
        let settings = PatternSettings { max_orders_tracked: 4, ..Default::default() };
        let mut observations = observations();
        let reference = replay(&settings, &observations);
        assert_eq!(reference.len(), 12);
        for now in [T0 + 29 * HOUR, T0 + 45 * HOUR] {
            let expected = without_examples(reference.patterns(&settings, now));
            assert!(expected.iter().any(|view| view.orders_affected_capped));
            assert!(expected.iter().any(|view| view.total > view.in_kept_windows));
            for seed in [1, 7, 42, 0x9e37_79b9_7f4a_7c15] {
                shuffle(&mut observations, seed);
                let shuffled = replay(&settings, &observations);
                assert_eq!(without_examples(shuffled.patterns(&settings, now)), expected, "seed {seed}");
            }
        }
    }

    #[test]
    fn serde_round_trip_keeps_the_views_and_the_jump_memory() {
        let settings = PatternSettings { windows_kept: 11, jump_factor: 6.0, ..Default::default() };
        let mut book = replay(&settings, &observations());
        for hour in 0..10 {
            wms(&mut book, &settings, "bin empty", "SO-1", T0 + hour * HOUR);
        }
        let burst = T0 + 10 * HOUR;
        let jumps: Vec<_> = (0..6).flat_map(|i| wms(&mut book, &settings, "bin empty", "SO-2", burst + i)).collect();
        assert_eq!(jumps.len(), 1, "{jumps:?}");
        wms(&mut book, &settings, "scanner offline", "SO-3", burst);

        let blob = serde_json::to_string(&book).unwrap();
        let mut restored: PatternBook = serde_json::from_str(&blob).unwrap();
        for now in [burst, burst + 30 * HOUR] {
            assert_eq!(restored.patterns(&settings, now), book.patterns(&settings, now));
        }
        assert_eq!((restored.len(), restored.refused()), (book.len(), book.refused()));
        // The restored book remembers the jump of this window and the patterns it has seen.
        assert_eq!(wms(&mut restored, &settings, "bin empty", "SO-4", burst + 7), NONE);
        assert_eq!(wms(&mut restored, &settings, "scanner offline", "SO-4", burst + 7), NONE);
        assert_eq!(serde_json::from_str::<PatternBook>("{}").unwrap().len(), 0);
    }

    #[test]
    fn prune_drops_the_patterns_quiet_for_the_kept_windows() {
        let settings = PatternSettings { windows_kept: 4, max_patterns: 2, ..Default::default() };
        let mut book = PatternBook::new();
        wms(&mut book, &settings, "bin empty", "SO-1", T0);
        wms(&mut book, &settings, "scanner offline", "SO-1", T0 + 2 * HOUR);
        assert_eq!(book.prune(&settings, T0 + 3 * HOUR), 0);
        assert_eq!(book.prune(&settings, T0 + 4 * HOUR), 1);
        assert_eq!(book.patterns(&settings, T0 + 4 * HOUR)[0].template, "scanner offline");
        // The freed room takes a new pattern, and the pruned one is new again when it returns.
        assert_eq!(wms(&mut book, &settings, "bin empty", "SO-2", T0 + 4 * HOUR).len(), 1);
        assert_eq!((book.len(), book.refused()), (2, 0));
    }

    #[test]
    fn keys_and_orders_are_cut_to_bounded_lengths() {
        let settings = PatternSettings::default();
        let mut book = PatternBook::new();
        let huge = "x".repeat(10_000);
        book.observe(&settings, (&huge, Some(&huge), &huge), &huge, &huge, T0);
        let view = only(&book, &settings, T0);
        assert_eq!((view.class.len(), view.system.len(), view.recent_orders[0].len()), (200, 200, 200));
        assert_eq!(view.milestone.map(|m| m.len()), Some(200));
        assert_eq!((view.template.len(), view.example.len()), (200, MAX_EXAMPLE_BYTES));
    }
}
