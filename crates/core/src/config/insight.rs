//! `patterns` and `playbooks`: how exception reasons are grouped into recurring patterns, and what is recommended
//! when an order meets a known situation (an exception of a class, milestone, system or pattern, a clock at risk
//! or breached, for orders with given dimension values): the action, the team that owns it, a runbook and an
//! urgency.

use super::check::{Checker, ConfigError};
use super::dimensions::Dimension;
use super::sla::SlaConfig;
use super::taxonomy::Taxonomy;
use crate::insight::patterns::{template, PatternSettings, MAX_WINDOWS_KEPT};
use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// `patterns`, raw.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawPatterns {
    /// The width of one counting window.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Windows kept per pattern, for the trend and for the baseline a rate jump is measured against.
    pub windows_kept: usize,
    /// Patterns kept at most; new ones beyond it are refused and counted.
    pub max_patterns: usize,
    /// A window's count at least this many times the mean of the earlier windows is a rate jump…
    pub jump_factor: f64,
    /// …when it is also at least this many occurrences.
    pub jump_min_count: u64,
    /// Distinct orders remembered per pattern, for "orders affected".
    pub max_orders_tracked: usize,
}

impl Default for RawPatterns {
    fn default() -> RawPatterns {
        let d = PatternSettings::default();
        RawPatterns {
            window: d.window,
            windows_kept: d.windows_kept,
            max_patterns: d.max_patterns,
            jump_factor: d.jump_factor,
            jump_min_count: d.jump_min_count,
            max_orders_tracked: d.max_orders_tracked,
        }
    }
}

impl RawPatterns {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<PatternSettings, ConfigError> {
        if self.window < Duration::from_secs(1) {
            return Err(check.err("patterns.window", "must be at least 1s"));
        }
        if !(2..=MAX_WINDOWS_KEPT).contains(&self.windows_kept) {
            return Err(check.err("patterns.windows_kept", format!("must be between 2 and {MAX_WINDOWS_KEPT}")));
        }
        if !(self.jump_factor > 1.0 && self.jump_factor.is_finite()) {
            return Err(check.err("patterns.jump_factor", "must be greater than 1"));
        }
        if self.jump_min_count == 0 {
            return Err(check.err("patterns.jump_min_count", "must be at least 1"));
        }
        Ok(PatternSettings {
            window: self.window,
            windows_kept: self.windows_kept,
            max_patterns: check.positive("patterns.max_patterns", self.max_patterns)?,
            jump_factor: self.jump_factor,
            jump_min_count: self.jump_min_count,
            max_orders_tracked: check.positive("patterns.max_orders_tracked", self.max_orders_tracked)?,
        })
    }
}

/// What kind of situation a playbook is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaybookWhen {
    /// An exception recorded on the order (from a span, a conformance check or a breach).
    #[default]
    Exception,
    /// A running clock found at risk.
    AtRisk,
    /// A deadline passed without its milestone.
    Breached,
}

/// How soon the action is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
            Urgency::Critical => "critical",
        }
    }
}

/// One dimension and the values it must have.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawDimensionMatch {
    pub name: String,
    pub values: Vec<String>,
}

/// What a playbook matches; every field given must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawPlaybookMatch {
    pub when: PlaybookWhen,
    /// Exception class (for `at_risk` and `breached`: the class a breach of the clock records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The milestone the exception concerns, or the clock awaits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub milestone: Option<String>,
    /// Glob on the system (`service.name`) that reported the exception.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The exception's pattern: a glob on its template (`field ShipDate: expected * got <date>`), or a reason as a
    /// system writes it, which is masked into its template first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimension: Option<RawDimensionMatch>,
}

/// A recommended action for a known situation.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawPlaybook {
    /// Name, shown with the action; lower case, digits and `-`.
    pub name: String,
    #[serde(rename = "match")]
    pub matches: RawPlaybookMatch,
    /// What to do, in the words the team uses.
    pub action: String,
    /// The team that owns the action: an owner in the taxonomy.
    pub team: String,
    /// Where the steps are written down (http or https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    #[serde(default)]
    pub urgency: Urgency,
}

