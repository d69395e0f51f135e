//! The local Docker Engine, through bollard: starting a container PE's instances with
//! their stdio attached, stopping and removing them, the tenant networks, and the
//! clean-up of what a crashed worker left behind.
//!
//! A container's life, as the worker drives it:
//! 1. create it (limits, lockdown and identity from [`container_config`]; a leftover
//!    of the same name, from a previous run of the same PE attempt, is removed first);
//! 2. attach to its stdin, stdout and stderr *before* starting it, so no byte it
//!    writes is missed;
//! 3. start it; [`ExecPe`](crate::exec::ExecPe) then sends the start-up handshake;
//! 4. stop: close its stdin (a well-behaved program exits at end of input), wait for
//!    it to exit for the grace period, then remove it by force. The exit status is
//!    read before removal (so containers are not created with auto-remove).
//!
//! Before the first container of a PE, an image the engine does not hold is pulled
//! from one of the worker's registries (`--pull-from`) with its progress shown as the
//! PE's message ([`ContainerEngine::ensure_image`]).
//!
//! Anything dropped without a stop (the PE's task aborted) removes its container in
//! the background; a worker killed outright leaves containers labelled with its id,
//! removed by [`ContainerEngine::remove_orphans`] when it starts again.

use super::attach::demux;
use super::config::container_config;
use super::devices::{AcceleratorNodes, AllocatedGpu};
use super::identity::{orphan_list_options, PeIdentity};
use super::network::{tenant_network, tenant_network_name};
use super::pull::{pull_request, PullProgress};
use super::Progress;
use crate::exec::{BoxFuture, ExecError, Instance, Launch, Started};
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, CreateImageOptions, InspectNetworkOptions,
    RemoveContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::StreamExt;
use weir_common::image::pullable;
use weir_common::spec::{ContainerNetwork, ContainerParams, PeProtocol, Resources};

/// Longest wait for one engine call that should be quick (create, start, remove).
const ENGINE_CALL: Duration = Duration::from_secs(60);

/// Longest a pull may take: GPU images run to gigabytes, and the PE shows its
/// progress meanwhile.
const PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The local Docker Engine as this worker uses it.
#[derive(Clone, Debug)]
pub struct ContainerEngine {
    docker: Docker,
    cluster: String,
    worker: String,
    nodes: Arc<AcceleratorNodes>,
    /// The vendor of each of this worker's devices, by UUID.
    vendors: Arc<BTreeMap<String, String>>,
    /// Registries it pulls absent images from (lower case).
    registries: Arc<Vec<String>>,
}

/// Why the engine could not do what the worker asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No engine could be reached (no socket, no permission).
    #[error("no Docker Engine: {0}")]
    Connect(String),
    /// The engine refused or failed a call.
    #[error("Docker {call}: {reason}")]
    Call {
        /// Which call.
        call: &'static str,
        /// What the engine said.
        reason: String,
    },
}

fn call_error(call: &'static str) -> impl Fn(DockerError) -> EngineError {
    move |e| EngineError::Call {
        call,
        reason: engine_message(&e),
    }
}

/// The engine's own message where it sent one (`No such image: x`), else bollard's.
fn engine_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

