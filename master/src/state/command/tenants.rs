//! Registering tenants: their signing keys, whether a signature is required, and what
//! their apps may do.

use super::*;

/// Most keys one tenant may register (rotation needs two; a few spare).
pub const MAX_KEYS: usize = 16;

/// Longest key id.
pub const MAX_KEY_ID: usize = 64;

/// Refuses a policy that breaks a rule, naming the field and the rule.
pub(super) fn check_put(name: &str, policy: &TenantPolicy) -> Result<(), CommandError> {
    let bad = |m: String| Err(CommandError::Tenant(m));
    check_name(name)?;
    if policy.keys.len() > MAX_KEYS {
        return bad(format!(
            "policy.keys: at most {MAX_KEYS} keys (got {})",
            policy.keys.len()
        ));
    }
    for (id, key) in &policy.keys {
        if id.len() > MAX_KEY_ID || !weir_security::principal::valid_name(id) {
            return bad(format!(
                "policy.keys: key id {:?} must be 1 to {MAX_KEY_ID} of [A-Za-z0-9._-]",
                id.chars().take(70).collect::<String>()
            ));
        }
        if key.len() != weir_security::sign::PUBLIC_KEY_LEN {
            return bad(format!(
                "policy.keys[{id}].public_key: an Ed25519 public key is {} bytes (got {})",
                weir_security::sign::PUBLIC_KEY_LEN,
                key.len()
            ));
        }
    }
    if policy.require_signature && policy.keys.is_empty() {
        return bad(
            "policy.require_signature: a tenant that must sign needs at least one key".into(),
        );
    }
    if let Some(p) = policy.capabilities.problems("policy.capabilities").first() {
        return bad(p.to_string());
    }
    Ok(())
}

/// Refuses a tenant name that breaks the naming rule.
fn check_name(name: &str) -> Result<(), CommandError> {
    let name_ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        return Err(CommandError::Tenant(format!(
            "tenant: {:?} must match [a-z][a-z0-9-]{{0,62}}",
            name.chars().take(70).collect::<String>()
        )));
    }
    Ok(())
}

/// The largest CPU quota: far above any cluster, small enough to add without
/// overflow or loss of precision.
pub const MAX_QUOTA_CPU: f64 = 1e9;

/// Refuses a quota with a limit that is not a finite, non-negative figure.
pub(super) fn check_quota(name: &str, quota: Option<&Quota>) -> Result<(), CommandError> {
    check_name(name)?;
    if let Some(c) = quota.and_then(|q| q.cpu) {
        if !(c.is_finite() && (0.0..=MAX_QUOTA_CPU).contains(&c)) {
            return Err(CommandError::Tenant(format!(
                "quota.cpu: must be a number of cores between 0 and {MAX_QUOTA_CPU} (got {c})"
            )));
        }
    }
    Ok(())
}

pub(super) fn apply_quota(s: &mut ClusterState, name: &str, quota: &Option<Quota>) -> Response {
    let t = s.tenants.entry(name.to_string()).or_default();
    t.name = name.to_string();
    t.quota = quota.clone();
    Response::Done
}

pub(super) fn apply_put(s: &mut ClusterState, name: &str, policy: &TenantPolicy) -> Response {
    let t = s.tenants.entry(name.to_string()).or_default();
    t.name = name.to_string();
    t.policy = Some(policy.clone());
    Response::Done
}
