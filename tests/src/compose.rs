//! The compose suite's harness: a whole Weir cluster (3 masters, 3 workers) as
//! containers of `deploy/docker-compose.yml`, driven from the host through the
//! masters' published gRPC ports, with faults injected by `docker` and
//! `docker-compose` commands.
//!
//! Every [`Compose`] is its own compose project (`weir-<case>-<pid>`) with its own
//! free host ports, so cases never see each other; dropping it (test passed or
//! panicked) removes its containers, network and volumes, so two runs in a row start
//! from nothing. Every wait is a condition polled against a deadline.
//!
//! The cluster runs with mutual TLS: each cluster gets a fresh CA and certificates
//! ([`DevCa`]) in a temporary directory, mounted read-only into every container
//! (`WEIR_CERTS_DIR`); the harness talks to the masters as the cluster admin, who sees
//! every tenant's apps.

use crate::{eventually_within, verify_done};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use tonic::transport::Channel;
use weir_proto::v1 as pb;
use weir_proto::v1::weir_client::WeirClient;
use weir_security::ca::{file_stem, DevCa};
use weir_security::{Principal, Security, ServerRole, TlsFiles};

/// Master ids, as in the compose file (`master1`..`master3`).
pub const MASTERS: [u64; 3] = [1, 2, 3];

/// Worker service names and the worker ids they register as.
pub const WORKERS: [(&str, &str); 3] = [("worker1", "w1"), ("worker2", "w2"), ("worker3", "w3")];

/// The tenants the suite's apps belong to (the clickstream's `web`, and `default` for
/// specs that name none); each gets a certificate.
pub const TENANTS: [&str; 2] = ["default", "web"];

/// The admin whose certificate the harness uses (`admin-admin.pem`).
pub const ADMIN: &str = "admin";

/// Where the certificates are mounted inside every container.
pub const CERTS_IN_CONTAINER: &str = "/etc/weir/certs";

/// The uid (and group) the images run as (deploy/Dockerfile).
pub const CONTAINER_UID: u32 = 10001;

/// The Docker socket the workers mount.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// How long a cluster may take to come up (containers, election, registrations).
pub const UP_DEADLINE: Duration = Duration::from_secs(120);

/// The image tag the suite runs (`WEIR_TAG`, as `deploy/build-images.sh` builds).
pub fn image_tag() -> String {
    std::env::var("WEIR_TAG").unwrap_or_else(|_| "latest".into())
}

/// Whether a Docker engine answers (`docker info`).
pub fn docker_available() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `count` distinct free TCP ports on 127.0.0.1 (all held while picking, so none
/// repeats; another process could still take one before compose binds it).
fn free_ports(count: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("a bound port").port())
        .collect()
}

/// A fresh CA and the certificates of a compose cluster (masters 1-3, workers w1-w3,
/// [`TENANTS`], [`ADMIN`]) in `dir`, readable by the containers' uid: given to
/// [`CONTAINER_UID`] when this process may (root), else readable by this process's group,
/// which the containers then run as (returned, for `WEIR_CERTS_GID`). The CA key stays
/// private to this process.
pub fn write_certs(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    let mut who: Vec<Principal> = MASTERS.iter().map(|m| Principal::Master(*m)).collect();
    who.extend(
        WORKERS
            .iter()
            .map(|(_, w)| Principal::Worker(w.to_string())),
    );
    who.extend(TENANTS.iter().map(|t| Principal::Tenant(t.to_string())));
    who.push(Principal::Admin(ADMIN.into()));
    DevCa::generate("weir")
        .and_then(|ca| ca.write(dir, &who))
        .expect("certificates written");
    let shared: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the certificates directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n != "ca.key"))
        .collect();
    if chown(dir, Some(CONTAINER_UID), Some(CONTAINER_UID)).is_ok() {
        for f in &shared {
            chown(f, Some(CONTAINER_UID), Some(CONTAINER_UID)).expect("certificate chowned");
        }
        return None;
    }
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    mode(dir, 0o750);
    for f in &shared {
        mode(f, 0o640);
    }
    Some(
        std::fs::metadata(dir)
            .expect("the certificates directory")
            .gid(),
    )
}

