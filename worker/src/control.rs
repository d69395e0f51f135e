//! `weir.v1.WorkerControl`: the commands the master leader sends this worker.
//!
//! Every command carries the leader's term; a command from an older term than the
//! highest this worker has seen is refused (FAILED_PRECONDITION), so a deposed leader
//! cannot act. Commands are idempotent by content (deploying a PE that runs, stopping
//! one that is gone) and repeats of a command id answer `duplicate = true`.
//! Bad requests are INVALID_ARGUMENT naming the field; nothing is changed.

use crate::checkpoint::{serve, SnapshotStore};
use crate::dataplane::ChannelKey;
use crate::runtime::{OutputConfig, PeConfig, Runtime, Target};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};
use weir_common::keygroup::KeyGroupRange;
use weir_common::spec::{OperatorSpec, Partitioning};
use weir_proto::v1 as pb;
use weir_proto::v1::worker_control_server::WorkerControl;
use weir_security::{Caller, Role};

/// How long command ids are remembered.
const REMEMBER: Duration = Duration::from_secs(600);

/// The service.
pub struct ControlService {
    worker_id: String,
    data_address: String,
    runtime: Arc<Runtime>,
    term: Arc<AtomicU64>,
    seen: Mutex<HashMap<String, Instant>>,
    incarnation: Arc<AtomicU64>,
    store: Arc<SnapshotStore>,
}

impl ControlService {
    /// The service over `runtime`. `term` is the highest leader term seen (shared with
    /// the agent, which learns terms from heartbeat answers). `store` holds the
    /// checkpoint snapshots this worker took or replicates for its peers.
    pub fn new(
        worker_id: String,
        data_address: String,
        runtime: Arc<Runtime>,
        term: Arc<AtomicU64>,
        incarnation: Arc<AtomicU64>,
        store: Arc<SnapshotStore>,
    ) -> Self {
        Self {
            worker_id,
            data_address,
            runtime,
            term,
            seen: Mutex::default(),
            incarnation,
            store,
        }
    }

    /// Checks the header: refuses a stale term; `Ok(true)` for a repeated command id.
    fn admit(&self, h: Option<&pb::CommandHeader>) -> Result<bool, Status> {
        let Some(h) = h else {
            return Err(Status::invalid_argument("header: required"));
        };
        let seen_term = self.term.fetch_max(h.term, Ordering::AcqRel);
        if h.term < seen_term {
            return Err(Status::failed_precondition(format!(
                "header.term: {} is older than term {seen_term} this worker has seen; the sender is no longer the leader",
                h.term
            )));
        }
        if h.command_id.is_empty() {
            return Ok(false);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| at.elapsed() < REMEMBER);
        Ok(seen.insert(h.command_id.clone(), Instant::now()).is_some())
    }

    fn target(
        &self,
        pe: &str,
        addresses: &HashMap<String, String>,
        attempts: &HashMap<String, u64>,
    ) -> Target {
        let address = addresses
            .get(pe)
            .filter(|a| !a.is_empty() && **a != self.data_address)
            .cloned();
        Target {
            pe: pe.to_string(),
            address,
            attempt: attempts.get(pe).copied(),
        }
    }
}

/// A partitioning from the protocol.
pub fn partitioning(p: Option<&pb::Partitioning>, path: &str) -> Result<Partitioning, Status> {
    use pb::partitioning::Kind;
    let p = p.ok_or_else(|| Status::invalid_argument(format!("{path}: required")))?;
    Ok(match Kind::try_from(p.kind) {
        Ok(Kind::Forward) => Partitioning::Forward,
        Ok(Kind::RoundRobin) => Partitioning::RoundRobin,
        Ok(Kind::Hash) => Partitioning::Hash {
            key: p.key_field.clone(),
        },
        Ok(Kind::Broadcast) => Partitioning::Broadcast,
        _ => {
            return Err(Status::invalid_argument(format!(
                "{path}.kind: unknown partitioning {}",
                p.kind
            )))
        }
    })
}

