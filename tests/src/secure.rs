//! Masters and workers in this process with security on: a CA of their own, each node
//! with its certificate, and clients as any principal (or as an outsider).

use crate::{init_log, worker_config};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use weir_master::server::{Master, MasterConfig};
use weir_proto::v1::weir_client::WeirClient;
use weir_security::ca::DevCa;
use weir_security::tls::Tls;
use weir_security::{Principal, Security, ServerRole};

/// The `Security` of `who`, issued by `ca`.
pub fn security_of(ca: &DevCa, who: &Principal) -> Security {
    let issued = ca.issue(who).expect("a certificate");
    let tls = Tls::from_pem(
        ca.cert_pem().as_bytes().to_vec(),
        issued.cert_pem.into_bytes(),
        issued.key_pem.into_bytes(),
        std::path::Path::new(&format!("test certificate of {who}")),
    )
    .expect("usable TLS material");
    Security::Mtls(Arc::new(tls))
}

/// A cluster of masters with mutual TLS on every link.
pub struct SecureCluster {
    /// The cluster CA.
    pub ca: DevCa,
    /// Data dirs.
    pub dir: tempfile::TempDir,
    /// Every master's address.
    pub addrs: BTreeMap<u64, SocketAddr>,
    /// Running masters.
    pub masters: BTreeMap<u64, Master>,
}

impl SecureCluster {
    /// Starts `n` founding masters, each with its own certificate.
    pub async fn start(n: u64) -> Self {
        Self::start_tuned(n, |_| {}).await
    }

    /// The same, with each master's config changed by `tune` first.
    pub async fn start_tuned(n: u64, tune: fn(&mut MasterConfig)) -> Self {
        init_log();
        let ca = DevCa::generate("test").expect("a CA");
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: BTreeMap<u64, SocketAddr> = listeners
            .iter()
            .map(|(id, l)| (*id, l.local_addr().unwrap()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut masters = BTreeMap::new();
        for (id, l) in listeners {
            let peers = addrs.iter().map(|(i, a)| (*i, a.to_string())).collect();
            let mut cfg = MasterConfig::new(id, dir.path().join(format!("m{id}")), peers);
            cfg.worker_heartbeat = std::time::Duration::from_millis(100);
            cfg.reconcile_interval = std::time::Duration::from_millis(100);
            cfg.node.security = security_of(&ca, &Principal::Master(id));
            cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
            tune(&mut cfg);
            masters.insert(id, Master::start_on(cfg, l).await.unwrap());
        }
        Self {
            ca,
            dir,
            addrs,
            masters,
        }
    }

    /// The security of `who`, from this cluster's CA.
    pub fn security(&self, who: &Principal) -> Security {
        security_of(&self.ca, who)
    }

    /// A channel to master `id` as `who`, over `security`.
    pub async fn channel_with(&self, id: u64, security: &Security) -> Result<Channel, String> {
        security
            .endpoint(&self.addrs[&id].to_string(), ServerRole::Master)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))
    }

    /// A client of master `id`, authenticated as `who`.
    pub async fn client(&self, id: u64, who: &Principal) -> WeirClient<Channel> {
        WeirClient::new(
            self.channel_with(id, &self.security(who))
                .await
                .expect("a TLS connection"),
        )
    }

    /// The leader every master agrees on.
    pub async fn leader(&self) -> u64 {
        crate::eventually("a leader all masters agree on", || async {
            let mut seen = None;
            for m in self.masters.values() {
                let l = m.node.raft.metrics().borrow().current_leader?;
                if seen.is_some_and(|s| s != l) {
                    return None;
                }
                seen = Some(l);
            }
            seen
        })
        .await
    }

    /// Starts worker `id` in this process with its own certificate.
    pub async fn worker(&self, id: &str) -> weir_worker::node::Worker {
        let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let data = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let masters: Vec<SocketAddr> = self.addrs.values().copied().collect();
        let mut cfg = worker_config(
            id,
            &masters,
            control.local_addr().unwrap(),
            data.local_addr().unwrap(),
        );
        cfg.security = self.security(&Principal::Worker(id.into()));
        weir_worker::node::Worker::start_on(cfg, control, data)
            .await
            .unwrap()
    }

    /// App names in master `id`'s applied state.
    pub async fn local_apps(&self, id: u64) -> Vec<String> {
        self.masters[&id]
            .node
            .state
            .read(|d| d.state.apps.keys().cloned().collect())
            .await
    }

    /// Stops every master.
    pub async fn stop(self) {
        for (_, m) in self.masters {
            m.stop().await;
        }
    }
}
