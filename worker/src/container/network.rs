//! The per-tenant Docker network: a tenant's containers may reach each other, no one
//! else's.

use super::identity::LABEL_CLUSTER;
use super::ConfigError;
use bollard::models::NetworkCreateRequest;
use std::collections::HashMap;

/// Label of a tenant network: the tenant it belongs to.
pub const LABEL_TENANT: &str = "weir.tenant";

/// The name of `tenant`'s network, or why `tenant` cannot name one. Tenant names are
/// checked by the spec parser already; this guards the worker against a request that
/// did not come through it.
pub fn tenant_network_name(pe: &str, tenant: &str) -> Result<String, ConfigError> {
    let ok = (1..=63).contains(&tenant.len())
        && tenant.starts_with(|c: char| c.is_ascii_lowercase())
        && tenant
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(ConfigError::Tenant {
            pe: pe.to_string(),
            tenant: tenant.to_string(),
        });
    }
    Ok(format!("weir-tenant-{tenant}"))
}

/// The request that creates `tenant`'s network on first use. `internal`: no route
/// out of the bridge, so its containers reach neither other networks nor the
/// outside (whether that also keeps them off the host's own ports is for the tests
/// against the real engine to show; docs/containers.md).
pub fn tenant_network(
    cluster: &str,
    pe: &str,
    tenant: &str,
) -> Result<NetworkCreateRequest, ConfigError> {
    Ok(NetworkCreateRequest {
        name: tenant_network_name(pe, tenant)?,
        driver: Some("bridge".into()),
        internal: Some(true),
        attachable: Some(false),
        labels: Some(HashMap::from([
            (LABEL_CLUSTER.to_string(), cluster.to_string()),
            (LABEL_TENANT.to_string(), tenant.to_string()),
        ])),
        ..Default::default()
    })
}
