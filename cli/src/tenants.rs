//! `weirctl tenant put|list`: what each tenant may do, and the keys it signs with.

use crate::online::{Conn, Repeat};
use anyhow::Context;
use serde_json::json;
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;

/// A tenant's policy, as flags.
#[derive(clap::Args, Debug)]
pub struct Put {
    /// The tenant.
    pub name: String,
    /// A public signing key file (`weir-ed25519 <hex>`, as `weirctl certs init`
    /// writes `tenant-NAME.sign.pub`); repeat for several (rotation).
    #[arg(long = "public-key")]
    pub keys: Vec<String>,
    /// Accept unsigned specs from this tenant (signatures are required otherwise).
    #[arg(long)]
    pub unsigned: bool,
    /// Grant `kind: exec` operators (programs run on the workers).
    #[arg(long)]
    pub exec: bool,
    /// Grant `kind: container` operators (and templates).
    #[arg(long)]
    pub containers: bool,
    /// Grant file operators under this absolute directory.
    #[arg(long)]
    pub file_root: Option<String>,
    /// Grant TCP operators within this CIDR range; repeat for several.
    #[arg(long = "network")]
    pub network: Vec<String>,
}

/// `weirctl tenant put`.
pub async fn put(c: &Conn, p: &Put) -> anyhow::Result<()> {
    let mut keys = Vec::new();
    for file in &p.keys {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
        let public = weir_security::sign::parse_public_key(&text).with_context(|| file.clone())?;
        keys.push(pb::SigningKey {
            id: weir_security::sign::key_id(&public),
            public_key: public.into(),
        });
    }
    let req = pb::PutTenantRequest {
        tenant: p.name.clone(),
        policy: Some(pb::TenantPolicy {
            require_signature: !p.unsigned,
            keys: keys.clone(),
            capabilities: Some(pb::Capabilities {
                exec: p.exec,
                containers: p.containers,
                file_root: p.file_root.clone().unwrap_or_default(),
                network: p.network.clone(),
            }),
        }),
    };
    c.call(Repeat::Safe, |ch| {
        let req = req.clone();
        async move { WeirClient::new(ch).put_tenant(req).await }
    })
    .await?;
    let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    c.print(
        format!(
            "tenant {}: {} key(s) {}, signatures {}",
            p.name,
            ids.len(),
            ids.join(" "),
            if p.unsigned { "optional" } else { "required" }
        ),
        json!({"tenant": p.name, "keys": ids, "require_signature": !p.unsigned}),
    );
    Ok(())
}

fn grants(c: &pb::Capabilities) -> String {
    let mut g = Vec::new();
    if c.exec {
        g.push("exec".to_string());
    }
    if c.containers {
        g.push("containers".to_string());
    }
    if !c.file_root.is_empty() {
        g.push(format!("files under {}", c.file_root));
    }
    if !c.network.is_empty() {
        g.push(format!("network {}", c.network.join(",")));
    }
    if g.is_empty() {
        "built-in operators only".into()
    } else {
        g.join("; ")
    }
}

/// `weirctl tenant list`.
pub async fn list(c: &Conn) -> anyhow::Result<()> {
    let r = c
        .call(Repeat::Safe, |ch| async move {
            WeirClient::new(ch)
                .list_tenants(pb::ListTenantsRequest {})
                .await
        })
        .await?
        .into_inner();
    let mut text = format!(
        "{:<20} {:>5}  {:<10} {:<36} GRANTS",
        "TENANT", "APPS", "SIGNING", "KEYS"
    );
    let mut quotas = String::new();
    for t in &r.tenants {
        let (signing, keys, g) = match &t.policy {
            None => ("unregistered".to_string(), String::new(), String::new()),
            Some(p) => (
                if p.require_signature {
                    "required"
                } else {
                    "optional"
                }
                .to_string(),
                p.keys
                    .iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                grants(&p.capabilities.clone().unwrap_or_default()),
            ),
        };
        text.push_str(&format!(
            "\n{:<20} {:>5}  {:<10} {:<36} {g}",
            t.name, t.apps, signing, keys
        ));
        quotas.push_str(&format!(
            "\n{:<20} {:>6.3}  quota: {}; holds: {}",
            t.name,
            t.share,
            t.quota
                .as_ref()
                .map_or("unlimited".into(), crate::sched::limits),
            crate::sched::held(&t.held.unwrap_or_default()),
        ));
    }
    text.push_str(&format!(
        "\n\n{:<20} {:>6}  QUOTA AND HOLDINGS",
        "TENANT", "SHARE"
    ));
    text.push_str(&quotas);
    let js: Vec<_> = r
        .tenants
        .iter()
        .map(|t| {
            json!({
                "tenant": t.name,
                "apps": t.apps,
                "registered": t.policy.is_some(),
                "require_signature": t.policy.as_ref().map(|p| p.require_signature),
                "keys": t.policy.as_ref().map(|p| p.keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>()),
                "quota": t.quota.as_ref().map(crate::sched::quota_json),
                "share": t.share,
                "held": t.held.as_ref().map(|h| serde_json::json!({"cpu": h.cpu, "memory_mb": h.memory_mb, "gpus": h.gpus, "gpu_memory_mb": h.gpu_memory_mb, "pes": h.pes})),
            })
        })
        .collect();
    c.print(text, json!({ "tenants": js }));
    Ok(())
}
