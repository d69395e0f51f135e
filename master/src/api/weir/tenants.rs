//! Tenants: registering their policies (`PutTenant`, `ListTenants`), and admitting a
//! submitted spec under its tenant's policy (signature, capabilities) before anything
//! is proposed.

use super::*;
use crate::state::{SpecSignature, TenantPolicy};
use weir_common::spec::{check_capabilities, AppSpec, Capabilities};

/// Checks `text` (the spec `spec` was parsed from) against its tenant's policy: a
/// valid signature by one of the tenant's keys when one is given or required (with
/// security on, every tenant must sign unless an admin registered it otherwise), and
/// nothing the tenant's capabilities do not grant. Answers the signature to store.
pub(super) fn admit_spec(
    s: &ClusterState,
    secure: bool,
    spec: &AppSpec,
    text: &str,
    signature: Option<&pb::SpecSignature>,
) -> Result<Option<SpecSignature>, Status> {
    let tenant = &spec.tenant;
    let policy = s.tenants.get(tenant).and_then(|t| t.policy.as_ref());
    let signature = signature.filter(|g| !g.key_id.is_empty() || !g.signature.is_empty());
    let stored = match (signature, policy) {
        (Some(g), _) => {
            let key = policy.and_then(|p| p.keys.get(&g.key_id)).ok_or_else(|| {
                Status::unauthenticated(format!(
                    "signature.key_id: tenant {tenant:?} has no registered key {:?}",
                    g.key_id.chars().take(70).collect::<String>()
                ))
            })?;
            if !weir_security::sign::verify(key, text, &g.signature) {
                return Err(Status::unauthenticated(format!(
                    "signature: does not verify with key {:?} of tenant {tenant:?}: the spec was changed after it was signed, or signed with another key",
                    g.key_id
                )));
            }
            Some(SpecSignature {
                key_id: g.key_id.clone(),
                signature: g.signature.to_vec(),
            })
        }
        (None, Some(p)) if p.require_signature => {
            return Err(Status::unauthenticated(format!(
                "signature: tenant {tenant:?} must sign its specs (weirctl submit/upgrade --sign-key, or WEIR_SIGNING_KEY)"
            )))
        }
        (None, None) if secure => {
            return Err(Status::unauthenticated(format!(
                "signature: tenant {tenant:?} is not registered, and with security on every spec is signed by a registered key: an admin registers the tenant with `weirctl tenant put {tenant} --public-key FILE.pub`"
            )))
        }
        (None, _) => None,
    };
    if let Some(p) = policy {
        let problems = check_capabilities(spec, tenant, &p.capabilities);
        if !problems.0.is_empty() {
            return Err(Status::permission_denied(format!(
                "capabilities: {}",
                problems
                    .0
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
    }
    Ok(stored)
}

/// A policy from its message (the state's check validates it before proposing).
fn policy_of(p: pb::TenantPolicy) -> TenantPolicy {
    let caps = p.capabilities.unwrap_or_default();
    TenantPolicy {
        keys: p
            .keys
            .into_iter()
            .map(|k| (k.id, k.public_key.to_vec()))
            .collect(),
        require_signature: p.require_signature,
        capabilities: Capabilities {
            exec: caps.exec,
            containers: caps.containers,
            file_root: (!caps.file_root.is_empty()).then_some(caps.file_root),
            network: caps.network,
        },
    }
}

/// A policy as the API shows it.
fn policy_view(p: &TenantPolicy) -> pb::TenantPolicy {
    pb::TenantPolicy {
        keys: p
            .keys
            .iter()
            .map(|(id, k)| pb::SigningKey {
                id: id.clone(),
                public_key: k.clone().into(),
            })
            .collect(),
        require_signature: p.require_signature,
        capabilities: Some(pb::Capabilities {
            exec: p.capabilities.exec,
            containers: p.capabilities.containers,
            file_root: p.capabilities.file_root.clone().unwrap_or_default(),
            network: p.capabilities.network.clone(),
        }),
    }
}

impl WeirService {
    pub(super) async fn tenants_put(
        &self,
        req: Request<pb::PutTenantRequest>,
    ) -> Result<Reply<pb::PutTenantResponse>, Status> {
        at_leader!(self, req, put_tenant);
        authorize(&req, Action::Admin("PutTenant"))?;
        let r = req.into_inner();
        let name = r.tenant.clone();
        // Every rule of the policy (key count and sizes, ids, grants) is the state's
        // check, run before proposing.
        let policy = policy_of(
            r.policy
                .ok_or_else(|| Status::invalid_argument("policy: required"))?,
        );
        let (keys, required) = (policy.keys.len(), policy.require_signature);
        self.propose_once(Command::PutTenant {
            name: name.clone(),
            policy,
        })
        .await?;
        tracing::info!(tenant = %name, keys, require_signature = required, "tenant policy put");
        Ok(Reply::new(pb::PutTenantResponse {}))
    }

    pub(super) async fn tenants_list(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> Result<Reply<pb::ListTenantsResponse>, Status> {
        at_leader!(self, req, list_tenants);
        authorize(&req, Action::ReadCluster)?;
        self.shared.linearizable().await?;
        let only = list_scope(&req, "")?;
        let tenants = self
            .read(|s| {
                s.tenants
                    .values()
                    .filter(|t| only.is_empty() || t.name == only)
                    .map(|t| pb::TenantView {
                        name: t.name.clone(),
                        apps: t.apps,
                        policy: t.policy.as_ref().map(policy_view),
                    })
                    .collect()
            })
            .await;
        Ok(Reply::new(pb::ListTenantsResponse { tenants }))
    }
}
