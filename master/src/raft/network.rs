//! Raft RPCs to other masters over tonic, with a fault filter for tests.
//!
//! openraft asks for a client on every replication stream, election and linearizable
//! read, each with a deadline of one heartbeat interval; one cached channel per peer
//! address keeps that within budget (a fresh connection each time is not).
//!
//! That deadline is too short for a large AppendEntries on a busy machine: a 4 MiB
//! spec takes longer than 100 ms to encode, send, decode and fsync, and a request that
//! is abandoned at the deadline and sent again is abandoned again, forever. So an
//! AppendEntries that carries entries runs on its own task, under a deadline that grows
//! with its size ([`patience`]); openraft may stop waiting for it, and its next call for
//! the same entries joins the request still in flight instead of starting over. The
//! follower finishes what it receives even when nobody waits (see `transport`), and
//! `LogStore::limited_get_log_entries` bounds each request by bytes.

use super::*;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use weir_proto::v1 as pb;
use weir_proto::v1::raft_transport_client::RaftTransportClient;

/// Largest Raft message, both ways (snapshot chunks, entry batches).
pub const MAX_RAFT_MESSAGE: usize = 64 << 20;

/// Which peers this master cannot talk to: a network partition, injected by tests and
/// by `weir-master`'s admin hooks. Applies to traffic in both directions.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    blocked: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl Faults {
    /// Cuts this master off from `peers` (replaces any previous cut).
    pub fn isolate_from(&self, peers: impl IntoIterator<Item = NodeId>) {
        if let Ok(mut b) = self.blocked.write() {
            *b = peers.into_iter().collect();
        }
    }

    /// Heals every cut.
    pub fn heal(&self) {
        self.isolate_from([]);
    }

    /// Whether traffic with `peer` is cut.
    pub fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked
            .read()
            .map(|b| b.contains(&peer))
            .unwrap_or(false)
    }
}

/// Creates connections to peers.
#[derive(Clone)]
pub struct Network {
    /// This master's id.
    pub id: NodeId,
    /// Cluster id stamped on every message.
    pub cluster_id: String,
    /// Injected faults.
    pub faults: Faults,
    security: weir_security::Security,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Network {
    /// A network for master `id` of cluster `cluster_id`.
    pub fn new(
        id: NodeId,
        cluster_id: String,
        faults: Faults,
        security: weir_security::Security,
    ) -> Self {
        Self {
            id,
            cluster_id,
            faults,
            security,
            channels: Default::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Connection {
        // Infallible by contract: connect lazily; a bad address shows up as Unreachable.
        let channel = self
            .channels
            .lock()
            .ok()
            .and_then(|mut m| match m.get(&node.addr) {
                Some(c) => Some(c.clone()),
                None => self
                    .security
                    .endpoint(&node.addr, weir_security::ServerRole::Master)
                    .ok()
                    .map(|ep| {
                        let c = ep.connect_lazy();
                        m.insert(node.addr.clone(), c.clone());
                        c
                    }),
            });
        let client = channel.map(|c| {
            RaftTransportClient::new(c)
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE)
        });
        Connection {
            target,
            client,
            header: self.header(target),
            faults: self.faults.clone(),
            in_flight: None,
        }
    }
}

impl Network {
    fn header(&self, to: NodeId) -> pb::RaftHeader {
        pb::RaftHeader {
            cluster_id: self.cluster_id.clone(),
            from_id: self.id,
            to_id: to,
            encoding: 0,
        }
    }
}

/// A connection to one peer.
pub struct Connection {
    target: NodeId,
    client: Option<RaftTransportClient<Channel>>,
    header: pb::RaftHeader,
    faults: Faults,
    /// The last AppendEntries with entries, possibly still on its way.
    in_flight: Option<InFlight>,
}

type AppendResult =
    Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>>;

/// What makes two AppendEntries the same request for the follower: the leader's vote
/// and the entries carried. The commit index may differ; the next request carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AppendKey {
    vote: Vote,
    prev: Option<LogId>,
    last: Option<LogId>,
}

/// An AppendEntries sent on a task of its own: its answer lands in `reply`.
struct InFlight {
    key: AppendKey,
    reply: oneshot::Receiver<AppendResult>,
}

/// How long an AppendEntries of `bytes` may take before it is given up: two seconds,
/// plus one per MiB (a 4 MiB entry through a debug build on two busy cores takes well
/// under a second). Past it the follower is unreachable or far too slow, and openraft's
/// next attempt starts afresh.
pub fn patience(bytes: usize) -> Duration {
    Duration::from_secs(2) + Duration::from_millis((bytes as u64 * 1000) >> 20)
}

fn unreachable<E: std::error::Error>(why: &str) -> RPCError<NodeId, Node, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(why.to_string())))
}

