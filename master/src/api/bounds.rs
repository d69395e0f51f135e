//! Bounds on what one request may make the masters hold, checked before anything is
//! proposed to Raft: a spec committed once is expanded by every master that applies
//! it and by every new leader, so an oversized one must never reach the log.

use weir_common::spec::{AppLimits, AppSpec};
use weir_common::Problems;

/// Refuses `spec` when it would expand to more PEs or channels than `limits` allow
/// (the problems name the field and the rule; the caller answers INVALID_ARGUMENT).
/// Arithmetic on the logical model only: nothing is expanded to find out.
pub(crate) fn check_app(limits: &AppLimits, spec: &AppSpec) -> Result<(), Problems> {
    limits.check(spec).map(|_| ()).inspect_err(|p| {
        tracing::warn!(app = %spec.name, tenant = %spec.tenant, problems = %p, "refused an app over the per-app limits");
    })
}
