//! The masters' Prometheus endpoint (`--metrics-listen`): who may scrape it, and a
//! minimal HTTP/1.1 responder for `GET /metrics` (no web framework for one page).
//!
//! With security on it is HTTPS with client certificates of the cluster CA, like every
//! other link: a monitor's certificate (`weirctl certs init --monitors`) or an admin's
//! reads it; anyone else is answered 403 with the reason, and a client without a
//! certificate of the CA fails the handshake. The page names apps and Raft indexes,
//! which tenants must not read of each other.

use crate::api::Shared;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_security::{Principal, Role};

/// Whether the scraper `peer` (`None`: plain HTTP, nobody authenticated) may read the
/// metrics; the refusal says why.
pub fn may_scrape(peer: Option<&Principal>) -> Result<(), String> {
    match peer.map(Principal::role) {
        None | Some(Role::Monitor | Role::Admin) => Ok(()),
        Some(_) => Err(format!(
            "{} may not read metrics: a monitor's or an admin's certificate may",
            peer.map_or_else(String::new, Principal::uri)
        )),
    }
}

/// Serves scrapes until `stop` fires: plain HTTP, or HTTPS through `tls` (client
/// certificates required).
pub async fn serve(
    listener: TcpListener,
    shared: Shared,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((sock, peer_addr)) = conn else {
            continue;
        };
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let Some(acceptor) = tls else {
                return respond(sock, &shared, Ok(())).await;
            };
            let stream = match tokio::time::timeout(Duration::from_secs(5), acceptor.accept(sock))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer_addr, error = %e, "metrics TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let who = weir_security::tls::peer_principal(stream.get_ref().1.peer_certificates());
            let verdict = match &who {
                Ok(p) => may_scrape(Some(p)),
                Err(e) => Err(format!("client certificate: {e}")),
            };
            if let Err(why) = &verdict {
                tracing::warn!(peer = %peer_addr, reason = %why, "metrics scrape refused");
            }
            respond(stream, &shared, verdict).await;
        });
    }
}