fn from_status<E: std::error::Error>(s: tonic::Status) -> RPCError<NodeId, Node, E> {
    match s.code() {
        // Connection refused or reset: openraft backs off before retrying.
        tonic::Code::Unavailable | tonic::Code::Unknown => {
            RPCError::Unreachable(Unreachable::new(&s))
        }
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

fn encode<T: Serialize, E: std::error::Error>(v: &T) -> Result<Vec<u8>, RPCError<NodeId, Node, E>> {
    serde_json::to_vec(v).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

impl Connection {
    fn ready<E: std::error::Error>(
        &mut self,
    ) -> Result<&mut RaftTransportClient<Channel>, RPCError<NodeId, Node, E>> {
        if self.faults.is_blocked(self.target) {
            return Err(unreachable("partitioned (fault injection)"));
        }
        self.client
            .as_mut()
            .ok_or_else(|| unreachable("bad peer address"))
    }

    fn decode<Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        payload: &[u8],
    ) -> Result<Resp, RPCError<NodeId, Node, E>> {
        decode_reply(self.target, payload)
    }
}

/// A peer's answer: what it returned, or the Raft error it raised.
fn decode_reply<Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
    target: NodeId,
    payload: &[u8],
) -> Result<Resp, RPCError<NodeId, Node, E>> {
    let res: Result<Resp, E> =
        serde_json::from_slice(payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    res.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

impl Connection {
    /// Sends an AppendEntries that carries entries on a task of its own, or joins the
    /// identical one already in flight, and waits for its answer (openraft's deadline
    /// may end the wait; the request goes on).
    async fn append_patiently(&mut self, rpc: AppendEntriesRequest<TypeConfig>) -> AppendResult {
        let key = AppendKey {
            vote: rpc.vote,
            prev: rpc.prev_log_id,
            last: rpc.entries.last().map(|e| e.log_id),
        };
        if self.in_flight.as_ref().is_none_or(|f| f.key != key) {
            let mut client = self.ready()?.clone();
            let header = Some(self.header.clone());
            let target = self.target;
            let (tx, rx) = oneshot::channel();
            tokio::spawn(async move {
                let res = async {
                    let payload = encode(&rpc)?;
                    let bytes = payload.len();
                    let mut req = tonic::Request::new(pb::AppendEntriesRequest {
                        header,
                        payload: payload.into(),
                    });
                    req.set_timeout(patience(bytes));
                    let reply = client
                        .append_entries(req)
                        .await
                        .map_err(from_status)?
                        .into_inner();
                    decode_reply(target, &reply.payload)
                }
                .await;
                let _ = tx.send(res);
            });
            self.in_flight = Some(InFlight { key, reply: rx });
        }
        let Some(f) = self.in_flight.as_mut() else {
            return Err(unreachable("no request in flight"));
        };
        // Dropped here by openraft's deadline, the receiver stays for the next call.
        let res = (&mut f.reply)
            .await
            .unwrap_or_else(|_| Err(unreachable("append task ended without an answer")));
        self.in_flight = None;
        res
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        if !rpc.entries.is_empty() {
            return self.append_patiently(rpc).await;
        }
        // A heartbeat: small, and worth nothing once late.
        let payload = encode(&rpc)?;
        let header = Some(self.header.clone());
        let mut req = tonic::Request::new(pb::AppendEntriesRequest {
            header,
            payload: payload.into(),
        });
        req.set_timeout(option.soft_ttl());
        let reply = self
            .ready()?
            .append_entries(req)
            .await
            .map_err(from_status)?
            .into_inner();
        self.decode(&reply.payload)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let msg = pb::InstallSnapshotRequest {
            header: Some(self.header.clone()),
            vote: encode(&rpc.vote)?.into(),
            meta: encode(&rpc.meta)?.into(),
            offset: rpc.offset,
            data: rpc.data.into(),
            done: rpc.done,
        };
        let mut req = tonic::Request::new(msg);
        req.set_timeout(option.soft_ttl());
        let reply = self
            .ready()?
            .install_snapshot(req)
            .await
            .map_err(from_status)?
            .into_inner();
        self.decode(&reply.payload)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let payload = encode(&rpc)?;
        let header = Some(self.header.clone());
        let mut req = tonic::Request::new(pb::VoteRequest {
            header,
            payload: payload.into(),
        });
        req.set_timeout(option.soft_ttl());
        let reply = self
            .ready()?
            .vote(req)
            .await
            .map_err(from_status)?
            .into_inner();
        self.decode(&reply.payload)
    }
}
