//! Validation problems: every refusal names the offending path and the rule it broke.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One thing wrong with a spec, e.g. `operators[2].params.rate: must be > 0`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Problem {
    /// Where: a dotted path with list indices, e.g. `streams[1].to`.
    pub path: String,
    /// What rule the value at `path` breaks, phrased for a human.
    pub rule: String,
}

impl Problem {
    /// A problem at `path` breaking `rule`.
    pub fn new(path: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.rule)
    }
}

/// Every problem found in one spec; validation never stops at the first.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in spec", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// Collects problems while a spec is read and checked.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub problems: Vec<Problem>,
}

impl Sink {
    pub fn push(&mut self, path: impl Into<String>, rule: impl Into<String>) {
        self.problems.push(Problem::new(path, rule));
    }
}