fn pe_config(svc: &ControlService, r: &pb::DeployPeRequest) -> Result<PeConfig, Status> {
    let s = r
        .start_pe
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("start_pe: required"))?;
    if s.pe.is_empty() {
        return Err(Status::invalid_argument("start_pe.pe: required"));
    }
    let spec: OperatorSpec = serde_json::from_str(&s.spec_json).map_err(|e| {
        Status::invalid_argument(format!("start_pe.spec_json: not an operator spec: {e}"))
    })?;
    if s.parallelism == 0 || s.index >= s.parallelism {
        return Err(Status::invalid_argument(format!(
            "start_pe.index: {} is not below parallelism {}",
            s.index, s.parallelism
        )));
    }
    let mut outputs = Vec::new();
    for (i, o) in s.outputs.iter().enumerate() {
        outputs.push(OutputConfig {
            stream: o.stream.clone(),
            partitioning: partitioning(
                o.partitioning.as_ref(),
                &format!("start_pe.outputs[{i}].partitioning"),
            )?,
            targets: o
                .targets
                .iter()
                .map(|t| svc.target(t, &r.pe_addresses, &r.peer_attempts))
                .collect(),
        });
    }
    let mut inputs = Vec::new();
    for (i, c) in r.inputs.iter().enumerate() {
        if c.to_pe != s.pe {
            return Err(Status::invalid_argument(format!(
                "inputs[{i}].to_pe: {:?} is not the PE deployed ({:?})",
                c.to_pe, s.pe
            )));
        }
        inputs.push(c.from_pe.clone());
    }
    let kg = s.key_groups.as_ref().map_or_else(
        || KeyGroupRange::for_pe(s.index, s.parallelism),
        |k| KeyGroupRange {
            start: k.start,
            end: k.end,
        },
    );
    Ok(PeConfig {
        app: r.app.clone(),
        version: r.version,
        tenant: r.tenant.clone(),
        pe: s.pe.clone(),
        spec,
        index: s.index,
        key_groups: kg,
        source_ordinal: r.source_ordinal,
        inputs,
        outputs,
        attempt: r.attempt,
        restore: (r.restore_checkpoint_id != 0).then(|| crate::runtime::checkpoint::OwnRestore {
            id: r.restore_checkpoint_id,
            from: r.restore_from.clone(),
            chain: r.restore_chain.clone(),
            seed: r.restore_seed.clone(),
        }),
        gpus: r.gpu_uuids.clone(),
        peer_attempts: r.peer_attempts.clone(),
        producer_workers: r.producer_workers.clone(),
        restore_pieces: r.restore_pieces.clone(),
        start_at_barrier: r.start_at_barrier,
    })
}

/// The one place a refused deploy becomes a status. A PE whose kernel cannot start
/// (a bad `map` expression, a program that does not run, no Docker Engine for a
/// container) is not a refused deploy: the deploy succeeds and the PE reports itself
/// failed, which the master recovers like any failure.
fn deploy_status(e: crate::runtime::DeployError) -> Status {
    match e {
        crate::runtime::DeployError::Invalid(_) => Status::invalid_argument(e.to_string()),
    }
}

fn arm_status(e: crate::runtime::ArmError) -> Status {
    match e {
        crate::runtime::ArmError::NotHere(_) => Status::not_found(e.to_string()),
        crate::runtime::ArmError::NotRunning { .. } => Status::failed_precondition(e.to_string()),
    }
}

fn channel_key(c: Option<&pb::ChannelRef>, path: &str) -> Result<ChannelKey, Status> {
    let c = c.ok_or_else(|| Status::invalid_argument(format!("{path}: required")))?;
    if c.from_pe.is_empty() || c.to_pe.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{path}: from_pe and to_pe are required"
        )));
    }
    Ok(ChannelKey::new(c.from_pe.clone(), c.to_pe.clone()))
}

/// Commands (deploy, stop, wiring, checkpoints) come only from masters: with security
/// on, another worker or a client certificate is refused before the term is looked
/// at, so nobody but a master can raise the term this worker believes in.
fn from_master<T>(req: &Request<T>) -> Result<(), Status> {
    Caller::of(req)?.require(&[Role::Master], "worker control commands")
}

#[tonic::async_trait]
impl WorkerControl for ControlService {
    #[tracing::instrument(skip_all, fields(worker = %self.worker_id))]
    async fn deploy_pe(
        &self,
        req: Request<pb::DeployPeRequest>,
    ) -> Result<Response<pb::DeployPeResponse>, Status> {
        from_master(&req)?;
        let r = req.into_inner();
        let cfg = pe_config(self, &r)?;
        let duplicate = self.admit(r.header.as_ref())?;
        let state = self.runtime.deploy(cfg).await.map_err(deploy_status)?;
        Ok(Response::new(pb::DeployPeResponse {
            duplicate,
            state: state.to_proto() as i32,
        }))
    }

