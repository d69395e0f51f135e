//! What the client services and the executor share, below both: the handle on the
//! Raft node with its batched proposals (`Shared`), the leader's soft memory of the
//! workers (`Liveness`), the clock stamped into commands, and the one mapping of a
//! refused command to a gRPC status.

mod liveness;
pub mod propose;

pub use liveness::{Liveness, PeChange, PeReports, WorkerReports};

use crate::metrics::Metrics;
use crate::raft::node::RaftNode;
use crate::raft::{NodeId, TypeConfig};
use crate::state::{CatalogError, Command, CommandError, Response};
use openraft::error::{ClientWriteError, RaftError};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use weir_proto::status::not_leader;

/// Metadata key marking a call a follower forwarded (it is never forwarded again).
pub const FORWARDED_KEY: &str = "x-weir-forwarded";

/// Milliseconds since the epoch, the leader's clock stamped into commands.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a call must be served.
pub(crate) enum Route {
    /// Here: this master is the leader.
    Local,
    /// At the leader's address.
    Remote(String),
}

/// What the services share.
#[derive(Clone)]
pub struct Shared {
    /// The Raft node.
    pub node: RaftNode,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    proposer: propose::Proposer,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Shared {
    /// Services over `node` (starts the proposal batching task: needs a Tokio runtime).
    pub fn new(node: RaftNode, metrics: Arc<Metrics>) -> Self {
        Self {
            proposer: propose::Proposer::start(node.raft.clone(), metrics.clone()),
            node,
            metrics,
            channels: Default::default(),
        }
    }

    /// This master's id.
    pub fn id(&self) -> NodeId {
        self.node.id
    }

    /// The leader's id and address, as this master knows them.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.node.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// Whether this master leads now: its Raft runs (it was not shut down) and knows
    /// itself as the leader.
    pub fn leads(&self) -> bool {
        let m = self.node.raft.metrics().borrow().clone();
        m.running_state.is_ok() && m.current_leader == Some(self.id())
    }

    /// Where a call must go. A forwarded call is never forwarded again.
    pub(crate) fn route<T>(&self, req: &Request<T>) -> Result<Route, Status> {
        match self.leader() {
            Some((id, _)) if id == self.id() => Ok(Route::Local),
            leader if req.metadata().contains_key(FORWARDED_KEY) => {
                Err(not_leader(leader.as_ref().map(|(_, a)| a.as_str())))
            }
            Some((_, addr)) => Ok(Route::Remote(addr)),
            None => Err(not_leader(None)),
        }
    }

    /// A cached channel to another master.
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel, Status> {
        let mut map = self
            .channels
            .lock()
            .map_err(|_| Status::internal("channel cache poisoned"))?;
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = self
            .node
            .security
            .endpoint(addr, weir_security::ServerRole::Master)
            .map_err(|e| Status::internal(format!("leader address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Proposes `cmd` through Raft (batched with concurrent writes, see [`propose`])
    /// and waits until it is committed and applied.
    pub(crate) async fn write(&self, cmd: Command) -> Result<Response, Status> {
        self.proposer
            .propose(cmd)
            .await?
            .map_err(|e| command_status(&e))
    }

    /// Waits until this master (the leader) may serve a linearizable read.
    pub(crate) async fn linearizable(&self) -> Result<(), Status> {
        self.node
            .raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| match e.forward_to_leader() {
                Some(f) => not_leader(f.leader_node.as_ref().map(|n| n.addr.as_str())),
                None => Status::unavailable(format!("cannot confirm leadership: {e}")),
            })
    }

    /// Runs one RPC handler, recording its outcome and latency.
    pub(crate) async fn timed<T>(
        &self,
        method: &'static str,
        f: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let start = Instant::now();
        let res = f.await;
        let code = match &res {
            Ok(_) => "ok".to_string(),
            Err(s) => snake_case(&format!("{:?}", s.code())),
        };
        self.metrics.observe(method, &code, start.elapsed());
        res
    }
}

/// `AlreadyExists` -> `already_exists`, for metric labels.
fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The status a refused command answers.
pub fn command_status(e: &CommandError) -> Status {
    let code = match e {
        CommandError::AppExists(_) => Code::AlreadyExists,
        CommandError::AppNotFound(_) | CommandError::WorkerNotFound(_) => Code::NotFound,
        CommandError::AppState { .. } | CommandError::Checkpoint(_) | CommandError::Upgrade(_) => {
            Code::FailedPrecondition
        }
        CommandError::BadPlacement { .. }
        | CommandError::RequestIdReused { .. }
        | CommandError::Tenant(_)
        | CommandError::Scheduling(_)
        | CommandError::Spec(_) => Code::InvalidArgument,
        CommandError::Quota(_) => Code::ResourceExhausted,
        CommandError::Catalog(c) => match c {
            CatalogError::Exists { .. } => Code::AlreadyExists,
            CatalogError::NotFound { .. } => Code::NotFound,
            CatalogError::Precondition(_) => Code::FailedPrecondition,
            CatalogError::Invalid(_) => Code::InvalidArgument,
        },
    };
    Status::new(code, e.to_string())
}

fn raft_write_status(
    e: RaftError<NodeId, ClientWriteError<NodeId, <TypeConfig as openraft::RaftTypeConfig>::Node>>,
) -> Status {
    if let Some(f) = e.forward_to_leader() {
        return not_leader(f.leader_node.as_ref().map(|n| n.addr.as_str()));
    }
    match e {
        RaftError::Fatal(f) => Status::unavailable(format!("this master's Raft stopped: {f}")),
        RaftError::APIError(e) => Status::failed_precondition(e.to_string()),
    }
}
