//! `weir.v1.MasterWorkers`: registration (through Raft) and heartbeats (leader memory),
//! and the liveness monitor that marks silent workers lost.
//!
//! Heartbeats are soft state: writing every heartbeat of every worker through Raft
//! would fill the log with nothing. Only transitions are replicated: registration,
//! alive -> lost, lost -> alive. A new leader gives every worker a full timeout of
//! grace before judging it.

use super::*;
use crate::state::{GpuRecord, WorkerRecord, WorkerState};
use std::collections::BTreeMap;
use tonic::Response as Reply;
use weir_common::image::{bound, check_registries, ImageInfo};
use weir_proto::v1 as pb;
use weir_proto::v1::master_workers_client::MasterWorkersClient;
use weir_proto::v1::master_workers_server::MasterWorkers;

/// A heartbeat that waited at least this long to read the state is logged.
const SLOW_READ: std::time::Duration = std::time::Duration::from_millis(250);

/// A heartbeat heard after at least this long without one from its worker (or five
/// heartbeat intervals, if longer) is logged; the worker is lost after
/// `--worker-timeout-ms`.
const SLOW_GAP: std::time::Duration = std::time::Duration::from_millis(750);

/// The worker-facing service.
pub struct WorkersService {
    shared: Shared,
    liveness: Liveness,
    heartbeat_interval: Duration,
    checkpoint_replicas: u32,
}

impl WorkersService {
    /// The service; workers are told to heartbeat every `heartbeat_interval`.
    pub fn new(
        shared: Shared,
        liveness: Liveness,
        heartbeat_interval: Duration,
        checkpoint_replicas: u32,
    ) -> Self {
        Self {
            shared,
            liveness,
            heartbeat_interval,
            checkpoint_replicas,
        }
    }
}

/// The images a worker reports in `r`, bounded as they will be stored; `None` when
/// `r` says they are unchanged (or is absent).
fn images(worker: &str, r: Option<&pb::WorkerResources>) -> Option<Vec<ImageInfo>> {
    let r = r.filter(|r| !r.images_unchanged)?;
    let b = bound(r.images.iter().map(ImageInfo::from).collect());
    if b.images_dropped + b.refs_dropped > 0 {
        tracing::warn!(
            worker,
            images_dropped = b.images_dropped,
            refs_dropped = b.refs_dropped,
            "worker reported more images than the master keeps"
        );
    }
    Some(b.images)
}

fn gpus(r: Option<&pb::WorkerResources>) -> Vec<GpuRecord> {
    r.map(|r| {
        r.gpus
            .iter()
            .map(|g| GpuRecord {
                uuid: g.uuid.clone(),
                vendor: g.vendor.clone(),
                model: g.model.clone(),
                memory_total_mb: g.memory_total_mb,
                declared: g.declared,
            })
            .collect()
    })
    .unwrap_or_default()
}

/// With security on, a worker registers and heartbeats only under the id its
/// certificate names: a certificate for one worker cannot take over another's id (and
/// the PEs and checkpoint replicas that come with it).
fn check_worker_identity<T>(req: &Request<T>, worker_id: &str) -> Result<(), Status> {
    match weir_security::Caller::of(req)? {
        weir_security::Caller::Anyone => Ok(()),
        weir_security::Caller::Principal(weir_security::Principal::Worker(w)) if w == worker_id => {
            Ok(())
        }
        weir_security::Caller::Principal(p) => Err(Status::permission_denied(format!(
            "worker_id: the caller is {p}; it may not act as worker {worker_id:?}"
        ))),
    }
}

