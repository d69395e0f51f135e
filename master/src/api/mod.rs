//! The gRPC services every master serves: the client API (`Weir`), membership admin
//! (`WeirAdmin`) and worker registration (`MasterWorkers`).
//!
//! Any master accepts any call. Writes and (linearizable) reads are served by the
//! leader; a follower forwards the call to the leader transparently, once (a forwarded
//! call that lands on a non-leader is answered FAILED_PRECONDITION with the leader's
//! address in `x-weir-leader`, or UNAVAILABLE during an election).

mod admin;
mod authz;
mod bounds;
pub mod ratelimit;
mod weir;
mod workers;

pub(crate) use crate::shared::Route;
pub use crate::shared::{command_status, now_ms, Liveness, Shared, FORWARDED_KEY};
pub use admin::AdminService;
pub use weir::WeirService;
pub use workers::{monitor_liveness, WorkersService};

/// Members, leader, term and indexes as this master sees them.
pub fn cluster_status_of(shared: &Shared) -> weir_proto::v1::ClusterStatusResponse {
    weir::cluster_status(shared)
}

use crate::raft::NodeId;
use crate::state::{Command, CommandError};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Status};
use weir_proto::status::outcome_unknown;

/// Largest client request accepted (a spec is at most 16 MiB of text, but no sane one
/// comes near this).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// A forwarded copy of a request: same message and tenant, marked forwarded, and
/// (with security on) saying on whose behalf this master forwards it: the leader
/// believes that only from a master's certificate.
pub(crate) fn forwarded<T>(req: Request<T>) -> Request<T> {
    let tenant = req
        .metadata()
        .get(weir_proto::status::TENANT_METADATA_KEY)
        .cloned();
    let on_behalf = req
        .extensions()
        .get::<weir_security::Caller>()
        .and_then(|c| c.principal())
        .and_then(|p| p.uri().parse::<tonic::metadata::MetadataValue<_>>().ok());
    let mut out = Request::new(req.into_inner());
    if let Some(p) = on_behalf {
        out.metadata_mut()
            .insert(weir_security::caller::ON_BEHALF_OF, p);
    }
    out.metadata_mut().insert(
        FORWARDED_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    if let Some(t) = tenant {
        out.metadata_mut()
            .insert(weir_proto::status::TENANT_METADATA_KEY, t);
    }
    out
}

/// What a follower answers when the call it forwarded to the leader at `leader`
/// failed: the leader's own answer as it is, a connection that never opened as
/// UNAVAILABLE (nothing was sent), and a call lost on the way (the leader died, the
/// connection broke; a status made here, not sent by the leader, keeps the transport
/// error as its source) as [`outcome_unknown`], naming the leader.
pub(crate) fn forward_failed(leader: &str, s: Status) -> Status {
    let mut cause = s.message().to_string();
    let mut next = std::error::Error::source(&s);
    if next.is_none() {
        return s;
    }
    while let Some(e) = next {
        if e.is::<tonic::ConnectError>() {
            return s;
        }
        let text = e.to_string();
        if !cause.contains(&text) {
            cause = format!("{cause}: {text}");
        }
        next = e.source();
    }
    outcome_unknown(leader, &cause)
}
