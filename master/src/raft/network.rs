//! Raft RPCs to other masters over tonic, with a fault filter for tests.
//!
//! openraft asks for a client on every replication stream, election and linearizable
//! read, each with a deadline of one heartbeat interval; one cached channel per peer
//! address keeps that within budget (a fresh connection each time is not).

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
use tonic::transport::{Channel, Endpoint};
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
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Network {
    /// A network for master `id` of cluster `cluster_id`.
    pub fn new(id: NodeId, cluster_id: String, faults: Faults) -> Self {
        Self {
            id,
            cluster_id,
            faults,
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
                None => Endpoint::from_shared(format!("http://{}", node.addr))
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
        let res: Result<Resp, E> = serde_json::from_slice(payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
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