/// The TLS of `who`'s certificate in `dir` (as [`write_certs`] wrote it).
pub fn security_of(dir: &Path, who: &Principal) -> Security {
    Security::load(Some(&TlsFiles::in_dir(dir, &file_stem(who)))).expect("certificate loads")
}

/// A client API client of the master at `addr` (`host:port`) with `sec`, if it can be
/// reached within two seconds.
pub async fn client_with(sec: &Security, addr: &str) -> Option<WeirClient<Channel>> {
    let ep = sec
        .endpoint(addr, ServerRole::Master)
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    Some(WeirClient::new(ep.connect().await.ok()?))
}

/// One compose project: a running cluster, removed with its volumes when dropped.
pub struct Compose {
    /// The compose project name, `weir-<case>-<pid>`.
    pub project: String,
    /// Host ports of master 1, 2 and 3's gRPC.
    pub ports: [u16; 3],
    metrics_ports: [u16; 3],
    file: PathBuf,
    /// The cluster's CA and certificates (removed after the cluster, when dropped).
    certs: tempfile::TempDir,
    /// The group the containers run as when the keys could not be given to their uid.
    certs_gid: Option<u32>,
    /// The admin's TLS: every client the harness makes.
    admin: Security,
}

impl Compose {
    /// Brings a cluster up for test `case` and waits until it has a leader and all
    /// three workers are registered. Panics (after cleaning up) if it cannot.
    pub async fn up(case: &str) -> Self {
        assert!(
            docker_available(),
            "the compose suite needs a Docker engine (`docker info` failed)"
        );
        let tag = image_tag();
        for image in ["weir-master", "weir-worker"] {
            let o = Command::new("docker")
                .args(["image", "inspect", "--format", "{{.Id}}"])
                .arg(format!("{image}:{tag}"))
                .output()
                .expect("docker runs");
            assert!(
                o.status.success(),
                "image {image}:{tag} is missing: run deploy/build-images.sh first"
            );
        }
        let p = free_ports(6);
        let certs = tempfile::Builder::new()
            .prefix(&format!("weir-{case}-certs-"))
            .tempdir()
            .expect("a temporary directory");
        let certs_gid = write_certs(certs.path());
        let admin = security_of(certs.path(), &Principal::Admin(ADMIN.into()));
        let c = Compose {
            project: format!("weir-{case}-{}", std::process::id()),
            ports: [p[0], p[1], p[2]],
            metrics_ports: [p[3], p[4], p[5]],
            file: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/docker-compose.yml"),
            certs,
            certs_gid,
            admin,
        };
        // Leftovers of an earlier run that was killed before its guard ran.
        let _ = c.compose(&["down", "-v", "--remove-orphans", "-t", "1"]);
        c.compose_ok(&["up", "-d"]);
        c.leader(&MASTERS, UP_DEADLINE).await;
        c.wait_workers(WORKERS.len(), UP_DEADLINE).await;
        c.register_tenants().await;
        c
    }

    /// Registers every tenant of [`TENANTS`] as the admin: specs need not be signed
    /// (the suite is about faults, signatures have their own tests), and its apps may
    /// run containers and write under the shared output volume.
    async fn register_tenants(&self) {
        for t in TENANTS {
            let req = pb::PutTenantRequest {
                tenant: t.into(),
                policy: Some(pb::TenantPolicy {
                    keys: vec![],
                    require_signature: false,
                    capabilities: Some(pb::Capabilities {
                        containers: true,
                        file_root: "/var/lib/weir-output".into(),
                        ..Default::default()
                    }),
                }),
            };
            eventually_within(&format!("tenant {t} registered"), UP_DEADLINE, || {
                let req = req.clone();
                async move {
                    for id in MASTERS {
                        let Some(mut c) = self.client(id).await else {
                            continue;
                        };
                        if c.put_tenant(req.clone()).await.is_ok() {
                            return Some(());
                        }
                    }
                    None
                }
            })
            .await;
        }
    }

