//! `weir.v1.Weir`: the client API.

use super::authz::{authorize, list_scope, Action};
use super::*;
use crate::convert::*;
use crate::executor::upgrade::{self, admit};
use crate::state::{ClusterState, Response};
use std::collections::BTreeMap;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::Response as Reply;
use weir_common::catalog::{parse_app_with, Catalog, Resolve, Resolved};
use weir_common::physical::PhysicalModel;
use weir_common::plan::{plan, render_text};
use weir_common::spec::SpecFormat;
use weir_proto::status::validation_failure;
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;
use weir_proto::v1::weir_server::Weir;

/// Forwards the call to the leader and returns its answer, unless this master leads.
macro_rules! at_leader {
    ($self:ident, $req:ident, $method:ident) => {
        if let Route::Remote(addr) = $self.shared.route(&$req)? {
            return $self
                .leader_client(&addr)
                .await?
                .$method(forwarded($req))
                .await
                .map_err(|s| forward_failed(&addr, s));
        }
    };
}

/// The status of an upgrade that cannot begin.
fn admit_status(e: &admit::AdmitError) -> Status {
    match e {
        admit::AdmitError::Refused(e) => command_status(e),
        admit::AdmitError::CannotPlace(_) => Status::resource_exhausted(e.to_string()),
        admit::AdmitError::Nothing { .. } => Status::failed_precondition(e.to_string()),
    }
}

/// The client API service.
pub struct WeirService {
    shared: Shared,
    liveness: Liveness,
    limits: weir_common::spec::AppLimits,
    /// This master's scheduling flags (in effect while no policy is replicated).
    flags_policy: crate::scheduler::Policy,
}

impl WeirService {
    /// The service over shared master state.
    pub fn new(shared: Shared, liveness: Liveness) -> Self {
        Self {
            shared,
            liveness,
            limits: Default::default(),
            flags_policy: Default::default(),
        }
    }

    /// The same service reporting `policy` as this master's scheduling flags.
    pub fn with_scheduling_flags(mut self, policy: crate::scheduler::Policy) -> Self {
        self.flags_policy = policy;
        self
    }

    /// The same service refusing apps over `limits` (before anything is proposed).
    pub fn with_limits(mut self, limits: weir_common::spec::AppLimits) -> Self {
        self.limits = limits;
        self
    }

    async fn leader_client(&self, addr: &str) -> Result<WeirClient<Channel>, Status> {
        Ok(
            WeirClient::new(self.shared.channel(addr)?)
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
    }

    async fn read<T>(&self, f: impl FnOnce(&ClusterState) -> T) -> T {
        self.shared.node.state.read(|d| f(&d.state)).await
    }

    /// Proposes `cmd`, refused before proposing when the state would refuse it (a
    /// refused request leaves no log entry), or answered from the state without a
    /// new entry when it repeats a request already applied (same request id).
    /// Answers the command's response, and whether it was such a repeat.
    async fn propose_once(&self, cmd: Command) -> Result<(Response, bool), Status> {
        let first = self
            .read(|s| {
                let first = s.repeated(&cmd)?;
                if first.is_none() {
                    s.check(&cmd)?;
                }
                Ok(first)
            })
            .await
            .map_err(|e| command_status(&e))?;
        match first {
            Some(r) => Ok((r, true)),
            // Applying a repeat answers the first outcome too: a concurrent repeat
            // may be committed between this read and the proposal.
            None => Ok((self.shared.write(cmd).await?, false)),
        }
    }
}

/// Longest request id accepted: a UUID is 36 bytes; the room left is for clients
/// that prefix theirs.
const MAX_REQUEST_ID_BYTES: usize = 128;

fn check_request_id(id: &str) -> Result<(), Status> {
    if id.len() > MAX_REQUEST_ID_BYTES {
        return Err(Status::invalid_argument(format!(
            "request_id: at most {MAX_REQUEST_ID_BYTES} bytes (got {})",
            id.len()
        )));
    }
    Ok(())
}

/// A request's spec format.
fn spec_format(format: i32) -> Result<SpecFormat, Status> {
    match pb::SpecFormat::try_from(format) {
        Ok(pb::SpecFormat::Json) => Ok(SpecFormat::Json),
        Ok(_) => Ok(SpecFormat::Yaml),
        Err(_) => Err(Status::invalid_argument(format!(
            "format: unknown value {format}"
        ))),
    }
}

/// INVALID_ARGUMENT listing every problem (a ValidationFailure detail).
fn problems_status(problems: weir_common::Problems) -> Status {
    validation_failure(
        problems
            .0
            .into_iter()
            .map(|p| pb::Problem {
                path: p.path,
                rule: p.rule,
            })
            .collect(),
    )
}

/// Parses a spec from a request, its `template:` operators generated from `catalog`,
/// or INVALID_ARGUMENT listing every problem.
fn parse_spec(text: &str, format: i32, catalog: &Catalog) -> Result<Resolved, Status> {
    parse_app_with(text, spec_format(format)?, Resolve::Catalog(catalog)).map_err(problems_status)
}

/// The catalog as committed here, shared (no copy), for resolving templates outside
/// the state's lock.
async fn catalog_of(service: &WeirService) -> std::sync::Arc<Catalog> {
    service.read(|s| s.catalog.clone()).await
}

fn app_or_not_found<'a>(
    s: &'a ClusterState,
    name: &str,
) -> Result<&'a crate::state::AppRecord, Status> {
    s.apps
        .get(name)
        .map(|a| &**a)
        .ok_or_else(|| Status::not_found(format!("app {name:?} not found")))
}

