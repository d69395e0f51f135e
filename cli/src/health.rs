//! `weirctl health`: asks one node's gRPC health service (`grpc.health.v1.Health`,
//! served by masters and workers) whether it is serving. Container healthchecks run
//! it, so it never retries for long and answers with its exit status alone.

use anyhow::Context;
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Checks `addr` (`host:port`) once within `timeout`. `Ok(true)` when it reports
/// SERVING for `service` (`""`: the node as a whole), `Ok(false)` when it answers
/// anything else, an error when it cannot be reached or asked.
pub fn check(
    security: &weir_security::Security,
    role: weir_security::ServerRole,
    addr: &str,
    service: &str,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let host = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let endpoint = security
        .endpoint(host, role)
        .with_context(|| format!("--addr: {addr:?} is not an address"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ask = async {
            let channel = endpoint
                .connect()
                .await
                .with_context(|| format!("cannot reach {addr}"))?;
            let reply = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: service.to_string(),
                })
                .await
                .with_context(|| format!("{addr} did not answer the health check"))?;
            anyhow::Ok(reply.into_inner().status)
        };
        let status = tokio::time::timeout(timeout, ask)
            .await
            .with_context(|| format!("{addr}: no answer within {timeout:?}"))??;
        let serving = status == ServingStatus::Serving as i32;
        let name = ServingStatus::try_from(status)
            .map(|s| s.as_str_name())
            .unwrap_or("UNKNOWN");
        println!("{addr}: {name}");
        Ok(serving)
    })
}
