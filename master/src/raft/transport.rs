//! The receiving side of Raft RPCs: the `RaftTransport` gRPC service.

use super::network::{Faults, MAX_RAFT_MESSAGE};
use super::*;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response as TonicResponse, Status};
use weir_proto::v1 as pb;
use weir_proto::v1::raft_transport_server::{RaftTransport, RaftTransportServer};

/// Serves Raft RPCs for one master.
pub struct RaftService {
    raft: Raft,
    id: NodeId,
    cluster_id: String,
    faults: Faults,
}

impl RaftService {
    /// The service, ready to add to a tonic server.
    pub fn server(
        raft: Raft,
        id: NodeId,
        cluster_id: String,
        faults: Faults,
    ) -> RaftTransportServer<Self> {
        RaftTransportServer::new(Self {
            raft,
            id,
            cluster_id,
            faults,
        })
        .max_decoding_message_size(MAX_RAFT_MESSAGE)
        .max_encoding_message_size(MAX_RAFT_MESSAGE)
    }

    /// Refuses messages for another cluster or master, from cut-off peers, and (with
    /// mutual TLS) from a master whose certificate names another id than the header.
    fn admit(
        &self,
        caller: Option<weir_security::Principal>,
        header: Option<&pb::RaftHeader>,
    ) -> Result<(), Status> {
        let h = header.ok_or_else(|| Status::invalid_argument("header: required"))?;
        if let Some(p) = caller {
            if p != weir_security::Principal::Master(h.from_id) {
                return Err(Status::permission_denied(format!(
                    "header.from_id: the caller is {p}, not master {}",
                    h.from_id
                )));
            }
        }
        if h.cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "header.cluster_id: this master belongs to cluster {:?}, not {:?}",
                self.cluster_id, h.cluster_id
            )));
        }
        if h.to_id != self.id {
            return Err(Status::failed_precondition(format!(
                "header.to_id: this is master {}, not {}",
                self.id, h.to_id
            )));
        }
        if self.faults.is_blocked(h.from_id) {
            return Err(Status::unavailable("partitioned (fault injection)"));
        }
        Ok(())
    }
}

/// The authenticated master calling (`None` with security off), as the interceptor
/// left it.
fn caller_of<T>(req: &Request<T>) -> Result<Option<weir_security::Principal>, Status> {
    Ok(weir_security::Caller::of(req)?.principal().cloned())
}

fn decode<T: DeserializeOwned>(field: &str, b: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(b).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))
}

/// Runs `work` to completion even when the caller stops waiting. The leader gives each
/// replication RPC a deadline (one heartbeat interval) and tonic drops the handler when
/// it passes; dropped mid-append, a slow follower would redo the same work on every
/// retry and never catch up. Finished here, a retry finds the entries already in the
/// log and is answered at once. Raft messages are safe to apply late: a stale one is
/// refused by its vote or log id.
async fn detached<F>(work: F) -> Result<Vec<u8>, Status>
where
    F: std::future::Future<Output = Result<Vec<u8>, Status>> + Send + 'static,
{
    tokio::spawn(work)
        .await
        .map_err(|e| Status::internal(format!("raft handler failed: {e}")))?
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn append_entries(
        &self,
        req: Request<pb::AppendEntriesRequest>,
    ) -> Result<TonicResponse<pb::AppendEntriesResponse>, Status> {
        let caller = caller_of(&req)?;
        let req = req.into_inner();
        self.admit(caller, req.header.as_ref())?;
        let raft = self.raft.clone();
        let payload = detached(async move {
            let rpc: AppendEntriesRequest<TypeConfig> = decode("payload", &req.payload)?;
            encode(&raft.append_entries(rpc).await)
        })
        .await?;
        Ok(TonicResponse::new(pb::AppendEntriesResponse {
            payload: payload.into(),
        }))
    }

    async fn vote(
        &self,
        req: Request<pb::VoteRequest>,
    ) -> Result<TonicResponse<pb::VoteResponse>, Status> {
        let caller = caller_of(&req)?;
        let req = req.into_inner();
        self.admit(caller, req.header.as_ref())?;
        let rpc: VoteRequest<NodeId> = decode("payload", &req.payload)?;
        let payload = encode(&self.raft.vote(rpc).await)?;
        Ok(TonicResponse::new(pb::VoteResponse {
            payload: payload.into(),
        }))
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::InstallSnapshotRequest>,
    ) -> Result<TonicResponse<pb::InstallSnapshotResponse>, Status> {
        let caller = caller_of(&req)?;
        let req = req.into_inner();
        self.admit(caller, req.header.as_ref())?;
        let rpc = InstallSnapshotRequest::<TypeConfig> {
            vote: decode("vote", &req.vote)?,
            meta: decode("meta", &req.meta)?,
            offset: req.offset,
            data: req.data.to_vec(),
            done: req.done,
        };
        let raft = self.raft.clone();
        let payload = detached(async move { encode(&raft.install_snapshot(rpc).await) }).await?;
        Ok(TonicResponse::new(pb::InstallSnapshotResponse {
            payload: payload.into(),
        }))
    }
}
