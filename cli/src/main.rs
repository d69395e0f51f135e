//! weirctl: the Weir command-line client.
//!
//! Offline commands (`validate`, `plan`) need no cluster: they run the same parser,
//! validator and planner the master runs.

mod catalog;
mod certs;
mod demo;
mod health;
mod images;
mod names;
mod offline;
mod online;
mod sched;
mod tenants;
mod upgrade;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

// `weirctl demo` runs workers in this process: the allocator the worker binary uses
// (see worker/src/main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// weirctl: validate, plan, submit and upgrade Weir streaming apps.
#[derive(Parser, Debug)]
#[command(name = "weirctl", version, about, long_about = None)]
struct Cli {
    /// How results are printed.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    /// A master's gRPC address; repeat for several (any one that answers will do:
    /// followers forward to the leader). When a master fails mid-call, reads and
    /// submit/upgrade/cancel (which carry a request id) go on to the next one.
    #[arg(
        long = "master",
        short = 'm',
        env = "WEIR_MASTERS",
        value_delimiter = ',',
        global = true,
        default_value = "127.0.0.1:7000"
    )]
    masters: Vec<String>,
    /// The cluster CA certificate (PEM), to check the masters against.
    #[arg(long, env = "WEIR_TLS_CA", global = true)]
    ca: Option<std::path::PathBuf>,
    /// Your certificate (PEM): a tenant's or an admin's, from the cluster CA
    /// (`weirctl certs init` makes some).
    #[arg(long, env = "WEIR_TLS_CERT", global = true)]
    cert: Option<std::path::PathBuf>,
    /// Your private key (PEM).
    #[arg(long, env = "WEIR_TLS_KEY", global = true)]
    key: Option<std::path::PathBuf>,
    /// Talk plain TCP to a cluster running with --insecure (nobody authenticated).
    #[arg(long, env = "WEIR_INSECURE", global = true, value_parser = clap::builder::BoolishValueParser::new())]
    insecure: bool,
    /// Sign submitted and upgraded specs with this Ed25519 key (PKCS#8 PEM, as
    /// `weirctl certs init` writes `tenant-NAME.sign.key`).
    #[arg(long, env = "WEIR_SIGNING_KEY", global = true)]
    sign_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The key this client signs specs with, if any.
    fn signer(&self) -> anyhow::Result<Option<weir_security::sign::Signer>> {
        let Some(path) = &self.sign_key else {
            return Ok(None);
        };
        let pem = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--sign-key {}: {e}", path.display()))?;
        Ok(Some(weir_security::sign::Signer::from_pem(&pem).map_err(
            |e| anyhow::anyhow!("--sign-key {}: {e}", path.display()),
        )?))
    }

    /// The TLS this client talks with: its certificate, or nothing with --insecure.
    fn security(&self) -> anyhow::Result<weir_security::Security> {
        if self.insecure {
            return Ok(weir_security::Security::Off);
        }
        match (&self.ca, &self.cert, &self.key) {
            (Some(ca), Some(cert), Some(key)) => Ok(weir_security::Security::load(Some(
                &weir_security::TlsFiles {
                    ca: ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                },
            ))?),
            (None, None, None) => Err(weir_security::TlsError::NoMaterial.into()),
            _ => anyhow::bail!(
                "--ca, --cert and --key go together (or WEIR_TLS_CA, WEIR_TLS_CERT, WEIR_TLS_KEY)"
            ),
        }
    }
}