async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    shared: &Shared,
    verdict: Result<(), String>,
) {
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok);
    let asked = n.is_some_and(|n| buf[..n].starts_with(b"GET /metrics"));
    let (status, body) = match verdict {
        Err(why) => ("403 Forbidden", why + "\n"),
        Ok(()) if asked => ("200 OK", render(shared) + &checkpoint_metrics(shared).await),
        Ok(()) => ("404 Not Found", String::new()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = sock.write_all(head.as_bytes()).await;
    let _ = sock.write_all(body.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// Per-app checkpoint gauges (from the replicated state, so any master answers the
/// same once it has applied the same log).
async fn checkpoint_metrics(shared: &Shared) -> String {
    use std::fmt::Write as _;
    let rows: Vec<(String, crate::state::AppCheckpoints)> = shared
        .node
        .state
        .read(|d| {
            d.state
                .apps
                .values()
                .filter(|a| a.state().is_live())
                .map(|a| (a.name.clone(), a.checkpoints.clone()))
                .collect()
        })
        .await;
    let mut out = String::new();
    type Gauge = (
        &'static str,
        &'static str,
        fn(&crate::state::AppCheckpoints) -> f64,
    );
    let gauges: [Gauge; 6] = [
        (
            "weir_checkpoint_last_id",
            "Id of the app's newest complete checkpoint.",
            |c| c.latest().map_or(0.0, |l| l.id as f64),
        ),
        (
            "weir_checkpoint_last_duration_ms",
            "Trigger to committed completion of the newest complete checkpoint, ms.",
            |c| {
                c.latest().map_or(0.0, |l| {
                    l.completed_at_ms.saturating_sub(l.started_at_ms) as f64
                })
            },
        ),
        (
            "weir_checkpoint_last_size_bytes",
            "State size of the newest complete checkpoint, bytes.",
            |c| c.latest().map_or(0.0, |l| l.size_bytes() as f64),
        ),
        (
            "weir_checkpoint_last_alignment_ms",
            "Longest barrier alignment of any PE in the newest complete checkpoint, ms.",
            |c| c.latest().map_or(0.0, |l| l.max_alignment_ms as f64),
        ),
        (
            "weir_checkpoint_in_flight",
            "1 while a checkpoint of the app is in flight.",
            |c| f64::from(u8::from(c.in_flight.is_some())),
        ),
        (
            "weir_recovery_attempt",
            "Highest recovery attempt of any region of the app (0: never recovered).",
            |c| c.attempts.values().copied().max().unwrap_or(0) as f64,
        ),
    ];
    for (name, help, f) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (app, c) in &rows {
            let _ = writeln!(out, "{name}{{app=\"{app}\"}} {}", f(c));
        }
    }
    out
}

fn render(shared: &Shared) -> String {
    let s = crate::api::cluster_status_of(shared);
    let leader = s.leader_id.map_or(-1.0, |l| l as f64);
    let mut out = shared.metrics.render(&[
        ("weir_raft_term", "Current Raft term.", s.term as f64),
        (
            "weir_raft_leader_id",
            "Id of the leader this master knows (-1: none).",
            leader,
        ),
        (
            "weir_raft_is_leader",
            "1 if this master leads.",
            f64::from(u8::from(s.leader_id == Some(s.answered_by))),
        ),
        (
            "weir_raft_commit_index",
            "Highest log index known committed.",
            s.commit_index as f64,
        ),
        (
            "weir_raft_applied_index",
            "Highest log index applied.",
            s.applied_index as f64,
        ),
        (
            "weir_raft_last_log_index",
            "Last log index stored.",
            s.last_log_index as f64,
        ),
        (
            "weir_raft_apply_lag",
            "Entries committed but not yet applied.",
            s.commit_index.saturating_sub(s.applied_index) as f64,
        ),
    ]);
    out.push_str(&member_metrics(&s.members));
    out
}

/// Per-member replication gauges, labelled `member`; only the leader knows them, so
/// only the leader exports them.
fn member_metrics(members: &[weir_proto::v1::Member]) -> String {
    use std::fmt::Write as _;
    type Gauge = (
        &'static str,
        &'static str,
        fn(&weir_proto::v1::Member) -> u64,
    );
    let gauges: [Gauge; 3] = [
        (
            "weir_raft_member_matched_index",
            "Highest log index the leader knows the member holds.",
            |m| m.matched_index.unwrap_or(0),
        ),
        (
            "weir_raft_member_lag_entries",
            "Log entries the member lacks (leader's last log index minus its matched index).",
            |m| m.lag_entries,
        ),
        (
            "weir_raft_member_lag_bytes",
            "Bytes of stored log entries the member lacks.",
            |m| m.lag_bytes,
        ),
    ];
    let known: Vec<_> = members
        .iter()
        .filter(|m| m.matched_index.is_some())
        .collect();
    let mut out = String::new();
    if known.is_empty() {
        return out;
    }
    for (name, help, f) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for m in &known {
            let _ = writeln!(out, "{name}{{member=\"{}\"}} {}", m.id, f(m));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitors_and_admins_scrape_nobody_else_does() {
        assert_eq!(may_scrape(None), Ok(()), "plain HTTP (--insecure)");
        for ok in [
            Principal::Monitor("prometheus".into()),
            Principal::Admin("ops".into()),
        ] {
            assert_eq!(may_scrape(Some(&ok)), Ok(()), "{ok}");
        }
        for no in [
            Principal::Tenant("acme".into()),
            Principal::Worker("w1".into()),
            Principal::Master(1),
        ] {
            let why = may_scrape(Some(&no)).unwrap_err();
            assert!(why.contains(&no.uri()) && why.contains("monitor"), "{why}");
        }
    }
}