    /// A `docker-compose` command for this project, with its ports in the environment.
    fn compose_command(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("-f").arg(&self.file).arg("-p").arg(&self.project);
        cmd.env("WEIR_TAG", image_tag())
            .env("WEIR_BIND", "127.0.0.1")
            .env("WEIR_CERTS_DIR", self.certs.path());
        match self.certs_gid {
            Some(gid) => cmd.env("WEIR_CERTS_GID", gid.to_string()),
            None => cmd.env_remove("WEIR_CERTS_GID"),
        };
        // The workers join the socket's group to start container PEs.
        if let Ok(m) = std::fs::metadata(DOCKER_SOCKET) {
            use std::os::unix::fs::MetadataExt;
            cmd.env("WEIR_DOCKER_GID", m.gid().to_string());
        }
        for (i, (port, metrics)) in self.ports.iter().zip(self.metrics_ports).enumerate() {
            cmd.env(format!("WEIR_MASTER{}_PORT", i + 1), port.to_string());
            cmd.env(
                format!("WEIR_MASTER{}_METRICS_PORT", i + 1),
                metrics.to_string(),
            );
        }
        cmd
    }

    /// Runs `docker-compose ARGS` for this project.
    pub fn compose(&self, args: &[&str]) -> Output {
        self.compose_command()
            .args(args)
            .output()
            .expect("docker-compose runs")
    }

