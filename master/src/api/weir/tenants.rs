//! Tenants: registering their policies (`PutTenant`, `ListTenants`), and admitting a
//! submitted spec under its tenant's policy (signature, capabilities) before anything
//! is proposed.

use super::*;
use crate::scheduler::queue::QueueEntry;
use crate::scheduler::usage::{self, Demand};
use crate::state::{Quota, SpecSignature, TenantPolicy};
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

/// A quota from its message (the state's check validates it before proposing).
fn quota_of(q: pb::Quota) -> Quota {
    Quota {
        cpu: q.cpu,
        memory_mb: q.memory_mb,
        gpus: q.gpus,
        gpu_memory_mb: q.gpu_memory_mb,
        pes: q.pes,
    }
}

/// A quota as the API shows it.
fn quota_view(q: &Quota) -> pb::Quota {
    pb::Quota {
        cpu: q.cpu,
        memory_mb: q.memory_mb,
        gpus: q.gpus,
        gpu_memory_mb: q.gpu_memory_mb,
        pes: q.pes,
    }
}

/// Resource amounts as the API shows them.
fn amounts(d: &Demand) -> pb::Amounts {
    pb::Amounts {
        cpu: d.cpu,
        memory_mb: d.memory_mb,
        gpus: d.gpus,
        gpu_memory_mb: d.gpu_memory_mb,
        pes: d.pes,
    }
}

/// A queue entry as the API shows it.
pub(super) fn queue_view(e: &QueueEntry, now_ms: u64) -> pb::QueueEntry {
    pb::QueueEntry {
        app: e.app.clone(),
        tenant: e.tenant.clone(),
        priority: format!("{:?}", e.priority).to_lowercase(),
        rank: e.rank,
        share: e.share,
        queued_at_ms: e.queued_at_ms,
        waited_ms: now_ms.saturating_sub(e.queued_at_ms),
        pes: e.pes,
        wait: e.wait.kind().to_string(),
        reason: e.wait.to_string(),
    }
}

impl WeirService {
    pub(super) async fn tenants_set_quota(
        &self,
        req: Request<pb::SetTenantQuotaRequest>,
    ) -> Result<Reply<pb::SetTenantQuotaResponse>, Status> {
        at_leader!(self, req, set_tenant_quota);
        authorize(&req, Action::Admin("SetTenantQuota"))?;
        let r = req.into_inner();
        let quota = r.quota.map(quota_of);
        // The state's check refuses a bad figure before anything is proposed.
        self.propose_once(Command::SetQuota {
            tenant: r.tenant.clone(),
            quota: quota.clone(),
        })
        .await?;
        tracing::info!(tenant = %r.tenant, ?quota, "tenant quota set");
        Ok(Reply::new(pb::SetTenantQuotaResponse {}))
    }

    pub(super) async fn queue_list(
        &self,
        req: Request<pb::ListQueueRequest>,
    ) -> Result<Reply<pb::ListQueueResponse>, Status> {
        at_leader!(self, req, list_queue);
        authorize(&req, Action::ReadCluster)?;
        let only = list_scope(&req, &req.get_ref().tenant)?;
        let now = crate::shared::now_ms();
        let entries = self
            .liveness
            .queue()
            .iter()
            .filter(|e| only.is_empty() || e.tenant == only)
            .map(|e| queue_view(e, now))
            .collect();
        Ok(Reply::new(pb::ListQueueResponse { entries }))
    }

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
        let now = crate::shared::now_ms();
        let tenants = self
            .read(|s| {
                let held = usage::held(s);
                let shares = usage::shares(s, now, usage::SHARE_WINDOW_MS);
                s.tenants
                    .values()
                    .filter(|t| only.is_empty() || t.name == only)
                    .map(|t| pb::TenantView {
                        name: t.name.clone(),
                        apps: t.apps,
                        policy: t.policy.as_ref().map(policy_view),
                        quota: t.quota.as_ref().map(quota_view),
                        held: Some(amounts(&held.get(&t.name).copied().unwrap_or_default())),
                        share: shares.get(&t.name).copied().unwrap_or(0.0),
                    })
                    .collect()
            })
            .await;
        Ok(Reply::new(pb::ListTenantsResponse { tenants }))
    }
}