/// Output format of every command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Readable text.
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run Weir end to end in this process: an embedded master, the clickstream
    /// example submitted, shown, planned for its online upgrade, and restarted.
    Demo {
        /// Where the example specs are.
        #[arg(long, default_value = "examples")]
        examples: String,
    },
    /// Check app specs (YAML or JSON) and list every problem with its path.
    ///
    /// Exits 0 when every file is valid, 1 otherwise.
    Validate {
        /// Spec files; `.json` files are read as JSON, anything else as YAML.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Show the online-upgrade plan from one version of an app to another, offline.
    ///
    /// Without --placement, instructions are grouped per PE; with it, per worker.
    /// Exits 0 when both specs are valid and upgradable, 1 otherwise.
    Plan {
        /// The running version's spec.
        old: String,
        /// The new version's spec.
        new: String,
        /// A YAML or JSON mapping of PE id to worker id (as `weirctl get` shows).
        #[arg(long)]
        placement: Option<String>,
    },
    /// Submit a new app (version 1) to the cluster.
    Submit {
        /// The app's spec.
        file: String,
    },
    /// Show an app: state, version, PEs with their workers and rates, streams.
    Get {
        /// App name.
        app: String,
    },
    /// List apps.
    List {
        /// Only this tenant's apps.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Cancel a running app.
    Cancel {
        /// App name.
        app: String,
    },
    /// Upgrade a running app online to a new version: prints the plan, a progress bar
    /// per phase and a summary (records lost and duplicated, longest stall).
    Upgrade {
        /// App name.
        app: String,
        /// The new version's spec.
        file: String,
        /// Only compute and show the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Every version of an app and every upgrade operation with its outcome.
    History {
        /// App name.
        app: String,
    },
    /// Upgrade an app online back to the spec of an earlier version.
    Rollback {
        /// App name.
        app: String,
        /// The version to go back to.
        #[arg(long)]
        to: u64,
    },
    /// An app's checkpoints (id, time, size, duration, where the pieces are) and
    /// recoveries.
    Checkpoints {
        /// App name.
        app: String,
    },
    /// Stream an app's events (state changes, placement) until it ends.
    Watch {
        /// App name.
        app: String,
    },
    /// List workers with their resources and GPUs.
    Workers,
    /// Resource pools (scenario and vendor): workers, devices, what is used and free,
    /// PEs placed and waiting.
    Pools,
    /// Apps waiting to be placed, in the order they will be served, with why each
    /// waits (start condition, quota, capacity).
    Queue {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the container images each worker holds (placement puts a container PE
    /// only on a worker holding its image).
    Images {
        /// Only this worker's.
        #[arg(long)]
        worker: Option<String>,
    },
    /// Check that a master or worker serves (its gRPC health service), once.
    ///
    /// Exits 0 when it reports SERVING, 1 otherwise (unreachable included): what a
    /// container healthcheck needs. Ignores --master.
    Health {
        /// The node's gRPC address (a master's, or a worker's control address).
        #[arg(long, default_value = "127.0.0.1:7000")]
        addr: String,
        /// The service to ask about; empty means the node as a whole.
        #[arg(long, default_value = "")]
        service: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        /// What the node is (with TLS, its certificate is checked for that role).
        #[arg(long, value_enum, default_value_t = NodeRole::Master)]
        role: NodeRole,
    },
    /// Tenants: their signing keys, whether they must sign, and what their apps may
    /// do (admin).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// The scheduling policy (device choice, objective weights, queue order) every
    /// leader uses.
    Scheduler {
        #[command(subcommand)]
        command: SchedulerCommand,
    },
    /// Certificates for a cluster: a CA and one per master, worker, tenant and admin.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// The master cluster: status and membership.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// PE templates of the catalog: an operator says `template: NAME` with `params:`
    /// and the master generates its container from the template and a base image.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Base images of the catalog, which templates choose by scenario, vendor and
    /// framework.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

/// A node `weirctl health` checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NodeRole {
    /// A master's gRPC address.
    Master,
    /// A worker's control address.
    Worker,
}

#[derive(Subcommand, Debug)]
enum SchedulerCommand {
    /// The scheduling policy in effect: the one kept in Raft, or the leader's flags.
    Policy,
    /// Keep a scheduling policy in Raft, so every leader places and orders the queue
    /// by it (admin), or clear it with --clear.
    SetPolicy(sched::SetPolicy),
}

#[derive(Subcommand, Debug)]
enum TenantCommand {
    /// Register a tenant or replace its policy.
    Put(tenants::Put),
    /// List tenants with their keys, grants, quota and what they hold.
    List,
    /// Set a tenant's quota (the most its placed apps may hold together), or lift it
    /// with --clear.
    SetQuota(sched::SetQuota),
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Make a development CA and certificates into DIR: ca.pem/ca.key, and
    /// master-ID, worker-ID, tenant-NAME and admin-NAME .pem/.key for each one named.
    Init(certs::Init),
}

#[derive(Subcommand, Debug)]
enum TemplateCommand {
    /// Add a template from its file (YAML or JSON; see examples/templates/).
    Add {
        /// The template file.
        file: String,
    },
    /// List templates with the base image each chooses now.
    List,
    /// Show a template as a file, with its parameters and the base image it chooses.
    Show {
        /// Template name.
        name: String,
    },
    /// Remove a template no live app was generated from.
    Remove {
        /// Template name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Register a base image (the image itself is built or loaded on the workers).
    Register(catalog::Registration),
    /// List base images.
    List,
    /// Remove a base image no template needs.
    Remove {
        /// Base image name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Members, leader, term, commit and applied index.
    Status,
    /// Add a master (it must be running, started without --peers).
    AddMaster {
        /// Its id.
        id: u64,
        /// Its gRPC address.
        address: String,
        /// Add it as a non-voting learner only.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a master from the cluster.
    RemoveMaster {
        /// Its id.
        id: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Validate { files } => offline::validate(files, cli.output),
        Command::Plan {
            old,
            new,
            placement,
        } => offline::plan(old, new, placement.as_deref(), cli.output),
        Command::Demo { examples } => demo::run(std::path::Path::new(examples)),
        Command::Health {
            addr,
            service,
            timeout_ms,
            role,
        } => Ok(cli
            .security()
            .and_then(|sec| {
                let role = match role {
                    NodeRole::Master => weir_security::ServerRole::Master,
                    NodeRole::Worker => weir_security::ServerRole::Worker,
                };
                health::check(
                    &sec,
                    role,
                    addr,
                    service,
                    std::time::Duration::from_millis(*timeout_ms),
                )
            })
            .unwrap_or_else(|e| {
                eprintln!("weirctl: {e:#}");
                false
            })),
        Command::Certs {
            command: CertsCommand::Init(init),
        } => certs::init(init),
        online => cli.security().and_then(|sec| {
            let conn =
                online::Conn::new(cli.masters.clone(), cli.output, sec).with_signer(cli.signer()?);
            run_online(online, conn)
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("weirctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_online(cmd: &Command, conn: online::Conn) -> anyhow::Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cmd {
            Command::Submit { file } => online::submit(&conn, file).await,
            Command::Get { app } => online::get(&conn, app).await,
            Command::List { tenant } => online::list(&conn, tenant.clone()).await,
            Command::Cancel { app } => online::cancel(&conn, app).await,
            Command::Upgrade { app, file, dry_run } => {
                upgrade::upgrade(&conn, app, file, *dry_run).await
            }
            Command::History { app } => upgrade::history(&conn, app).await,
            Command::Rollback { app, to } => upgrade::rollback(&conn, app, *to).await,
            Command::Watch { app } => online::watch(&conn, app).await,
            Command::Checkpoints { app } => online::checkpoints(&conn, app).await,
            Command::Workers => online::workers(&conn).await,
            Command::Pools => sched::pools(&conn).await,
            Command::Queue { tenant } => sched::queue(&conn, tenant.as_deref()).await,
            Command::Images { worker } => images::images(&conn, worker.as_deref()).await,
            Command::Cluster { command } => match command {
                ClusterCommand::Status => online::cluster_status(&conn).await,
                ClusterCommand::AddMaster {
                    id,
                    address,
                    learner,
                } => online::add_master(&conn, *id, address, *learner).await,
                ClusterCommand::RemoveMaster { id } => online::remove_master(&conn, *id).await,
            },
            Command::Template { command } => match command {
                TemplateCommand::Add { file } => catalog::template_add(&conn, file).await,
                TemplateCommand::List => catalog::template_list(&conn).await,
                TemplateCommand::Show { name } => catalog::template_show(&conn, name).await,
                TemplateCommand::Remove { name } => catalog::template_remove(&conn, name).await,
            },
            Command::Scheduler { command } => match command {
                SchedulerCommand::Policy => sched::policy(&conn).await,
                SchedulerCommand::SetPolicy(p) => sched::set_policy(&conn, p).await,
            },
            Command::Tenant { command } => match command {
                TenantCommand::Put(p) => tenants::put(&conn, p).await,
                TenantCommand::List => tenants::list(&conn).await,
                TenantCommand::SetQuota(q) => sched::set_quota(&conn, q).await,
            },
            Command::Image { command } => match command {
                ImageCommand::Register(r) => catalog::image_register(&conn, r).await,
                ImageCommand::List => catalog::image_list(&conn).await,
                ImageCommand::Remove { name } => catalog::image_remove(&conn, name).await,
            },
            Command::Validate { .. }
            | Command::Plan { .. }
            | Command::Demo { .. }
            | Command::Certs { .. }
            | Command::Health { .. } => {
                unreachable!("not online commands")
            }
        }
    })?;
    Ok(true)
}
