//! `taxonomy`: the milestones of the order flow in their expected order, and the exception classes, each with
//! the team that owns it.

use super::check::{is_snake_name, Checker, ConfigError};
use globset::GlobMatcher;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The milestone taxonomy and exception classes. The code has no taxonomy of its own: the embedded default file
/// holds a distributor's.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawTaxonomy {
    /// Milestones in their expected order.
    pub milestones: Vec<RawMilestone>,
    /// Exception classes by name (`data_quality`, `policy`, `integration`, `execution`).
    pub exception_classes: BTreeMap<String, RawExceptionClass>,
    /// Services (globs on the resource's `service.name`) whose spans may state their own milestone and exception
    /// (`order.milestone`, `order.exception.class`, `order.exception.owner`). Such a statement sets business
    /// state, a cancellation stops SLA clocks, so it is believed only from the systems named here; from any
    /// other sender it is ignored and counted. Empty: no sender is believed, rules decide.
    pub trust_declared_labels_from: Vec<String>,
}

/// One milestone.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawMilestone {
    /// Name, e.g. `credit_approval`; lower snake case.
    pub name: String,
    /// Team that owns reaching this milestone.
    pub owner: String,
    /// Whether the milestone lies off the main path (e.g. `customer_notification`).
    #[serde(default)]
    pub off_path: bool,
    /// Whether the main path may skip this milestone without a conformance exception.
    #[serde(default)]
    pub skippable: bool,
    /// Whether no other milestone may follow it (e.g. `order_cancellation`); implies off the main path.
    #[serde(default)]
    pub terminal: bool,
    /// Human description shown on the milestone span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One exception class. Classes merge by name over the default's, so a file may give only what it changes, e.g. a
/// default class's owner; a new class needs its owner.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawExceptionClass {
    /// Team that owns exceptions of this class unless a rule names another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Index of a milestone in `Taxonomy::milestones`, which is also its expected position in the flow.
pub type MilestoneId = usize;
/// Index of a class in `Taxonomy::classes`.
pub type ClassId = usize;

#[derive(Debug, Clone)]
pub struct Milestone {
    pub name: String,
    pub owner: String,
    pub off_path: bool,
    /// The main path may skip it without a conformance exception.
    pub skippable: bool,
    /// No milestone may follow it; terminal milestones are off the main path.
    pub terminal: bool,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ExceptionClass {
    pub name: String,
    pub owner: String,
}

#[derive(Debug, Clone)]
pub struct Taxonomy {
    pub milestones: Vec<Milestone>,
    pub classes: Vec<ExceptionClass>,
    /// Classes the built-in classification falls back to when no rule decides.
    pub data_quality: ClassId,
    pub integration: ClassId,
    pub execution: ClassId,
    pub policy: ClassId,
    /// Services whose spans' own milestone and exception statements are believed.
    pub trusted_declarers: Vec<GlobMatcher>,
}

impl Taxonomy {
    /// Whether spans of `service` may state their own milestone and exception.
    pub fn trusts_declarations_of(&self, service: &str) -> bool {
        self.trusted_declarers.iter().any(|glob| glob.is_match(service))
    }

    /// A milestone by name; for configuration and stored records, not the per-span path, where rules carry ids.
    pub fn milestone(&self, name: &str) -> Option<MilestoneId> {
        self.milestones.iter().position(|m| m.name == name)
    }

    /// A class by name.
    pub fn class(&self, name: &str) -> Option<ClassId> {
        self.classes.iter().position(|c| c.name == name)
    }

    /// A milestone named under `key`, or the error that names it.
    pub(crate) fn milestone_at(
        &self,
        check: &Checker<'_>,
        key: String,
        name: &str,
    ) -> Result<MilestoneId, ConfigError> {
        self.milestone(name)
            .ok_or_else(|| check.err(key, format!("`{name}` is not a milestone of taxonomy.milestones")))
    }

    /// A class named under `key`, or the error that names it.
    pub(crate) fn class_at(&self, check: &Checker<'_>, key: String, name: &str) -> Result<ClassId, ConfigError> {
        self.class(name).ok_or_else(|| check.err(key, format!("`{name}` is not a class of taxonomy.exception_classes")))
    }
}

impl RawTaxonomy {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<Taxonomy, ConfigError> {
        let mut milestones: Vec<Milestone> = Vec::new();
        for (i, m) in self.milestones.iter().enumerate() {
            let key = format!("taxonomy.milestones[{i}]");
            if !is_snake_name(&m.name) {
                return Err(check.err(format!("{key}.name"), format!("`{}` must be lower snake case", m.name)));
            }
            if milestones.iter().any(|x| x.name == m.name) {
                return Err(check.err(format!("{key}.name"), format!("milestone `{}` is defined twice", m.name)));
            }
            if m.owner.trim().is_empty() {
                return Err(check.err(format!("{key}.owner"), "must not be empty"));
            }
            milestones.push(Milestone {
                name: m.name.clone(),
                owner: m.owner.clone(),
                off_path: m.off_path || m.terminal,
                skippable: m.skippable,
                terminal: m.terminal,
                description: m.description.clone(),
            });
        }
        if milestones.is_empty() {
            return Err(check.err("taxonomy.milestones", "at least one milestone is needed"));
        }
        let mut classes = Vec::new();
        for (name, class) in &self.exception_classes {
            let key = format!("taxonomy.exception_classes.{name}");
            if !is_snake_name(name) || name == "none" {
                return Err(check.err(key, "class names must be lower snake case and not `none`"));
            }
            let owner = class.owner.as_deref().ok_or_else(|| check.err(format!("{key}.owner"), "is required"))?;
            if owner.trim().is_empty() {
                return Err(check.err(format!("{key}.owner"), "must not be empty"));
            }
            classes.push(ExceptionClass { name: name.clone(), owner: owner.to_string() });
        }
        let required = |name: &str| {
            classes.iter().position(|c| c.name == name).ok_or_else(|| {
                check.err(
                    "taxonomy.exception_classes",
                    format!("class `{name}` is required (the built-in classification uses it)"),
                )
            })
        };
        let data_quality = required("data_quality")?;
        let integration = required("integration")?;
        let execution = required("execution")?;
        let policy = required("policy")?;
        let trusted_declarers = self
            .trust_declared_labels_from
            .iter()
            .enumerate()
            .map(|(i, pattern)| check.glob(format!("taxonomy.trust_declared_labels_from[{i}]"), pattern))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Taxonomy { milestones, classes, data_quality, integration, execution, policy, trusted_declarers })
    }
}