    #[tracing::instrument(skip_all, fields(worker = %self.worker_id))]
    async fn stop_pe(
        &self,
        req: Request<pb::StopPeRequest>,
    ) -> Result<Response<pb::StopPeResponse>, Status> {
        from_master(&req)?;
        let r = req.into_inner();
        let pe = r
            .stop_pe
            .as_ref()
            .map(|s| s.pe.clone())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Status::invalid_argument("stop_pe.pe: required"))?;
        let duplicate = self.admit(r.header.as_ref())?;
        let final_stats = self.runtime.stop(&r.app, &pe);
        if final_stats.is_none() {
            tracing::info!(%pe, "stop of a PE that is not here: nothing to do");
        }
        Ok(Response::new(pb::StopPeResponse {
            duplicate,
            final_stats,
        }))
    }

    #[tracing::instrument(skip_all, fields(worker = %self.worker_id))]
    async fn open_channel(
        &self,
        req: Request<pb::OpenChannelRequest>,
    ) -> Result<Response<pb::OpenChannelResponse>, Status> {
        from_master(&req)?;
        let r = req.into_inner();
        let key = channel_key(
            r.open_channel.as_ref().and_then(|o| o.channel.as_ref()),
            "open_channel.channel",
        )?;
        match pb::ChannelEnd::try_from(r.end) {
            Ok(pb::ChannelEnd::Producer) => {
                if r.peer_data_address.is_empty() {
                    return Err(Status::invalid_argument(
                        "peer_data_address: required for a producer end",
                    ));
                }
                let duplicate = self.admit(r.header.as_ref())?;
                if !self.runtime.repoint(&r.app, &key, &r.peer_data_address) {
                    return Err(Status::not_found(format!(
                        "open_channel.channel: no remote channel {key} here"
                    )));
                }
                Ok(Response::new(pb::OpenChannelResponse { duplicate }))
            }
            Ok(pb::ChannelEnd::Consumer) => {
                if r.barrier_id == 0 {
                    return Err(Status::invalid_argument(
                        "barrier_id: required for a consumer end (the switch barrier)",
                    ));
                }
                let duplicate = self.admit(r.header.as_ref())?;
                let opened = self
                    .runtime
                    .open_input(
                        &r.app,
                        &key.to,
                        &key.from,
                        r.peer_attempt,
                        Some(r.peer_worker_id.clone()).filter(|w| !w.is_empty()),
                        r.barrier_id,
                    )
                    .map_err(arm_status)?;
                Ok(Response::new(pb::OpenChannelResponse {
                    duplicate: duplicate || !opened,
                }))
            }
            _ => Err(Status::invalid_argument(format!("end: unknown {}", r.end))),
        }
    }

    #[tracing::instrument(skip_all, fields(worker = %self.worker_id))]
    async fn close_channel(
        &self,
        req: Request<pb::CloseChannelRequest>,
    ) -> Result<Response<pb::CloseChannelResponse>, Status> {
        from_master(&req)?;
        let r = req.into_inner();
        let key = channel_key(
            r.close_channel.as_ref().and_then(|o| o.channel.as_ref()),
            "close_channel.channel",
        )?;
        match pb::ChannelEnd::try_from(r.end) {
            Ok(pb::ChannelEnd::Consumer) => {
                let duplicate = self.admit(r.header.as_ref())?;
                let closed = self.runtime.close_input(&r.app, &key.to, &key.from);
                Ok(Response::new(pb::CloseChannelResponse {
                    duplicate: duplicate || !closed,
                }))
            }
            // A producer end closes itself at the switch barrier (its route drops it).
            Ok(pb::ChannelEnd::Producer) => Ok(Response::new(pb::CloseChannelResponse {
                duplicate: self.admit(r.header.as_ref())?,
            })),
            _ => Err(Status::invalid_argument(format!("end: unknown {}", r.end))),
        }
    }

    #[tracing::instrument(skip_all, fields(worker = %self.worker_id))]
    async fn switch_output(
        &self,
        req: Request<pb::SwitchOutputRequest>,
    ) -> Result<Response<pb::SwitchOutputResponse>, Status> {
        from_master(&req)?;
        let r = req.into_inner();
        let so = r
            .switch_output
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("switch_output: required"))?;
        if so.pe.is_empty() || so.stream.is_empty() {
            return Err(Status::invalid_argument(
                "switch_output: pe and stream are required",
            ));
        }
        if r.barrier_id == 0 {
            return Err(Status::invalid_argument("barrier_id: must be above 0"));
        }
        let part = match (&so.partitioning, so.targets.is_empty()) {
            (_, true) => None,
            (p, false) => Some(partitioning(p.as_ref(), "switch_output.partitioning")?),
        };
        let targets = so
            .targets
            .iter()
            .map(|t| self.target(t, &r.pe_addresses, &r.peer_attempts))
            .collect();
        let duplicate = self.admit(r.header.as_ref())?;
        let records = self
            .runtime
            .switch_output(
                &r.app,
                &so.pe,
                r.barrier_id,
                so.stream.clone(),
                part,
                targets,
            )
            .map_err(arm_status)?;
        Ok(Response::new(pb::SwitchOutputResponse {
            duplicate,
            records_before_barrier: records,
        }))
    }

    #[tracing::instrument(skip_all, fields(worker = %self.worker_id))]
    async fn drain(
        &self,
        req: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        from_master(&req)?;
        let r = req.into_inner();
        let pe = r
            .drain
            .as_ref()
            .map(|d| d.pe.clone())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| Status::invalid_argument("drain.pe: required"))?;
        if r.barrier_id == 0 {
            return Err(Status::invalid_argument("barrier_id: must be above 0"));
        }
        let duplicate = self.admit(r.header.as_ref())?;
        let records = self
            .runtime
            .drain(&r.app, &pe, r.barrier_id)
            .map_err(arm_status)?;
        Ok(Response::new(pb::DrainResponse {
            duplicate,
            records_processed: records,
            state_bytes: 0,
        }))
    }

    async fn trigger_checkpoint(
        &self,
        req: Request<pb::TriggerCheckpointRequest>,
    ) -> Result<Response<pb::TriggerCheckpointResponse>, Status> {
        from_master(&req)?;
        let r = req.into_inner();
        if self.admit(r.header.as_ref())? {
            return Ok(Response::new(pb::TriggerCheckpointResponse {
                duplicate: true,
                source_pes: vec![],
            }));
        }
        if r.app.is_empty() {
            return Err(Status::invalid_argument("app: required"));
        }
        if r.checkpoint_id == 0 {
            return Err(Status::invalid_argument("checkpoint_id: must be above 0"));
        }
        let source_pes = self.runtime.trigger(&r.app, r.checkpoint_id);
        tracing::debug!(app = %r.app, checkpoint = r.checkpoint_id, sources = source_pes.len(), "checkpoint triggered");
        Ok(Response::new(pb::TriggerCheckpointResponse {
            duplicate: false,
            source_pes,
        }))
    }

    type FetchStateSnapshotStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::StateChunk, Status>> + Send>>;

    #[tracing::instrument(skip_all, fields(worker = %self.worker_id))]
    async fn fetch_state_snapshot(
        &self,
        req: Request<pb::FetchStateSnapshotRequest>,
    ) -> Result<Response<Self::FetchStateSnapshotStream>, Status> {
        Caller::of(&req)?.require(&[Role::Master, Role::Worker], "fetch_state_snapshot")?;
        serve::fetch_state_snapshot(self.store.clone(), req.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(worker = %self.worker_id))]
    async fn store_snapshot(
        &self,
        req: Request<tonic::Streaming<pb::StateChunk>>,
    ) -> Result<Response<pb::StoreSnapshotResponse>, Status> {
        Caller::of(&req)?.require(&[Role::Worker], "store_snapshot")?;
        serve::store_snapshot(self.store.clone(), req.into_inner())
            .await
            .map(Response::new)
    }

    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::WorkerReport>, Status> {
        from_master(&req)?;
        let r = req.into_inner();
        if r.header.is_some() {
            self.admit(r.header.as_ref())?;
        }
        Ok(Response::new(pb::WorkerReport {
            worker_id: self.worker_id.clone(),
            incarnation: self.incarnation.load(Ordering::Relaxed),
            term: self.term.load(Ordering::Relaxed),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            resources: None,
            pes: self.runtime.report(),
            channels: self.runtime.channels(),
        }))
    }
}