/// A checked playbook.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub name: String,
    pub when: PlaybookWhen,
    pub class: Option<String>,
    pub milestone: Option<String>,
    pub system: Option<GlobMatcher>,
    pub pattern: Option<GlobMatcher>,
    pub dimension: Option<(String, Vec<String>)>,
    pub action: String,
    pub team: String,
    pub runbook: Option<String>,
    pub urgency: Urgency,
}

/// What an order is in, as a playbook sees it.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    pub when: PlaybookWhen,
    pub class: Option<&'a str>,
    pub milestone: Option<&'a str>,
    pub system: Option<&'a str>,
    /// The exception's reason as recorded; masked into its template to match `pattern`.
    pub reason: Option<&'a str>,
    pub dimensions: &'a BTreeMap<String, String>,
}

impl Playbook {
    pub fn matches(&self, s: &Situation<'_>) -> bool {
        let text = |want: &Option<String>, have: Option<&str>| want.as_ref().is_none_or(|w| have == Some(w.as_str()));
        let glob = |want: &Option<GlobMatcher>, have: Option<String>| {
            want.as_ref().is_none_or(|g| have.is_some_and(|h| g.is_match(h)))
        };
        self.when == s.when
            && text(&self.class, s.class)
            && text(&self.milestone, s.milestone)
            && glob(&self.system, s.system.map(str::to_string))
            && glob(&self.pattern, s.reason.map(template))
            && self
                .dimension
                .as_ref()
                .is_none_or(|(name, values)| s.dimensions.get(name).is_some_and(|v| values.contains(v)))
    }
}

/// The first playbook, in the configuration's order, that matches the situation.
pub fn find_playbook<'a>(playbooks: &'a [Playbook], situation: &Situation<'_>) -> Option<&'a Playbook> {
    playbooks.iter().find(|p| p.matches(situation))
}

/// The first playbook for a clock at risk or breached: the class its breach records, the milestone it awaits, the
/// order's dimensions.
pub fn clock_playbook<'a>(
    playbooks: &'a [Playbook],
    when: PlaybookWhen,
    class: Option<&str>,
    milestone: &str,
    dimensions: &BTreeMap<String, String>,
) -> Option<&'a Playbook> {
    let situation = Situation { when, class, milestone: Some(milestone), system: None, reason: None, dimensions };
    find_playbook(playbooks, &situation)
}

impl super::Config {
    /// [`clock_playbook`] for a clock of SLA target `target` (an index into `sla.targets`).
    pub fn target_playbook(
        &self,
        target: usize,
        when: PlaybookWhen,
        dimensions: &BTreeMap<String, String>,
    ) -> Option<&Playbook> {
        let t = self.sla.targets.get(target)?;
        let class = &self.taxonomy.classes[t.class].name;
        clock_playbook(&self.playbooks, when, Some(class), &self.taxonomy.milestones[t.to].name, dimensions)
    }
}

fn glob(check: &Checker<'_>, key: String, text: &str) -> Result<GlobMatcher, ConfigError> {
    Glob::new(text).map(|g| g.compile_matcher()).map_err(|e| check.err(key, format!("invalid glob: {e}")))
}