    /// Runs `docker-compose ARGS` and panics with its output if it fails.
    pub fn compose_ok(&self, args: &[&str]) -> String {
        let o = self.compose(args);
        assert!(o.status.success(), "docker-compose {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs `docker ARGS`.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .output()
            .expect("docker runs")
    }

    /// Runs `docker ARGS` and panics with its output if it fails.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(o.status.success(), "docker {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The container id of `service` (e.g. `master2`).
    pub fn container(&self, service: &str) -> String {
        let id = self.compose_ok(&["ps", "-q", service]).trim().to_string();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    /// The project's private network (`<project>_weir`).
    pub fn network(&self) -> String {
        format!("{}_weir", self.project)
    }

    /// `docker kill` (SIGKILL) of `service`'s container.
    pub fn kill(&self, service: &str) {
        let id = self.container(service);
        self.docker_ok(&["kill", &id]);
    }

    /// Cuts `service` off the private network (`docker network disconnect`).
    pub fn disconnect(&self, service: &str) {
        let id = self.container(service);
        self.docker_ok(&["network", "disconnect", &self.network(), &id]);
    }

    /// Reconnects `service`, under its service name again (the alias the others dial).
    pub fn reconnect(&self, service: &str) {
        let id = self.container(service);
        self.docker_ok(&[
            "network",
            "connect",
            "--alias",
            service,
            &self.network(),
            &id,
        ]);
    }

    /// Runs `weirctl ARGS` inside `service`'s container (the images carry it), as the
    /// admin (its certificate is mounted there with the others).
    pub fn weirctl_in(&self, service: &str, args: &[&str]) -> Output {
        let id = self.container(service);
        let ca = format!("{CERTS_IN_CONTAINER}/ca.pem");
        let cert = format!("{CERTS_IN_CONTAINER}/admin-{ADMIN}.pem");
        let key = format!("{CERTS_IN_CONTAINER}/admin-{ADMIN}.key");
        let mut all = vec![
            "exec",
            id.as_str(),
            "/usr/local/bin/weirctl",
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ];
        all.extend_from_slice(args);
        self.docker(&all)
    }

    /// The TLS of `who`'s certificate (one of this cluster's: a master, a worker, one
    /// of [`TENANTS`] or the admin).
    pub fn security_of(&self, who: &Principal) -> Security {
        security_of(self.certs.path(), who)
    }

    /// The host address of master `id`'s gRPC.
    pub fn master_addr(&self, id: u64) -> String {
        format!("127.0.0.1:{}", self.ports[(id - 1) as usize])
    }

    /// An admin's client of master `id`, if it can be reached within two seconds.
    pub async fn client(&self, id: u64) -> Option<WeirClient<Channel>> {
        client_with(&self.admin, &self.master_addr(id)).await
    }

    /// Master `id`'s own Raft view, if it answers.
    pub async fn status(&self, id: u64) -> Option<pb::ClusterStatusResponse> {
        let mut c = self.client(id).await?;
        Some(
            c.cluster_status(pb::ClusterStatusRequest {})
                .await
                .ok()?
                .into_inner(),
        )
    }

    /// Waits until every master in `among` answers and all name the same leader, one
    /// of `among`; returns it.
    pub async fn leader(&self, among: &[u64], limit: Duration) -> u64 {
        eventually_within("a leader the masters agree on", limit, || async {
            let mut seen = None;
            for id in among {
                let l = self.status(*id).await?.leader_id?;
                if !among.contains(&l) || seen.is_some_and(|s| s != l) {
                    return None;
                }
                seen = Some(l);
            }
            seen
        })
        .await
    }

    /// Waits until `n` workers are registered and not lost.
    pub async fn wait_workers(&self, n: usize, limit: Duration) {
        eventually_within("the workers registered", limit, || async {
            for id in MASTERS {
                let Some(mut c) = self.client(id).await else {
                    continue;
                };
                if let Ok(r) = c.list_workers(pb::ListWorkersRequest {}).await {
                    let ready = r
                        .into_inner()
                        .workers
                        .iter()
                        .filter(|w| w.state == pb::WorkerState::Alive as i32)
                        .count();
                    return (ready >= n).then_some(());
                }
            }
            None
        })
        .await
    }

    /// Submits an app through the first of `via` that accepts it; returns its version.
    pub async fn submit(&self, via: &[u64], spec: &str) -> u64 {
        eventually_within("the app accepted", Duration::from_secs(30), || async {
            for id in via {
                let Some(mut c) = self.client(*id).await else {
                    continue;
                };
                let req = pb::SubmitAppRequest {
                    spec: spec.to_string(),
                    format: pb::SpecFormat::Yaml as i32,
                    request_id: format!("{}-{}", self.project, crate::compose::digest(spec)),
                    signature: None,
                };
                match c.submit_app(req).await {
                    Ok(r) => return Some(r.into_inner().version),
                    // An earlier attempt went through after all (its answer was lost
                    // in a failover).
                    Err(s) if s.code() == tonic::Code::AlreadyExists => {
                        let name = s.message().to_string();
                        return self
                            .app(via, &app_name(spec).unwrap_or(name))
                            .await?
                            .summary
                            .map(|s| s.version);
                    }
                    Err(s) if s.code() == tonic::Code::InvalidArgument => {
                        panic!("spec refused: {}", s.message())
                    }
                    Err(_) => {}
                }
            }
            None
        })
        .await
    }

    /// Waits until the `sink.verify` PEs of `app` saw records.
    pub async fn records_flowing(&self, via: &[u64], app: &str) {
        eventually_within("records flowing", Duration::from_secs(60), || async {
            let d = self.app(via, app).await?;
            let seen: u64 = d
                .pes
                .iter()
                .filter_map(|p| p.verify.as_ref())
                .map(|v| v.records)
                .sum();
            (seen > 0).then_some(())
        })
        .await;
    }

    /// The app as the first of `via` that answers shows it (followers forward to the
    /// leader).
    pub async fn app(&self, via: &[u64], app: &str) -> Option<pb::AppDetail> {
        for id in via {
            let Some(mut c) = self.client(*id).await else {
                continue;
            };
            if let Some(d) = crate::app_detail(&mut c, app).await {
                return Some(d);
            }
        }
        None
    }

    /// App names, as the first of `via` that answers lists them.
    pub async fn apps(&self, via: &[u64]) -> Option<Vec<String>> {
        for id in via {
            let Some(mut c) = self.client(*id).await else {
                continue;
            };
            if let Ok(r) = c.list_apps(pb::ListAppsRequest::default()).await {
                let mut names: Vec<String> =
                    r.into_inner().apps.into_iter().map(|a| a.name).collect();
                names.sort();
                return Some(names);
            }
        }
        None
    }

    /// Waits until every `operator` (a `sink.verify`) PE of `app` saw its inputs end;
    /// returns the summaries summed over its PEs.
    pub async fn verified(
        &self,
        via: &[u64],
        app: &str,
        operator: &str,
        limit: Duration,
    ) -> pb::VerifySummary {
        let start = std::time::Instant::now();
        let mut last = None;
        let vs = loop {
            if let Some(d) = self.app(via, app).await {
                if let Some(vs) = verify_done(&d, operator) {
                    break vs;
                }
                last = Some(d);
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {app}'s {operator} to see its inputs end; last seen:\n{}",
                last.as_ref().map_or("nothing".into(), describe)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut sum = pb::VerifySummary::default();
        for v in vs {
            sum.records += v.records;
            sum.distinct += v.distinct;
            sum.duplicates += v.duplicates;
            sum.missing_below_max += v.missing_below_max;
            sum.sources += v.sources;
            sum.complete = v.complete;
            sum.expected = v.expected;
            sum.inputs_ended = v.inputs_ended;
        }
        sum
    }

    /// The worker each PE of `app` is placed on, `(pe id, worker id)`.
    pub async fn placement(&self, via: &[u64], app: &str) -> Option<Vec<(String, String)>> {
        let d = self.app(via, app).await?;
        Some(
            d.pes
                .iter()
                .map(|p| {
                    (
                        p.pe.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
                        p.worker_id.clone(),
                    )
                })
                .collect(),
        )
    }
}

/// One line per PE: id, worker, state, records in and out, verify summary.
pub fn describe(d: &pb::AppDetail) -> String {
    d.pes
        .iter()
        .map(|p| {
            let stats = p.stats.as_ref();
            format!(
                "  {} on {:?} {:?} in={} out={}{}{}",
                p.pe.as_ref().map_or("?", |r| r.id.as_str()),
                p.worker_id,
                pb::PeState::try_from(p.state).unwrap_or(pb::PeState::Unspecified),
                stats.map_or(0, |s| s.records_in),
                stats.map_or(0, |s| s.records_out),
                p.verify.as_ref().map_or(String::new(), |v| format!(
                    " verify: records={} distinct={} duplicates={} missing={} ended={}",
                    v.records, v.distinct, v.duplicates, v.missing_below_max, v.inputs_ended
                )),
                if p.message.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", p.message)
                },
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `name:` line of a YAML spec.
fn app_name(spec: &str) -> Option<String> {
    spec.lines()
        .find_map(|l| l.strip_prefix("name:"))
        .map(|n| n.trim().to_string())
}

/// A short stable digest of `s` (request ids, so a retried submit is deduplicated).
pub fn digest(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let o = self.compose(&["logs", "--no-color", "--tail", "60"]);
            eprintln!("---- logs of {} ----\n{}", self.project, text(&o));
        }
        let o = self.compose(&["down", "-v", "--remove-orphans", "-t", "2"]);
        if !o.status.success() {
            eprintln!(
                "docker-compose down of {} failed: {}",
                self.project,
                text(&o)
            );
        }
    }
}

/// The clickstream example's shape (generator, parse, key_by, 1 s windows into a
/// file, and a `sink.verify` audit of every click), bounded to `count` clicks at
/// `rate` per second.
pub fn clickstream(name: &str, count: u64, rate: u64) -> String {
    format!(
        r#"name: {name}
tenant: web
operators:
  - name: clicks
    kind: source.generator
    parallelism: 2
    params: {{rate: {rate}, count: {count}, keys: 5000, payload_bytes: 100}}
  - name: parse
    kind: map
    parallelism: 2
    params:
      set:
        user: key
        page: concat("/page/", mod(id, 50))
      project: [id, ts, user, page]
  - name: by-page
    kind: key_by
    parallelism: 2
    params: {{field: page}}
  - name: views
    kind: window.count
    parallelism: 2
    params: {{size_ms: 1000}}
  - name: out
    kind: sink.file
    params: {{path: /var/lib/weir-output/{name}-views.jsonl}}
  - name: audit
    kind: sink.verify
    params: {{expect: {count}}}
streams:
  - {{from: clicks, to: parse}}
  - {{from: parse, to: by-page}}
  - {{from: by-page, to: views, partitioning: hash}}
  - {{from: views, to: out, partitioning: round_robin}}
  - {{from: parse, to: audit, partitioning: round_robin}}
"#
    )
}

/// Asserts that `sum` is `expected` records, each exactly once.
pub fn assert_exact(what: &str, sum: &pb::VerifySummary, expected: u64) {
    assert_eq!(
        (
            sum.records,
            sum.distinct,
            sum.duplicates,
            sum.missing_below_max
        ),
        (expected, expected, 0, 0),
        "{what}: (records, distinct, duplicates, missing) must be ({expected}, {expected}, 0, 0); summary {sum:?}"
    );
    assert!(sum.complete, "{what}: not complete: {sum:?}");
}