#[tonic::async_trait]
impl MasterWorkers for WorkersService {
    async fn register_worker(
        &self,
        req: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Reply<pb::RegisterWorkerResponse>, Status> {
        if let Route::Remote(addr) = self.shared.route(&req)? {
            return MasterWorkersClient::new(self.shared.channel(&addr)?)
                .register_worker(forwarded(req))
                .await;
        }
        check_worker_identity(&req, &req.get_ref().worker_id)?;
        let r = req.into_inner();
        if r.worker_id.is_empty() {
            return Err(Status::invalid_argument("worker_id: required"));
        }
        if !r.cluster_id.is_empty() && r.cluster_id != self.shared.node.cluster_id {
            return Err(Status::failed_precondition(format!(
                "cluster_id: these masters form cluster {:?}, not {:?}",
                self.shared.node.cluster_id, r.cluster_id
            )));
        }
        let res = r.resources.as_ref();
        let registries: Vec<String> = res
            .map(|r| {
                r.pull_registries
                    .iter()
                    .map(|x| x.to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        check_registries(&registries)
            .map_err(|e| Status::invalid_argument(format!("resources.pull_registries: {e}")))?;
        let mut labels: BTreeMap<String, String> = r.labels.into_iter().collect();
        if let Some(pool) = r.pools.first() {
            labels.entry("pool".into()).or_insert_with(|| pool.clone());
        }
        let worker = WorkerRecord {
            id: r.worker_id.clone(),
            control_address: r.control_address,
            data_address: r.data_address,
            cpu_cores: res.map_or(0.0, |r| r.cpu_cores),
            memory_mb: res.map_or(0, |r| r.memory_mb),
            gpus: gpus(res),
            labels,
            state: WorkerState::Alive,
            incarnation: 0,
            registered_at_ms: now_ms(),
            state_since_ms: 0,
            images: Arc::new(images(&r.worker_id, res).unwrap_or_default()),
            registries,
        };
        self.shared
            .write(Command::RegisterWorker { worker })
            .await?;
        self.liveness.touch(&r.worker_id);
        let pes = r.pes;
        let incarnation = self
            .shared
            .node
            .state
            .read(|d| {
                d.state
                    .workers
                    .get(&r.worker_id)
                    .map_or(0, |w| w.incarnation)
            })
            .await;
        self.liveness.record_reports(&r.worker_id, incarnation, pes);
        let status = cluster_status_brief(&self.shared);
        tracing::info!(worker = %r.worker_id, incarnation, "worker registered");
        Ok(Reply::new(pb::RegisterWorkerResponse {
            accepted: true,
            reason: String::new(),
            leader_id: Some(self.shared.id()),
            leader_address: status.1,
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
            incarnation,
            cluster_id: self.shared.node.cluster_id.clone(),
            term: status.0,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Reply<pb::HeartbeatResponse>, Status> {
        if let Route::Remote(addr) = self.shared.route(&req)? {
            return MasterWorkersClient::new(self.shared.channel(&addr)?)
                .heartbeat(forwarded(req))
                .await;
        }
        check_worker_identity(&req, &req.get_ref().worker_id)?;
        let r = req.into_inner();
        let me = r.worker_id.clone();
        let slow_gap = SLOW_GAP.max(self.heartbeat_interval * 5);
        if let Some(silent) = self.liveness.silent_for(&me).filter(|s| *s >= slow_gap) {
            // Against the worker's own "answered slowly": whether its heartbeats reached
            // this handler late, or their answers went back late.
            tracing::warn!(worker = %me, silent_ms = silent.as_millis() as u64, "heartbeat heard after a silence");
        }
        let reading = std::time::Instant::now();
        let (known, peers, (completed_checkpoints, keep_snapshots_from, kept_checkpoints)) = self
            .shared
            .node
            .state
            .read(move |d| {
                let s = &d.state;
                let peers = s
                    .workers
                    .values()
                    .filter(|w| w.state == WorkerState::Alive && w.id != me)
                    .map(|w| pb::PeerWorker {
                        worker_id: w.id.clone(),
                        control_address: w.control_address.clone(),
                    })
                    .collect::<Vec<_>>();
                let live = || s.apps.values().filter(|a| a.state().is_live());
                let completed = live()
                    .filter_map(|a| Some((a.name.clone(), a.checkpoints.latest()?.id)))
                    .collect::<std::collections::HashMap<_, _>>();
                let keep = live()
                    .filter_map(|a| Some((a.name.clone(), a.checkpoints.keep_snapshots_from()?)))
                    .collect::<std::collections::HashMap<_, _>>();
                let kept = live()
                    .filter(|a| !a.checkpoints.complete.is_empty())
                    .map(|a| {
                        let ids = a.checkpoints.complete.iter().map(|c| c.id).collect();
                        (a.name.clone(), pb::CheckpointIds { ids })
                    })
                    .collect::<std::collections::HashMap<_, _>>();
                (s.workers.get(&me).cloned(), peers, (completed, keep, kept))
            })
            .await;
        if reading.elapsed() >= SLOW_READ {
            // A worker is marked lost by the time since it was last heard: reading the
            // state must not be what holds its heartbeat up.
            tracing::warn!(worker = %r.worker_id, took_ms = reading.elapsed().as_millis() as u64, "heartbeat waited for the state");
        }
        let (term, addr) = cluster_status_brief(&self.shared);
        let reply = |reregister| pb::HeartbeatResponse {
            leader_id: Some(self.shared.id()),
            leader_address: addr.clone(),
            term,
            reregister,
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
            peers: peers.clone(),
            completed_checkpoints: completed_checkpoints.clone(),
            checkpoint_replicas: self.checkpoint_replicas,
            keep_snapshots_from: keep_snapshots_from.clone(),
            kept_checkpoints: kept_checkpoints.clone(),
        };
        // An unknown worker, or an old incarnation of a restarted one, must register.
        let Some(w) = known.filter(|w| w.incarnation == r.incarnation) else {
            return Ok(Reply::new(reply(true)));
        };
        self.liveness.touch(&w.id);
        self.liveness.record_reports(&w.id, w.incarnation, r.pes);
        // Images are replicated only when they change: most heartbeats say "unchanged".
        if let Some(images) = images(&w.id, r.resources.as_ref()) {
            if *w.images != images {
                tracing::info!(worker = %w.id, images = images.len(), "worker's images changed");
                self.shared
                    .write(Command::SetWorkerImages {
                        id: w.id.clone(),
                        images,
                    })
                    .await?;
            }
        }
        if w.state == WorkerState::Lost {
            tracing::info!(worker = %w.id, "lost worker heartbeats again");
            self.shared
                .write(Command::SetWorkerState {
                    id: w.id,
                    state: WorkerState::Alive,
                    at_ms: now_ms(),
                })
                .await?;
        }
        Ok(Reply::new(reply(false)))
    }
}

fn cluster_status_brief(shared: &Shared) -> (u64, String) {
    let m = shared.node.raft.metrics().borrow().clone();
    let addr = shared.leader().map(|(_, a)| a).unwrap_or_default();
    (m.current_term, addr)
}

/// Whether a worker silent for `silent` (`None`: never heard by this leader) is lost,
/// judged by a check that itself ran `own_delay` late (its timer, its read of the
/// state). A leader whose own tasks were held (a busy machine, a long poll on its
/// async threads) did not hear its workers' heartbeats meanwhile either: that much of
/// the silence may be its own, and counting it marked live workers lost (the 1 GB
/// upgrade bench, where master and workers share two cores: BENCHMARKS.md, issue 22).
/// A dead worker's silence keeps growing, so it is still marked lost, a little later.
fn silent_too_long(silent: Option<Duration>, timeout: Duration, own_delay: Duration) -> bool {
    silent.is_none_or(|d| d > timeout + own_delay)
}

/// Marks workers lost when the leader has not heard from them within `timeout`.
/// Runs on every master; acts only while this master leads.
pub async fn monitor_liveness(
    shared: Shared,
    liveness: Liveness,
    timeout: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut led = false;
    let tick = (timeout / 4).max(Duration::from_millis(50));
    loop {
        if *stop.borrow() {
            return;
        }
        let slept = std::time::Instant::now();
        tokio::time::sleep(tick).await;
        let late = slept.elapsed().saturating_sub(tick);
        if late >= SLOW_READ {
            tracing::warn!(
                late_ms = late.as_millis() as u64,
                "liveness check woke late"
            );
        }
        let leading = shared.leader().is_some_and(|(id, _)| id == shared.id());
        if leading && !led {
            // New leadership: every known worker gets a full timeout from now.
            let ids = shared
                .node
                .state
                .read(|d| d.state.workers.keys().cloned().collect::<Vec<_>>())
                .await;
            for id in ids {
                liveness.touch(&id);
            }
        }
        led = leading;
        if !leading {
            continue;
        }
        let reading = std::time::Instant::now();
        let alive: Vec<String> = shared
            .node
            .state
            .read(|d| {
                d.state
                    .workers
                    .values()
                    .filter(|w| w.state == WorkerState::Alive)
                    .map(|w| w.id.clone())
                    .collect()
            })
            .await;
        let read = reading.elapsed();
        if read >= SLOW_READ {
            tracing::warn!(
                took_ms = read.as_millis() as u64,
                "liveness check waited for the state"
            );
        }
        for id in alive {
            if silent_too_long(liveness.silent_for(&id), timeout, late + read) {
                tracing::warn!(worker = %id, timeout_ms = timeout.as_millis() as u64, "worker missed heartbeats; marking it lost");
                let _ = shared
                    .write(Command::SetWorkerState {
                        id,
                        state: WorkerState::Lost,
                        at_ms: now_ms(),
                    })
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::silent_too_long;
    use std::time::Duration;

    #[test]
    fn a_leader_held_up_itself_does_not_count_its_own_delay_as_a_workers_silence() {
        let ms = Duration::from_millis;
        let timeout = ms(1_500);
        // On time: silent past the timeout is lost, at it is not.
        assert!(silent_too_long(Some(ms(1_501)), timeout, ms(0)));
        assert!(!silent_too_long(Some(ms(1_500)), timeout, ms(0)));
        // The check woke 2.3 s late: a 2.4 s silence may be mostly its own.
        assert!(!silent_too_long(Some(ms(2_400)), timeout, ms(2_300)));
        // A dead worker's silence outgrows any delay.
        assert!(silent_too_long(Some(ms(3_900)), timeout, ms(2_300)));
        // Never heard by this leader: lost.
        assert!(silent_too_long(None, timeout, ms(5_000)));
    }
}