pub(crate) fn check_playbooks(
    check: &Checker<'_>,
    raw: &[RawPlaybook],
    taxonomy: &Taxonomy,
    dimensions: &[Dimension],
    sla: &SlaConfig,
) -> Result<Vec<Playbook>, ConfigError> {
    let owners: BTreeSet<&str> = taxonomy
        .milestones
        .iter()
        .map(|m| m.owner.as_str())
        .chain(taxonomy.classes.iter().map(|c| c.owner.as_str()))
        .collect();
    let mut out: Vec<Playbook> = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let key = format!("playbooks[{i}]");
        let m = &p.matches;
        if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(check.err(format!("{key}.name"), "must be lower case letters, digits and `-`"));
        }
        if out.iter().any(|o| o.name == p.name) {
            return Err(check.err(format!("{key}.name"), format!("playbook `{}` is defined twice", p.name)));
        }
        if m.class.is_none()
            && m.milestone.is_none()
            && m.system.is_none()
            && m.pattern.is_none()
            && m.dimension.is_none()
        {
            return Err(check.err(
                format!("{key}.match"),
                "must name at least one of class, milestone, system, pattern or dimension",
            ));
        }
        // A playbook that names something the configuration does not know could never match: refused, so that a
        // typo is found at startup and not when the situation it was written for comes and nobody is told.
        if let Some(class) = &m.class {
            if taxonomy.class(class).is_none() {
                return Err(check.err(format!("{key}.match.class"), format!("`{class}` is not an exception class")));
            }
        }
        if let Some(milestone) = &m.milestone {
            let Some(at) = taxonomy.milestone(milestone) else {
                return Err(check.err(format!("{key}.match.milestone"), format!("`{milestone}` is not a milestone")));
            };
            if m.when != PlaybookWhen::Exception && !sla.targets.iter().any(|t| t.to == at) {
                return Err(check.err(
                    format!("{key}.match.milestone"),
                    format!("no SLA target awaits `{milestone}`, so no clock for it is ever at risk or breached"),
                ));
            }
        }
        if let (Some(class), PlaybookWhen::AtRisk | PlaybookWhen::Breached) = (&m.class, m.when) {
            let breach_classes: BTreeSet<&str> =
                sla.targets.iter().map(|t| taxonomy.classes[t.class].name.as_str()).collect();
            if !breach_classes.contains(class.as_str()) {
                return Err(check.err(
                    format!("{key}.match.class"),
                    format!("no SLA target records a breach as `{class}` (they record {breach_classes:?})"),
                ));
            }
        }
        if m.pattern.is_some() && m.when != PlaybookWhen::Exception {
            return Err(check.err(format!("{key}.match.pattern"), "only an exception has a pattern"));
        }
        let dimension = match &m.dimension {
            None => None,
            Some(d) => {
                if !dimensions.iter().any(|x| x.name == d.name) {
                    return Err(check.err(
                        format!("{key}.match.dimension.name"),
                        format!("`{}` is not a dimension defined under dimensions", d.name),
                    ));
                }
                if d.values.is_empty() {
                    return Err(check.err(format!("{key}.match.dimension.values"), "must not be empty"));
                }
                Some((d.name.clone(), d.values.clone()))
            }
        };
        if p.action.trim().is_empty() {
            return Err(check.err(format!("{key}.action"), "must say what to do"));
        }
        if !owners.contains(p.team.as_str()) {
            let known: Vec<&str> = owners.iter().copied().collect();
            return Err(check.err(
                format!("{key}.team"),
                format!("`{}` owns nothing in the taxonomy (owners: {})", p.team, known.join(", ")),
            ));
        }
        if let Some(runbook) = &p.runbook {
            if !(runbook.starts_with("https://") || runbook.starts_with("http://")) {
                return Err(check.err(format!("{key}.runbook"), "must be an http or https URL"));
            }
        }
        // A pattern with no wildcard is a reason as a system writes it: its template is what is matched.
        let pattern = match &m.pattern {
            None => None,
            Some(text) if text.contains('*') || text.contains('?') => {
                Some(glob(check, format!("{key}.match.pattern"), text)?)
            }
            Some(text) => Some(glob(check, format!("{key}.match.pattern"), &globset_escape(&template(text)))?),
        };
        out.push(Playbook {
            name: p.name.clone(),
            when: m.when,
            class: m.class.clone(),
            milestone: m.milestone.clone(),
            system: m.system.as_deref().map(|s| glob(check, format!("{key}.match.system"), s)).transpose()?,
            pattern,
            dimension,
            action: p.action.trim().to_string(),
            team: p.team.clone(),
            runbook: p.runbook.clone(),
            urgency: p.urgency,
        });
    }
    Ok(out)
}