/// What the templates of a new version generated, one line per operator, after a
/// plan's text.
fn generated_text(
    spec: &weir_common::spec::AppSpec,
    generated: &weir_common::catalog::Provenances,
) -> String {
    weir_common::catalog::describe(spec, generated)
        .into_iter()
        .map(|l| format!("generated: {l}\n"))
        .collect()
}

mod catalog;
mod scheduling;
mod tenants;
mod watch;

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::AppEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Weir for WeirService {
    async fn submit_app(
        &self,
        req: Request<pb::SubmitAppRequest>,
    ) -> Result<Reply<pb::SubmitAppResponse>, Status> {
        self.shared
            .timed("SubmitApp", async {
                at_leader!(self, req, submit_app);
                let request_id = req.get_ref().request_id.clone();
                check_request_id(&request_id)?;
                let catalog = catalog_of(self).await;
                let Resolved { spec, generated } =
                    parse_spec(&req.get_ref().spec, req.get_ref().format, &catalog)?;
                authorize(&req, Action::WriteApp { tenant: &spec.tenant, app: &spec.name })?;
                super::bounds::check_app(&self.limits, &spec).map_err(problems_status)?;
                let secure = self.shared.node.security.is_on();
                let signature = self
                    .read(|s| {
                        tenants::admit_spec(s, secure, &spec, &req.get_ref().spec, req.get_ref().signature.as_ref())
                    })
                    .await?;
                let templates = generated.len();
                let cmd = Command::SubmitApp {
                    spec: spec.clone(),
                    spec_text: req.get_ref().spec.clone(),
                    at_ms: now_ms(),
                    request_id: request_id.clone(),
                    generated,
                    signature,
                };
                let (answer, repeat) = self.propose_once(cmd).await?;
                let version = match answer {
                    Response::AppVersion { version, .. } => version,
                    Response::Done | Response::UpgradeStarted { .. } | Response::Batch { .. } => 1,
                };
                tracing::info!(app = %spec.name, version, tenant = %spec.tenant, %request_id, repeat, templates, "app submitted");
                self.liveness.wake();
                let pes = PhysicalModel::expand(&spec)
                    .pes
                    .values()
                    .map(|p| pb::PeRef {
                        id: p.id.to_string(),
                        operator: p.operator.to_string(),
                        revision: p.revision.to_string(),
                        index: p.index,
                    })
                    .collect();
                Ok(Reply::new(pb::SubmitAppResponse {
                    app: spec.name,
                    version: u64::from(version),
                    state: pb::AppState::Submitted as i32,
                    pes,
                }))
            })
            .await
    }

    async fn upgrade_app(
        &self,
        req: Request<pb::UpgradeAppRequest>,
    ) -> Result<Reply<pb::UpgradeAppResponse>, Status> {
        self.shared
            .timed("UpgradeApp", async {
                at_leader!(self, req, upgrade_app);
                self.shared.linearizable().await?;
                let r = req.get_ref();
                check_request_id(&r.request_id)?;
                let catalog = catalog_of(self).await;
                let Resolved { spec: new, generated } = parse_spec(&r.spec, r.format, &catalog)?;
                super::bounds::check_app(&self.limits, &new).map_err(problems_status)?;
                let (old, placement, version) = self
                    .read(|s| {
                        let app = crate::state::check_live_for_upgrade(s, &r.app)
                            .map_err(|e| command_status(&e))?;
                        Ok::<_, Status>((
                            app.current().spec.clone(),
                            app.placement.clone(),
                            app.current_version,
                        ))
                    })
                    .await?;
                authorize(&req, Action::WriteApp { tenant: &old.tenant, app: &r.app })?;
                if new.tenant != old.tenant {
                    return Err(Status::invalid_argument(format!(
                        "spec.tenant: an upgrade keeps the app's tenant ({:?}, not {:?})",
                        old.tenant, new.tenant
                    )));
                }
                if new.name != r.app {
                    return Err(Status::invalid_argument(format!(
                        "spec.name: an upgrade keeps the app name ({:?}, not {:?})",
                        r.app, new.name
                    )));
                }
                // A repeat answers the operation its first call started, before the
                // checks below refuse it (the app moved on to that very version).
                if !r.dry_run {
                    if let Some((id, from, to, p)) = self
                        .read(|s| repeated_upgrade(s, &r.app, &r.request_id, &r.spec))
                        .await?
                    {
                        tracing::info!(app = %r.app, upgrade = id, request_id = %r.request_id, "upgrade repeated; answered the first outcome");
                        return Ok(Reply::new(pb::UpgradeAppResponse {
                            operation_id: id.to_string(),
                            dry_run: false,
                            plan: Some(upgrade_plan(&p, from, to)),
                            plan_json: serde_json::to_string(&p)
                                .map_err(|e| Status::internal(e.to_string()))?,
                            plan_text: render_text(&p),
                        }));
                    }
                }
                if r.expected_version != 0 && r.expected_version != u64::from(version) {
                    return Err(Status::failed_precondition(format!(
                        "expected_version: the app is at version {version}, not {}",
                        r.expected_version
                    )));
                }
                let answer = |operation_id: String, p: &weir_common::plan::UpgradePlan, to: u32| {
                    Ok::<_, Status>(pb::UpgradeAppResponse {
                        operation_id,
                        dry_run: r.dry_run,
                        plan: Some(upgrade_plan(p, version, to)),
                        plan_json: serde_json::to_string(p)
                            .map_err(|e| Status::internal(e.to_string()))?,
                        plan_text: render_text(p) + &generated_text(&new, &generated),
                    })
                };
                if r.dry_run {
                    let p = plan(&old, &new, (!placement.is_empty()).then_some(&placement));
                    return Ok(Reply::new(answer(String::new(), &p, version + 1)?));
                }
                // Placed and planned up front: an upgrade that cannot run is refused
                // before anything is stored or started.
                let secure = self.shared.node.security.is_on();
                let (cmd, p) = self
                    .read(|s| {
                        let signature =
                            tenants::admit_spec(s, secure, &new, &r.spec, r.signature.as_ref())?;
                        let submitted = admit::Submitted {
                            spec_text: r.spec.clone(),
                            request_id: r.request_id.clone(),
                            generated: generated.clone(),
                            signature,
                        };
                        admit::begin(s, &r.app, &new, submitted, now_ms()).map_err(|e| admit_status(&e))
                    })
                    .await?;
                let (id, to) = match self.shared.write(cmd).await? {
                    Response::UpgradeStarted { id, version } => (id, version),
                    _ => return Err(Status::internal("the upgrade did not start")),
                };
                tracing::info!(app = %r.app, upgrade = id, from = version, to, "upgrade started");
                self.liveness.wake();
                Ok(Reply::new(answer(id.to_string(), &p, to)?))
            })
            .await
    }

    async fn get_app(
        &self,
        req: Request<pb::GetAppRequest>,
    ) -> Result<Reply<pb::GetAppResponse>, Status> {
        self.shared
            .timed("GetApp", async {
                at_leader!(self, req, get_app);
                self.shared.linearizable().await?;
                let reports = self.liveness.pe_reports(&req.get_ref().app);
                let mut detail = self
                    .read(|s| {
                        app_or_not_found(s, &req.get_ref().app).map(|a| {
                            let mut d = app_detail(a, &reports, &s.upgrades);
                            let up = a.upgrade.and_then(|id| s.upgrades.get(&id));
                            if let (Some(op), Some(u)) = (d.current_upgrade.as_mut(), up) {
                                op.progress = progress_of(a, u, &reports);
                            }
                            d
                        })
                    })
                    .await?;
                detail.unplaced_reason = self
                    .liveness
                    .unplaced(&req.get_ref().app)
                    .unwrap_or_default();
                let tenant = detail
                    .summary
                    .as_ref()
                    .map(|s| s.tenant.clone())
                    .unwrap_or_default();
                authorize(
                    &req,
                    Action::ReadApp {
                        tenant: &tenant,
                        app: &req.get_ref().app,
                    },
                )?;
                Ok(Reply::new(pb::GetAppResponse { app: Some(detail) }))
            })
            .await
    }

    async fn list_apps(
        &self,
        req: Request<pb::ListAppsRequest>,
    ) -> Result<Reply<pb::ListAppsResponse>, Status> {
        self.shared
            .timed("ListApps", async {
                at_leader!(self, req, list_apps);
                self.shared.linearizable().await?;
                let tenant = list_scope(&req, &req.get_ref().tenant)?;
                let apps = self
                    .read(|s| {
                        s.apps
                            .values()
                            .filter(|a| tenant.is_empty() || a.tenant == tenant)
                            .map(|a| app_summary(a))
                            .collect()
                    })
                    .await;
                Ok(Reply::new(pb::ListAppsResponse { apps }))
            })
            .await
    }

    async fn cancel_app(
        &self,
        req: Request<pb::CancelAppRequest>,
    ) -> Result<Reply<pb::CancelAppResponse>, Status> {
        self.shared
            .timed("CancelApp", async {
                at_leader!(self, req, cancel_app);
                let name = req.get_ref().app.clone();
                let tenant = self
                    .read(|s| s.apps.get(&name).map(|a| a.tenant.clone()))
                    .await;
                if let Some(t) = tenant {
                    authorize(
                        &req,
                        Action::WriteApp {
                            tenant: &t,
                            app: &name,
                        },
                    )?;
                }
                let request_id = req.get_ref().request_id.clone();
                check_request_id(&request_id)?;
                let cmd = Command::CancelApp {
                    name,
                    at_ms: now_ms(),
                    request_id: request_id.clone(),
                };
                let (_, repeat) = self.propose_once(cmd).await?;
                tracing::info!(app = %req.get_ref().app, %request_id, repeat, "app cancelled");
                Ok(Reply::new(pb::CancelAppResponse {
                    state: pb::AppState::Cancelled as i32,
                }))
            })
            .await
    }

    type WatchAppStream = WatchStream;

    async fn watch_app(
        &self,
        req: Request<pb::WatchAppRequest>,
    ) -> Result<Reply<Self::WatchAppStream>, Status> {
        // Served by the leader: its applied log has every command, and the workers
        // report PE states to it only. A follower relays the leader's stream; when the
        // leader fails, the relay ends with a status that tells the client to watch
        // again through the next one.
        if let Route::Remote(addr) = self.shared.route(&req)? {
            let stream = self
                .leader_client(&addr)
                .await?
                .watch_app(forwarded(req))
                .await
                .map_err(|s| forward_failed(&addr, s))?
                .into_inner();
            let relay = tokio_stream::StreamExt::map(stream, move |ev| {
                ev.map_err(|s| forward_failed(&addr, s))
            });
            return Ok(Reply::new(Box::pin(relay) as WatchStream));
        }
        let name = req.get_ref().app.clone();
        let mut events = self.shared.node.state.subscribe();
        let mut changes = self.liveness.pe_changes();
        let shared = self.shared.clone();
        let (mut watch, opening) = self
            .read(|s| {
                let a = app_or_not_found(s, &name)?;
                authorize(
                    &req,
                    Action::ReadApp {
                        tenant: &a.tenant,
                        app: &name,
                    },
                )?;
                Ok::<_, Status>(watch::AppWatch::open(s, a))
            })
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut seq = 0u64;
            // A full or closed channel ends the stream: the client is gone or cannot
            // keep up.
            let mut send = |note: watch::Note| {
                seq += 1;
                tx.try_send(Ok(pb::AppEvent {
                    app: name.clone(),
                    seq,
                    at_ms: now_ms(),
                    version: u64::from(note.version),
                    event: Some(note.event),
                }))
                .is_ok()
            };
            for note in opening {
                if !send(note) {
                    return;
                }
            }
            use tokio::sync::broadcast::error::RecvError;
            // Events missed would leave the watcher wrong without knowing it: a watch
            // that fell behind ends, and the client watches again from the app's
            // current state.
            let behind = || {
                Status::unavailable(
                    "the watch fell behind the master's events; watch again for the app's current state",
                )
            };
            // PE states are the leader's to hear: a master that stops leading ends
            // the stream, and the client watches again through the new leader.
            let mut leading = tokio::time::interval(std::time::Duration::from_millis(500));
            while !watch.ended() {
                let notes = tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(ev) => watch.on(&ev.command, &ev.response),
                        Err(RecvError::Lagged(_)) => {
                            let _ = tx.try_send(Err(behind()));
                            return;
                        }
                        Err(RecvError::Closed) => return,
                    },
                    c = changes.recv() => match c {
                        Ok(c) => watch.on_pe(&c).into_iter().collect(),
                        Err(RecvError::Lagged(_)) => {
                            let _ = tx.try_send(Err(behind()));
                            return;
                        }
                        Err(RecvError::Closed) => return,
                    },
                    _ = leading.tick() => {
                        if shared.leads() {
                            continue;
                        }
                        let leader = shared.leader().filter(|(id, _)| *id != shared.id());
                        let _ = tx.try_send(Err(weir_proto::status::not_leader(
                            leader.as_ref().map(|(_, a)| a.as_str()),
                        )));
                        return;
                    }
                };
                for note in notes {
                    if !send(note) {
                        return;
                    }
                }
            }
        });
        Ok(Reply::new(
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as WatchStream,
        ))
    }

    async fn list_workers(
        &self,
        req: Request<pb::ListWorkersRequest>,
    ) -> Result<Reply<pb::ListWorkersResponse>, Status> {
        self.shared
            .timed("ListWorkers", async {
                at_leader!(self, req, list_workers);
                authorize(&req, Action::Admin("ListWorkers"))?;
                self.shared.linearizable().await?;
                let seen = self.liveness.last_seen_ms();
                let workers = self
                    .read(|s| {
                        let mut pes: BTreeMap<&str, u32> = BTreeMap::new();
                        for a in s.apps.values() {
                            for w in a.placement.values() {
                                *pes.entry(w.as_str()).or_default() += 1;
                            }
                        }
                        s.workers
                            .values()
                            .map(|w| {
                                let last = seen.get(&w.id).copied().unwrap_or(w.state_since_ms);
                                worker_view(w, last, pes.get(w.id.as_str()).copied().unwrap_or(0))
                            })
                            .collect()
                    })
                    .await;
                Ok(Reply::new(pb::ListWorkersResponse { workers }))
            })
            .await
    }

    async fn list_pools(
        &self,
        req: Request<pb::ListPoolsRequest>,
    ) -> Result<Reply<pb::ListPoolsResponse>, Status> {
        self.shared
            .timed("ListPools", async {
                at_leader!(self, req, list_pools);
                authorize(&req, Action::ReadCluster)?;
                self.shared.linearizable().await?;
                let now = crate::shared::now_ms();
                let pools = self.read(|s| pools(s, now)).await;
                Ok(Reply::new(pb::ListPoolsResponse { pools }))
            })
            .await
    }

    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Reply<pb::ClusterStatusResponse>, Status> {
        self.shared
            .timed("ClusterStatus", async {
                // Only the leader knows how far behind each member is: ask it when
                // there is one, and answer from here when it cannot be reached (a
                // status call must work while the cluster is unwell).
                if let Ok(Route::Remote(addr)) = self.shared.route(&req) {
                    if let Ok(mut leader) = self.leader_client(&addr).await {
                        if let Ok(r) = leader.cluster_status(forwarded(req)).await {
                            return Ok(r);
                        }
                    }
                }
                Ok(Reply::new(cluster_status(&self.shared)))
            })
            .await
    }

    async fn list_checkpoints(
        &self,
        req: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Reply<pb::ListCheckpointsResponse>, Status> {
        self.shared
            .timed("ListCheckpoints", async {
                at_leader!(self, req, list_checkpoints);
                self.shared.linearizable().await?;
                let out = self
                    .read(|s| {
                        let a = app_or_not_found(s, &req.get_ref().app)?;
                        authorize(
                            &req,
                            Action::ReadApp {
                                tenant: &a.tenant,
                                app: &a.name,
                            },
                        )?;
                        Ok::<_, Status>(crate::convert::checkpoints(&a.checkpoints))
                    })
                    .await?;
                Ok(Reply::new(out))
            })
            .await
    }

    async fn get_app_history(
        &self,
        req: Request<pb::GetAppHistoryRequest>,
    ) -> Result<Reply<pb::GetAppHistoryResponse>, Status> {
        self.shared
            .timed("GetAppHistory", async {
                at_leader!(self, req, get_app_history);
                self.shared.linearizable().await?;
                let reports = self.liveness.pe_reports(&req.get_ref().app);
                let (detail, operations) = self
                    .read(|s| {
                        let a = app_or_not_found(s, &req.get_ref().app)?;
                        authorize(
                            &req,
                            Action::ReadApp {
                                tenant: &a.tenant,
                                app: &a.name,
                            },
                        )?;
                        Ok::<_, Status>({
                            let ops = s
                                .upgrades
                                .values()
                                .filter(|u| u.app == a.name)
                                .map(|u| pb::UpgradeOperation {
                                    progress: progress_of(a, u, &reports),
                                    ..upgrade_operation(u)
                                })
                                .collect();
                            (app_detail(a, &Default::default(), &s.upgrades), ops)
                        })
                    })
                    .await?;
                Ok(Reply::new(pb::GetAppHistoryResponse {
                    versions: detail.versions,
                    operations,
                }))
            })
            .await
    }

    async fn register_base_image(
        &self,
        req: Request<pb::RegisterBaseImageRequest>,
    ) -> Result<Reply<pb::RegisterBaseImageResponse>, Status> {
        let f = self.catalog_register_base_image(req);
        self.shared.timed("RegisterBaseImage", f).await
    }

    async fn list_base_images(
        &self,
        req: Request<pb::ListBaseImagesRequest>,
    ) -> Result<Reply<pb::ListBaseImagesResponse>, Status> {
        let f = self.catalog_list_base_images(req);
        self.shared.timed("ListBaseImages", f).await
    }

    async fn remove_base_image(
        &self,
        req: Request<pb::RemoveBaseImageRequest>,
    ) -> Result<Reply<pb::RemoveBaseImageResponse>, Status> {
        let f = self.catalog_remove_base_image(req);
        self.shared.timed("RemoveBaseImage", f).await
    }

    async fn add_template(
        &self,
        req: Request<pb::AddTemplateRequest>,
    ) -> Result<Reply<pb::AddTemplateResponse>, Status> {
        let f = self.catalog_add_template(req);
        self.shared.timed("AddTemplate", f).await
    }

    async fn list_templates(
        &self,
        req: Request<pb::ListTemplatesRequest>,
    ) -> Result<Reply<pb::ListTemplatesResponse>, Status> {
        let f = self.catalog_list_templates(req);
        self.shared.timed("ListTemplates", f).await
    }

    async fn get_template(
        &self,
        req: Request<pb::GetTemplateRequest>,
    ) -> Result<Reply<pb::GetTemplateResponse>, Status> {
        let f = self.catalog_get_template(req);
        self.shared.timed("GetTemplate", f).await
    }

    async fn remove_template(
        &self,
        req: Request<pb::RemoveTemplateRequest>,
    ) -> Result<Reply<pb::RemoveTemplateResponse>, Status> {
        let f = self.catalog_remove_template(req);
        self.shared.timed("RemoveTemplate", f).await
    }

    async fn put_tenant(
        &self,
        req: Request<pb::PutTenantRequest>,
    ) -> Result<Reply<pb::PutTenantResponse>, Status> {
        let f = self.tenants_put(req);
        self.shared.timed("PutTenant", f).await
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> Result<Reply<pb::ListTenantsResponse>, Status> {
        let f = self.tenants_list(req);
        self.shared.timed("ListTenants", f).await
    }

    async fn set_tenant_quota(
        &self,
        req: Request<pb::SetTenantQuotaRequest>,
    ) -> Result<Reply<pb::SetTenantQuotaResponse>, Status> {
        let f = self.tenants_set_quota(req);
        self.shared.timed("SetTenantQuota", f).await
    }

    async fn list_queue(
        &self,
        req: Request<pb::ListQueueRequest>,
    ) -> Result<Reply<pb::ListQueueResponse>, Status> {
        let f = self.queue_list(req);
        self.shared.timed("ListQueue", f).await
    }

    async fn set_scheduling_policy(
        &self,
        req: Request<pb::SetSchedulingPolicyRequest>,
    ) -> Result<Reply<pb::SetSchedulingPolicyResponse>, Status> {
        let f = self.scheduling_set(req);
        self.shared.timed("SetSchedulingPolicy", f).await
    }

    async fn get_scheduling_policy(
        &self,
        req: Request<pb::GetSchedulingPolicyRequest>,
    ) -> Result<Reply<pb::GetSchedulingPolicyResponse>, Status> {
        let f = self.scheduling_get(req);
        self.shared.timed("GetSchedulingPolicy", f).await
    }
}

/// The upgrade that the request `request_id` of `app` started, when it already did:
/// its id, versions and plan (recomputed from the versions stored).
fn repeated_upgrade(
    s: &ClusterState,
    app: &str,
    request_id: &str,
    spec_text: &str,
) -> Result<Option<(u64, u32, u32, weir_common::plan::UpgradePlan)>, Status> {
    let Some(to) = s
        .version_by_request(app, request_id, spec_text)
        .map_err(|e| command_status(&e))?
    else {
        return Ok(None);
    };
    let rec = app_or_not_found(s, app)?;
    let up = s.upgrade_to(app, to).ok_or_else(|| {
        command_status(&crate::state::CommandError::RequestIdReused {
            request_id: request_id.to_string(),
            why: format!("already submitted app {app:?}"),
        })
    })?;
    let spec = |v: u32| &rec.versions[v as usize - 1].spec;
    let p = plan(spec(up.from_version), spec(to), Some(&up.placement));
    Ok(Some((up.id, up.from_version, to, p)))
}

/// Pools as the API shows them (see `scheduler::pools`).
fn pools(s: &ClusterState, now_ms: u64) -> Vec<pb::Pool> {
    let free = crate::executor::reconcile::capacities(s);
    let waiting = crate::scheduler::queue::waiting(s);
    let queued: Vec<(&weir_common::spec::AppSpec, u64)> = waiting
        .iter()
        .map(|a| (&a.current().spec, now_ms.saturating_sub(a.queued_at())))
        .collect();
    crate::scheduler::pools::pools(s, &free, &queued)
        .into_iter()
        .map(|p| pb::Pool {
            gpus_total: p.devices.len() as u32,
            gpus_free: (p.devices.len() as u32).saturating_sub(p.gpus_used()),
            gpus_used: p.gpus_used(),
            gpu_memory_total_mb: p.gpu_memory_total_mb(),
            gpu_memory_used_mb: p.gpu_memory_used_mb(),
            gpu_memory_free_mb: p
                .gpu_memory_total_mb()
                .saturating_sub(p.gpu_memory_used_mb()),
            cpu_total: p.cpu_total,
            cpu_used: p.cpu_used,
            cpu_free: (p.cpu_total - p.cpu_used).max(0.0),
            memory_total_mb: p.memory_total_mb,
            memory_used_mb: p.memory_used_mb,
            memory_free_mb: p.memory_total_mb.saturating_sub(p.memory_used_mb),
            pes_placed: p.pes_placed,
            pes_pending: p.pes_pending,
            longest_wait_ms: p.longest_wait_ms,
            devices: p
                .devices
                .into_iter()
                .map(|d| pb::PoolDevice {
                    uuid: d.uuid,
                    worker: d.worker,
                    model: d.model,
                    memory_total_mb: d.memory_total_mb,
                    memory_used_mb: d.memory_used_mb,
                    slices: d.slices,
                })
                .collect(),
            name: p.name,
            scenario: p.scenario,
            vendor: p.vendor,
            workers: p.workers,
        })
        .collect()
}

/// Members, leader, term and indexes as this master sees them.
pub(crate) fn cluster_status(shared: &Shared) -> pb::ClusterStatusResponse {
    let m = shared.node.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let role = if Some(*id) == m.current_leader {
                pb::MemberRole::Leader
            } else if !voters.contains(id) {
                pb::MemberRole::Learner
            } else if *id == m.id && m.state == openraft::ServerState::Candidate {
                pb::MemberRole::Candidate
            } else {
                pb::MemberRole::Follower
            };
            let (matched_index, lag_entries, lag_bytes) = match &m.replication {
                Some(repl) if m.current_leader == Some(m.id) => {
                    let last = m.last_log_index.unwrap_or(0);
                    let matched = if *id == m.id {
                        last
                    } else {
                        repl.get(id).copied().flatten().map_or(0, |l| l.index)
                    };
                    let behind = last.saturating_sub(matched);
                    let bytes = shared.node.log_sizes.bytes_between(matched, last);
                    (Some(matched), behind, bytes)
                }
                _ => (None, 0, 0),
            };
            pb::Member {
                id: *id,
                address: node.addr.clone(),
                role: role as i32,
                voter: voters.contains(id),
                matched_index,
                lag_entries,
                lag_bytes,
            }
        })
        .collect();
    let applied = m.last_applied.map_or(0, |l| l.index);
    // The leader knows what a majority has: the median of the voters' matched indexes.
    let commit = match (&m.replication, m.current_leader == Some(m.id)) {
        (Some(repl), true) => {
            let mut matched: Vec<u64> = voters
                .iter()
                .map(|v| {
                    if *v == m.id {
                        m.last_log_index.unwrap_or(0)
                    } else {
                        repl.get(v).copied().flatten().map_or(0, |l| l.index)
                    }
                })
                .collect();
            matched.sort_unstable_by(|a, b| b.cmp(a));
            matched
                .get(voters.len() / 2)
                .copied()
                .unwrap_or(applied)
                .max(applied)
        }
        _ => applied,
    };
    pb::ClusterStatusResponse {
        cluster_id: shared.node.cluster_id.clone(),
        members,
        leader_id: m.current_leader,
        term: m.current_term,
        commit_index: commit,
        applied_index: applied,
        last_log_index: m.last_log_index.unwrap_or(0),
        answered_by: m.id,
    }
}

/// How far `u`'s successors are, from the leader's reports, while it runs
/// ([`upgrade::progress`]); `None` once it ended.
fn progress_of(
    a: &crate::state::AppRecord,
    u: &crate::state::UpgradeRecord,
    reports: &crate::shared::PeReports,
) -> Option<pb::UpgradeProgress> {
    matches!(u.stage, crate::state::UpgradeStage::Running { .. })
        .then(|| upgrade::progress(a, u, reports))
}