impl ContainerEngine {
    /// The engine named by `DOCKER_HOST`, else the local socket, for worker `worker`
    /// of cluster `cluster`. `vendors` gives the vendor of each of the worker's GPUs
    /// by UUID; `nodes` the device nodes of declared accelerators. Connecting is
    /// lazy: use [`ping`](Self::ping) to know whether an engine answers.
    pub fn connect(
        cluster: &str,
        worker: &str,
        vendors: BTreeMap<String, String>,
        nodes: AcceleratorNodes,
    ) -> Result<Self, EngineError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| EngineError::Connect(e.to_string()))?;
        Ok(Self {
            docker,
            cluster: cluster.to_string(),
            worker: worker.to_string(),
            nodes: Arc::new(nodes),
            vendors: Arc::new(vendors),
            registries: Arc::default(),
        })
    }

    /// The same engine, pulling absent images from `registries` (`host[:port]`).
    pub fn with_registries(mut self, registries: Vec<String>) -> Self {
        self.registries = Arc::new(registries);
        self
    }

    /// Makes sure the engine holds `image`: pulls it when it is absent and on one of
    /// this worker's registries, showing the progress through `progress` and clearing
    /// it when done. An image on no such registry is left to the create call, which
    /// names it when it is absent.
    pub async fn ensure_image(
        &self,
        image: &str,
        progress: Option<&Progress>,
    ) -> Result<(), String> {
        if !pullable(&self.registries, image) {
            return Ok(());
        }
        match tokio::time::timeout(ENGINE_CALL, self.docker.inspect_image(image)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if status_of(&e) == Some(404) => {}
            Ok(Err(e)) => return Err(format!("image {image}: {}", engine_message(&e))),
            Err(_) => return Err(format!("image {image}: the engine did not answer")),
        }
        let (from, tag) = pull_request(image)
            .ok_or_else(|| format!("image {image}: not a pullable reference"))?;
        let mut shown = PullProgress::new(image);
        let show = |text: &str| {
            if let Some(p) = progress {
                p.show(text);
            }
        };
        show(shown.message());
        let started = std::time::Instant::now();
        let options = CreateImageOptions {
            from_image: Some(from),
            tag: Some(tag),
            ..Default::default()
        };
        let pull = async {
            let mut stream = self.docker.create_image(Some(options), None, None);
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| engine_message(&e))?;
                if let Some(err) = info.error_detail.as_ref().and_then(|d| d.message.clone()) {
                    return Err(err);
                }
                if let Some(text) = shown.update(&info) {
                    show(text);
                }
            }
            Ok(())
        };
        let result = match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(r) => r.map_err(|e| format!("pull {image}: {e}")),
            Err(_) => Err(format!(
                "pull {image}: not done within {} s ({})",
                PULL_TIMEOUT.as_secs(),
                shown.message()
            )),
        };
        show("");
        if result.is_ok() {
            tracing::info!(worker = %self.worker, %image, ms = started.elapsed().as_millis() as u64, "image pulled");
        }
        result
    }

    /// Whether an engine answers, and its version.
    pub async fn ping(&self) -> Result<String, EngineError> {
        let v = tokio::time::timeout(Duration::from_secs(5), self.docker.version())
            .await
            .map_err(|_| EngineError::Connect("no answer within 5 s".into()))?
            .map_err(|e| EngineError::Connect(engine_message(&e)))?;
        Ok(v.version.unwrap_or_default())
    }

    /// Removes every container this worker of this cluster started and no longer
    /// runs (all of them, at start-up: a worker starts with no PEs). Returns how
    /// many were removed.
    pub async fn remove_orphans(&self) -> Result<usize, EngineError> {
        let list = self
            .docker
            .list_containers(Some(orphan_list_options(&self.cluster, &self.worker)))
            .await
            .map_err(call_error("list containers"))?;
        let mut removed = 0;
        for c in list {
            let Some(id) = c.id else { continue };
            match remove(&self.docker, &id).await {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(worker = %self.worker, container = %id, names = ?c.names, "orphan container removed");
                }
                Err(e) => {
                    tracing::warn!(worker = %self.worker, container = %id, error = %e, "orphan container not removed")
                }
            }
        }
        Ok(removed)
    }

    /// What starts the containers of one PE: `params` from its spec, limited to
    /// `resources`, given the GPUs `gpus` (UUIDs, one per slice).
    #[allow(clippy::too_many_arguments)]
    pub fn launcher(
        &self,
        tenant: &str,
        app: &str,
        pe: &str,
        attempt: u64,
        params: &ContainerParams,
        resources: &Resources,
        gpus: &[String],
    ) -> ContainerLaunch {
        ContainerLaunch {
            engine: self.clone(),
            identity: PeIdentity {
                cluster: self.cluster.clone(),
                worker: self.worker.clone(),
                tenant: tenant.to_string(),
                app: app.to_string(),
                pe: pe.to_string(),
                attempt,
            },
            params: params.clone(),
            resources: resources.clone(),
            gpus: gpus.to_vec(),
            progress: None,
        }
    }

    /// Creates the tenant's network unless it exists.
    async fn ensure_network(&self, pe: &str, tenant: &str) -> Result<(), String> {
        let name = tenant_network_name(pe, tenant).map_err(|e| e.to_string())?;
        match self
            .docker
            .inspect_network(&name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(format!("network {name}: {}", engine_message(&e))),
        }
        let request = tenant_network(&self.cluster, pe, tenant).map_err(|e| e.to_string())?;
        match self.docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(%pe, %tenant, network = %name, "tenant network created");
                Ok(())
            }
            // Another PE of the tenant created it meanwhile.
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(format!("network {name}: {}", engine_message(&e))),
        }
    }
}

/// Removes container `id` by force (running or not); one already gone is fine.
async fn remove(docker: &Docker, id: &str) -> Result<(), EngineError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match tokio::time::timeout(ENGINE_CALL, docker.remove_container(id, Some(options))).await {
        Ok(Ok(())) => Ok(()),
        // 404: already gone; 409: a removal is already in progress.
        Ok(Err(e)) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
        Ok(Err(e)) => Err(call_error("remove container")(e)),
        Err(_) => Err(EngineError::Call {
            call: "remove container",
            reason: format!("no answer within {} s", ENGINE_CALL.as_secs()),
        }),
    }
}

/// Starts the containers of one PE (a [`Launch`] for [`ExecPe`](crate::exec::ExecPe)).
#[derive(Clone, Debug)]
pub struct ContainerLaunch {
    engine: ContainerEngine,
    identity: PeIdentity,
    params: ContainerParams,
    resources: Resources,
    gpus: Vec<String>,
    progress: Option<Progress>,
}