/// A literal text as a glob that matches only itself.
fn globset_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('[');
            out.push(c);
            out.push(']');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    /// A file stating `yaml` over the embedded default, as `--config` would read it.
    fn with(yaml: &str) -> Result<crate::config::Config, String> {
        parse(yaml, "test.yaml").map_err(|e| e.to_string())
    }

    const GOOD: &str = "playbooks:
  - name: carrier-status-mapping
    match: { class: integration, milestone: shipment_confirmation, system: '*middleware*',
             pattern: 'field ShipDate: expected yyyy-MM-dd, got 11/26/2026' }
    action: Fix the ShipDate mapping, then replay the carrier status
    team: integration-team
    runbook: https://runbooks.example/carrier-status
    urgency: high
  - name: slow-release
    match: { when: at_risk, milestone: pick_release, dimension: { name: warehouse, values: [WH-SOUTH] } }
    action: Move the order to another wave
    team: warehouse-operations
";

    #[test]
    fn a_playbook_matches_the_situation_it_names_and_no_other() {
        use super::*;
        let config = with(GOOD).unwrap();
        let dims: BTreeMap<String, String> = [("warehouse".to_string(), "WH-SOUTH".to_string())].into();
        let mapping = Situation {
            when: PlaybookWhen::Exception,
            class: Some("integration"),
            milestone: Some("shipment_confirmation"),
            system: Some("integration-middleware"),
            reason: Some("field ShipDate: expected yyyy-MM-dd, got 12/01/2026"),
            dimensions: &dims,
        };
        assert_eq!(find_playbook(&config.playbooks, &mapping).map(|p| p.name.as_str()), Some("carrier-status-mapping"));
        let other_reason = Situation { reason: Some("connection refused"), ..mapping };
        assert!(find_playbook(&config.playbooks, &other_reason).is_none());
        let risk = Situation {
            when: PlaybookWhen::AtRisk,
            class: None,
            milestone: Some("pick_release"),
            system: None,
            reason: None,
            dimensions: &dims,
        };
        assert_eq!(find_playbook(&config.playbooks, &risk).map(|p| p.urgency), Some(Urgency::Normal));
        let east: BTreeMap<String, String> = [("warehouse".to_string(), "WH-EAST".to_string())].into();
        assert!(find_playbook(&config.playbooks, &Situation { dimensions: &east, ..risk }).is_none());
    }

    #[test]
    fn playbooks_that_could_match_nothing_known_stop_startup() {
        let bad = |yaml: &str, key: &str, reason: &str| {
            let e = with(yaml).unwrap_err();
            assert!(e.contains(key) && e.contains(reason), "{e}");
        };
        let one = |m: &str, rest: &str| {
            format!("playbooks:\n  - name: p\n    match: {m}\n    action: do it\n    team: integration-team\n{rest}")
        };
        bad(&one("{ class: integrtion }", ""), "playbooks[0].match.class", "`integrtion` is not an exception class");
        bad(&one("{ milestone: packing }", ""), "playbooks[0].match.milestone", "`packing` is not a milestone");
        bad(
            &one("{ when: at_risk, milestone: order_capture }", ""),
            "playbooks[0].match.milestone",
            "no SLA target awaits",
        );
        bad(&one("{ when: breached, class: integration }", ""), "playbooks[0].match.class", "no SLA target records");
        bad(
            &one("{ dimension: { name: region, values: [north] } }", ""),
            "playbooks[0].match.dimension.name",
            "`region`",
        );
        bad(&one("{}", ""), "playbooks[0].match", "at least one of");
        bad(&one("{ class: policy }", "    runbook: file:///etc/runbook\n"), "playbooks[0].runbook", "http or https");
        bad(&one("{ when: at_risk, pattern: 'x' }", ""), "playbooks[0].match.pattern", "only an exception");
        let team = "playbooks:\n  - name: p\n    match: { class: policy }\n    action: do it\n    team: nobody\n";
        bad(team, "playbooks[0].team", "`nobody` owns nothing");
    }
}