impl ContainerLaunch {
    /// The same launch, showing what its start waits for (an image pull) through
    /// `progress`.
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    async fn start(&self, pe_id: &str, start: u64) -> Result<Started, String> {
        self.engine
            .ensure_image(&self.params.image, self.progress.as_ref())
            .await?;
        let gpus = self
            .gpus
            .iter()
            .map(|uuid| match self.engine.vendors.get(uuid) {
                Some(vendor) => Ok(AllocatedGpu {
                    uuid: uuid.clone(),
                    vendor: vendor.clone(),
                }),
                None => Err(format!("GPU {uuid} is not a device of this worker")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = container_config(
            &self.identity,
            &self.params,
            &self.resources,
            &gpus,
            &self.engine.nodes,
        )
        .map_err(|e| e.to_string())?;
        // Each restart of the program is a new container: the old one may still be
        // on its way out.
        if start > 0 {
            config.name = format!("{}-r{start}", config.name);
        }
        if self.params.network == ContainerNetwork::Tenant {
            self.engine
                .ensure_network(pe_id, &self.identity.tenant)
                .await?;
        }
        let docker = &self.engine.docker;
        let name = config.name.clone();
        let create = || {
            docker.create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                config.body.clone(),
            )
        };
        let created = match create().await {
            // A container of this very PE attempt and start, left by an earlier run
            // of this worker (names hash cluster, worker, PE and attempt): ours.
            Err(e) if status_of(&e) == Some(409) => {
                remove(docker, &name).await.map_err(|e| e.to_string())?;
                create().await
            }
            other => other,
        }
        .map_err(|e| engine_message(&e))?;
        let guard = Guard {
            docker: docker.clone(),
            id: created.id.clone(),
            armed: true,
        };
        let attached = docker
            .attach_container(
                &created.id,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    logs: false,
                    detach_keys: None,
                }),
            )
            .await
            .map_err(|e| format!("attach: {}", engine_message(&e)))?;
        docker
            .start_container(&created.id, None)
            .await
            .map_err(|e| format!("start: {}", engine_message(&e)))?;
        let (stdout, stderr, pump) = demux(attached.output);
        tracing::debug!(pe = %pe_id, container = %name, image = %self.params.image, "container PE started");
        Ok(Started {
            stdin: attached.input,
            stdout,
            stderr,
            instance: Box::new(ContainerInstance { guard, name, pump }),
        })
    }
}

impl Launch for ContainerLaunch {
    fn launch(&self, pe_id: &str, start: u64) -> BoxFuture<'_, Result<Started, ExecError>> {
        let pe_id = pe_id.to_string();
        Box::pin(async move {
            self.start(&pe_id, start)
                .await
                .map_err(|reason| ExecError::Launch {
                    pe_id,
                    what: self.describe(),
                    reason,
                })
        })
    }

    fn describe(&self) -> String {
        format!("container {}", self.params.image)
    }

    fn protocol(&self) -> PeProtocol {
        self.params.protocol
    }

    fn handshake(&self) -> bool {
        true
    }
}

/// Removes its container when dropped, unless disarmed (the container was removed
/// already). Dropping happens when a PE's task is aborted mid-batch.
#[derive(Debug)]
struct Guard {
    docker: Docker,
    id: String,
    armed: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (docker, id) = (self.docker.clone(), self.id.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = remove(&docker, &id).await {
                        tracing::warn!(container = %id, error = %e, "container not removed");
                    }
                });
            }
            Err(_) => tracing::warn!(
                container = %self.id,
                "container left behind (no runtime to remove it); removed at the worker's next start"
            ),
        }
    }
}

/// A started container.
#[derive(Debug)]
struct ContainerInstance {
    guard: Guard,
    name: String,
    pump: tokio::task::JoinHandle<()>,
}

impl Instance for ContainerInstance {
    fn stop(self: Box<Self>, grace: Duration) -> BoxFuture<'static, String> {
        let ContainerInstance {
            mut guard,
            name,
            pump,
        } = *self;
        Box::pin(async move {
            let exited = if grace.is_zero() {
                None
            } else {
                tokio::time::timeout(grace, exit_status(&guard.docker, &guard.id))
                    .await
                    .ok()
            };
            let removed = remove(&guard.docker, &guard.id).await;
            guard.armed = removed.is_err();
            drop(guard);
            pump.abort();
            let ended = match exited {
                Some(status) => status,
                None => "killed by the worker".to_string(),
            };
            match removed {
                Ok(()) => ended,
                Err(e) => format!("{ended}; container {name} not removed: {e}"),
            }
        })
    }
}

/// Waits until the container is not running and says how it ended.
async fn exit_status(docker: &Docker, id: &str) -> String {
    let options = WaitContainerOptions {
        condition: "not-running".into(),
    };
    let mut wait = docker.wait_container(id, Some(options));
    match wait.next().await {
        Some(Ok(r)) => format!("exit status: {}", r.status_code),
        // bollard reports a non-zero exit as an error carrying the code.
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => {
            format!("exit status: {code}")
        }
        Some(Err(e)) => format!("exit status unknown: {}", engine_message(&e)),
        None => "exit status unknown".to_string(),
    }
}
