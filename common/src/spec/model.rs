//! The logical model: an app is a DAG of operators joined by streams.
//!
//! These types are what a valid spec becomes. User input never reaches them through
//! serde directly: [`crate::spec::parse_app`] walks the document and reports every
//! problem with its path. The serde derives are for trusted, internal round trips
//! (Raft state, plan JSON) and produce the same shape the parser accepts.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The number of key groups keyed state is split into; also the highest parallelism.
pub const KEY_GROUPS: u32 = 256;

/// A streaming application, one version of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    /// Unique app name within the cluster: `[a-z][a-z0-9-]{0,62}`.
    pub name: String,
    /// Owning tenant; scheduling shares and quotas are per tenant.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Scheduling priority class.
    #[serde(default)]
    pub priority: Priority,
    /// How often the master checkpoints the app, ms; 0 turns checkpoints off; absent
    /// for the master's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval_ms: Option<u64>,
    /// What must hold before the app is placed (see [`super::StartConditions`]).
    #[serde(default, skip_serializing_if = "super::StartConditions::is_empty")]
    pub start: super::StartConditions,
    /// The nodes of the DAG, in file order.
    pub operators: Vec<OperatorSpec>,
    /// The edges of the DAG, in file order.
    pub streams: Vec<StreamSpec>,
}

pub(crate) fn default_tenant() -> String {
    "default".to_string()
}

impl AppSpec {
    /// The operator called `name`, if any.
    pub fn operator(&self, name: &str) -> Option<&OperatorSpec> {
        self.operators.iter().find(|o| o.name == name)
    }
}

/// Scheduling priority class of an app; higher classes are served first.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served after everything else; first to be preempted.
    Low,
    /// The default class.
    #[default]
    Normal,
    /// Served first.
    High,
}

/// One operator (a node of the DAG).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperatorSpec {
    /// Unique within the app: `[a-z][a-z0-9_-]{0,62}`.
    pub name: String,
    /// What the operator does, and its typed parameters.
    #[serde(flatten)]
    pub kind: OperatorKind,
    /// How many PEs run this operator, 1..=[`KEY_GROUPS`].
    #[serde(default = "one")]
    pub parallelism: u32,
    /// What each PE of this operator needs.
    #[serde(default)]
    pub resources: Resources,
}

fn one() -> u32 {
    1
}

/// The implementation of an operator: a built-in kind, a local program or a container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "params")]
pub enum OperatorKind {
    /// Deterministic record generator (ids are `index + k * parallelism`).
    #[serde(rename = "source.generator")]
    Generator(GeneratorParams),
    /// The Nexmark benchmark's events (persons, auctions, bids), deterministic by seed.
    #[serde(rename = "source.nexmark")]
    Nexmark(NexmarkParams),
    /// Reads newline-delimited records from TCP clients.
    #[serde(rename = "source.tcp")]
    SourceTcp(SourceTcpParams),
    /// Reads a file of newline-delimited records.
    #[serde(rename = "source.file")]
    SourceFile(SourceFileParams),
    /// Projects, renames and computes fields.
    #[serde(rename = "map")]
    Map(MapParams),
    /// Keeps records whose field compares true against a value.
    #[serde(rename = "filter")]
    Filter(FilterParams),
    /// Sets the record key from a field.
    #[serde(rename = "key_by")]
    KeyBy(KeyByParams),
    /// Keyed tumbling window counting records per key.
    #[serde(rename = "window.count")]
    WindowCount(WindowCountParams),
    /// Keyed tumbling window summing a numeric field per key.
    #[serde(rename = "window.sum")]
    WindowSum(WindowSumParams),
    /// Keyed hopping (sliding) window counting records per key.
    #[serde(rename = "window.hop")]
    WindowHop(WindowHopParams),

    /// Appends JSON lines to a file, made visible at checkpoints.
    #[serde(rename = "sink.file")]
    SinkFile(SinkFileParams),
    /// Writes JSON lines to a TCP endpoint (at-least-once).
    #[serde(rename = "sink.tcp")]
    SinkTcp(SinkTcpParams),
    /// Discards records (benchmarks).
    #[serde(rename = "sink.null")]
    SinkNull,
    /// Counts records per source and reports gaps and duplicates.
    #[serde(rename = "sink.verify")]
    SinkVerify(SinkVerifyParams),
    /// A local program speaking the PE record protocol on stdin/stdout.
    #[serde(rename = "exec")]
    Exec(ExecParams),
    /// A Docker image speaking the PE record protocol on stdin/stdout.
    #[serde(rename = "container")]
    Container(ContainerParams),
}

/// Where an operator may sit in the DAG.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// No inputs, at least one output.
    Source,
    /// At least one input and one output.
    Transform,
    /// At least one input, no outputs.
    Sink,
}

impl OperatorKind {
    /// The kind name as written in specs, e.g. `window.count`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Generator(_) => "source.generator",
            Self::Nexmark(_) => "source.nexmark",
            Self::SourceTcp(_) => "source.tcp",
            Self::SourceFile(_) => "source.file",
            Self::Map(_) => "map",
            Self::Filter(_) => "filter",
            Self::KeyBy(_) => "key_by",
            Self::WindowCount(_) => "window.count",
            Self::WindowSum(_) => "window.sum",
            Self::WindowHop(_) => "window.hop",
            Self::SinkFile(_) => "sink.file",
            Self::SinkTcp(_) => "sink.tcp",
            Self::SinkNull => "sink.null",
            Self::SinkVerify(_) => "sink.verify",
            Self::Exec(_) => "exec",
            Self::Container(_) => "container",
        }
    }

    /// Where the kind may sit in the DAG.
    pub fn role(&self) -> Role {
        match self {
            Self::Generator(_) | Self::Nexmark(_) | Self::SourceTcp(_) | Self::SourceFile(_) => {
                Role::Source
            }
            Self::SinkFile(_) | Self::SinkTcp(_) | Self::SinkNull | Self::SinkVerify(_) => {
                Role::Sink
            }
            _ => Role::Transform,
        }
    }

    /// Whether PEs of this kind hold state keyed by record key (split by key group).
    pub fn keyed_state(&self) -> bool {
        matches!(
            self,
            Self::WindowCount(_) | Self::WindowSum(_) | Self::WindowHop(_)
        )
    }

    /// Whether PEs of this kind hold state that an upgrade must hand over.
    pub fn stateful(&self) -> bool {
        self.keyed_state()
            || self.role() == Role::Source
            || matches!(self, Self::SinkVerify(_) | Self::SinkFile(_))
    }

    /// Whether the kind may ask for GPUs (only programs we do not implement can use them).
    pub fn may_use_gpus(&self) -> bool {
        matches!(self, Self::Exec(_) | Self::Container(_))
    }
}

/// Every kind name the parser accepts, for error messages.
pub const KIND_NAMES: &[&str] = &[
    "source.generator",
    "source.nexmark",
    "source.tcp",
    "source.file",
    "map",
    "filter",
    "key_by",
    "window.count",
    "window.sum",
    "window.hop",
    "sink.file",
    "sink.tcp",
    "sink.null",
    "sink.verify",
    "exec",
    "container",
];

/// Parameters of `source.generator`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorParams {
    /// Records per second over all PEs; `None` means as fast as the pipeline takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Total records over all PEs; `None` means unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Number of distinct keys (`key = "k" + id % keys`).
    pub keys: u64,
    /// Size of the opaque payload field in bytes.
    pub payload_bytes: u32,
    /// Seed for the payload and value fields.
    #[serde(default)]
    pub seed: u64,
    /// Event times from the wall clock at emission (Unix ms) instead of from the ids
    /// (`event_time: wall`): for measuring end-to-end latency. Ids stay deterministic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wall_clock: bool,
}

/// Which Nexmark table a `source.nexmark` PE emits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NexmarkTable {
    /// New people (1 event in 50).
    Person,
    /// New auctions (3 events in 50).
    Auction,
    /// Bids (46 events in 50): the table most queries read.
    #[default]
    Bid,
}

/// Default `events_per_second` of `source.nexmark`: the reference generator's
/// `firstEventRate` (10,000 events/s, an inter-event delay of 100 us).
pub const DEFAULT_NEXMARK_EVENTS_PER_SECOND: u64 = 10_000;

/// Highest `events_per_second`: one event per nanosecond of event time.
pub const MAX_NEXMARK_EVENTS_PER_SECOND: u64 = 1_000_000_000;

/// Highest `events`: event numbers (and so ids and times) stay far inside `i64`.
pub const MAX_NEXMARK_EVENTS: u64 = 1 << 62;

/// Parameters of `source.nexmark`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NexmarkParams {
    /// The table emitted; numbering, ids and times follow the whole interleaved stream.
    #[serde(default)]
    pub table: NexmarkTable,
    /// Events (of all three tables) over all PEs; `None` means unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// Records (events of `table`) per second of wall-clock time over all PEs (a
    /// throttle, as the generator's `rate`); `None` means as fast as the pipeline
    /// takes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// Seed of every random choice.
    #[serde(default)]
    pub seed: u64,
    /// The simulated event rate that spaces event times: event `n` happens at the base
    /// time plus `n * 1000 / events_per_second` ms.
    #[serde(default = "default_events_per_second")]
    pub events_per_second: u64,
}

fn default_events_per_second() -> u64 {
    DEFAULT_NEXMARK_EVENTS_PER_SECOND
}

/// How line-oriented sources decode each line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// Each line is a JSON object; its fields become record fields.
    #[default]
    Json,
    /// Each line becomes the `line` field, verbatim.
    Raw,
}

/// Parameters of `source.tcp`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceTcpParams {
    /// `host:port` to listen on.
    pub listen: String,
    /// Line decoding.
    #[serde(default)]
    pub format: LineFormat,
    /// Longest line accepted, in bytes (without the newline); a client sending a
    /// longer one is disconnected. `None`: [`DEFAULT_MAX_LINE_BYTES`]. Left out when
    /// written, so fingerprints of specs that do not set it stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_line_bytes: Option<u32>,
}

/// Default longest `source.tcp` line, bytes: 1 MiB, far above any record a line
/// protocol carries, small enough that a client can never make a worker hold more
/// than this per connection.
pub const DEFAULT_MAX_LINE_BYTES: u32 = 1 << 20;

/// Highest `max_line_bytes` a spec may set: 16 MiB.
pub const MAX_MAX_LINE_BYTES: u32 = 16 << 20;

impl SourceTcpParams {
    /// The longest line accepted, bytes.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES) as usize
    }
}

/// Parameters of `source.file`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFileParams {
    /// File to read, on the worker running the PE.
    pub path: String,
    /// Line decoding.
    #[serde(default)]
    pub format: LineFormat,
}

/// Parameters of `map`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapParams {
    /// Fields to keep (after `rename` and `set`); empty keeps all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub project: Vec<String>,
    /// Old name -> new name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rename: BTreeMap<String, String>,
    /// Field -> expression computing it, e.g. `upper(url)` or `mod(id, 50)`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
}

/// Comparison of a `filter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// String field contains the value.
    Contains,
}

/// Names accepted for [`CmpOp`].
pub const CMP_OPS: &[(&str, CmpOp)] = &[
    ("eq", CmpOp::Eq),
    ("ne", CmpOp::Ne),
    ("lt", CmpOp::Lt),
    ("le", CmpOp::Le),
    ("gt", CmpOp::Gt),
    ("ge", CmpOp::Ge),
    ("contains", CmpOp::Contains),
];

/// Parameters of `filter`: a field compared with a constant, or a predicate over the
/// record. Written as either form's own fields (untagged), so specs of the first form
/// keep their fingerprints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FilterParams {
    /// `{field: value, op: gt, value: 100}`.
    Compare(Comparison),
    /// `{where: "mod(id, 10) != 3 and value > 100"}`.
    Where(Predicate),
}

/// A filter's predicate: an expression of the `map` language that gives a boolean
/// (a comparison, or comparisons joined by `and`, `or`, `not`); records for which it
/// is true pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predicate {
    /// The expression, e.g. `mod(auction, 123) == 0`.
    #[serde(rename = "where")]
    pub predicate: String,
}

/// A filter's test of one field against a constant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Field compared.
    pub field: String,
    /// Comparison.
    pub op: CmpOp,
    /// A scalar (string, number or bool) compared against.
    pub value: serde_json::Value,
}

/// Parameters of `key_by`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyByParams {
    /// Field whose value becomes the record key.
    pub field: String,
}

/// Parameters of `window.count`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowCountParams {
    /// Tumbling window length in milliseconds of event time.
    pub size_ms: u64,
}

/// Parameters of `window.sum`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSumParams {
    /// Tumbling window length in milliseconds of event time.
    pub size_ms: u64,
    /// Numeric field summed per key.
    pub field: String,
}

/// Parameters of `window.hop`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowHopParams {
    /// Window length in milliseconds of event time; a multiple of `slide_ms`.
    pub size_ms: u64,
    /// How far each window starts after the previous one, ms.
    pub slide_ms: u64,
}

/// Most windows one record may fall in (`size_ms / slide_ms`) in a `window.hop`: each
/// is a separate count to update, so the bound keeps a record's cost small.
pub const MAX_HOP_WINDOWS: u64 = 1_000;

/// Parameters of `sink.file`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkFileParams {
    /// File the JSON lines go to, on the worker running the PE (PE index appended when > 1).
    pub path: String,
}

/// Parameters of `sink.tcp`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkTcpParams {
    /// `host:port` to connect to.
    pub address: String,
}

/// Parameters of `sink.verify`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkVerifyParams {
    /// Records expected in total, if known; the report says whether it was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<u64>,
}

/// How an exec or container PE exchanges records on stdin/stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeProtocol {
    /// Length-prefixed binary record frames (see docs/pe-protocol.md).
    #[default]
    Framed,
    /// One JSON object per line, for scripts.
    Lines,
}

/// Parameters of `exec`. `Debug` shows `env` names, never values (they may be secrets).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecParams {
    /// Program and arguments; the program is looked up on `env`'s `PATH` if it sets
    /// one, else on the worker's.
    pub command: Vec<String>,
    /// The program's environment; the worker adds only the `WEIR_*` variables (and
    /// a default `PATH`), never its own (docs/pe-protocol.md).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Record exchange protocol.
    #[serde(default)]
    pub protocol: PeProtocol,
}

/// Parameters of `container`. `Debug` shows `env` names, never values (they may be
/// secrets).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerParams {
    /// Image reference, built locally (no registry).
    pub image: String,
    /// Command overriding the image's entrypoint arguments; empty keeps the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Record exchange protocol.
    #[serde(default)]
    pub protocol: PeProtocol,
    /// Whether the root filesystem is writable; read-only unless the spec asks, so a
    /// PE keeps nothing outside its checkpointed state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writable_rootfs: bool,
    /// The network the container joins (none unless the spec asks for its tenant's).
    #[serde(default, skip_serializing_if = "ContainerNetwork::is_none")]
    pub network: ContainerNetwork,
}

/// Which network a container PE joins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerNetwork {
    /// No network at all: records flow over stdio only.
    #[default]
    None,
    /// The tenant's own Docker network, shared with that tenant's containers only.
    Tenant,
}

impl ContainerNetwork {
    /// Whether this is the default, [`ContainerNetwork::None`] (left out when written,
    /// so the fingerprints of specs written before the field existed do not change).
    pub fn is_none(&self) -> bool {
        *self == Self::None
    }
}

/// Names accepted for [`ContainerNetwork`]. No host or bridge network: a container
/// must not reach the cluster's ports or another tenant's containers.
pub const CONTAINER_NETWORKS: &[(&str, ContainerNetwork)] = &[
    ("none", ContainerNetwork::None),
    ("tenant", ContainerNetwork::Tenant),
];

/// What one PE of an operator needs from its worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU cores (fractions allowed).
    pub cpu: f64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// GPUs, for exec and container operators only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRequest>,
}

/// Default CPU cores per PE of a program (`exec`, `container`): a process of its own.
pub const DEFAULT_CPU: f64 = 0.25;
/// Default memory per PE of a program in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 256;
/// Default CPU cores per PE of a built-in operator. Built-in PEs are tasks sharing the
/// worker's runtime, not processes, and most move records far below a core's worth;
/// at a quarter core each, a 2-core worker could not hold the 10 PEs of the
/// clickstream example (docs/spec-format.md#resources).
pub const DEFAULT_BUILTIN_CPU: f64 = 0.05;
/// Default memory per PE of a built-in operator in MiB: it shares the worker's
/// process, and its queues are bounded by credits.
pub const DEFAULT_BUILTIN_MEMORY_MB: u64 = 64;

/// Whether operators of kind `name` run a program of their own (`exec`, `container`)
/// rather than a built-in kernel on the worker's runtime.
pub fn runs_a_program(name: &str) -> bool {
    matches!(name, "exec" | "container")
}

impl Resources {
    /// What each PE of an operator of kind `name` asks for when its spec does not say.
    pub fn for_kind(name: &str) -> Self {
        if runs_a_program(name) {
            Self::default()
        } else {
            Self {
                cpu: DEFAULT_BUILTIN_CPU,
                memory_mb: DEFAULT_BUILTIN_MEMORY_MB,
                gpu: None,
            }
        }
    }
}

impl Default for Resources {
    /// A program's defaults, the larger ones ([`Resources::for_kind`] tells the kinds
    /// apart).
    fn default() -> Self {
        Self {
            cpu: DEFAULT_CPU,
            memory_mb: DEFAULT_MEMORY_MB,
            gpu: None,
        }
    }
}

/// GPUs one PE needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuRequest {
    /// Number of GPU slices.
    pub count: u32,
    /// Memory per slice in MiB; each slice lands on exactly one device.
    pub memory_mb: u64,
    /// Device vendor.
    #[serde(default)]
    pub vendor: Vendor,
    /// Pool scenario the devices must come from.
    #[serde(default)]
    pub scenario: Scenario,
}

/// Accelerator vendor.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    /// NVIDIA (discovered through NVML).
    #[default]
    Nvidia,
    /// AMD.
    Amd,
    /// Huawei Ascend.
    Ascend,
    /// Intel.
    Intel,
    /// Any vendor will do.
    Any,
}

/// Names accepted for [`Vendor`].
pub const VENDORS: &[(&str, Vendor)] = &[
    ("nvidia", Vendor::Nvidia),
    ("amd", Vendor::Amd),
    ("ascend", Vendor::Ascend),
    ("intel", Vendor::Intel),
    ("any", Vendor::Any),
];

/// Resource pool scenario.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Long-running training jobs.
    Training,
    /// Latency-sensitive inference.
    Inference,
    /// Anything else.
    #[default]
    General,
}

/// Names accepted for [`Scenario`].
pub const SCENARIOS: &[(&str, Scenario)] = &[
    ("training", Scenario::Training),
    ("inference", Scenario::Inference),
    ("general", Scenario::General),
];

/// The largest memory of any accelerator we know of (AMD MI325X, 256 GiB), in MiB.
/// A request above it can never be placed anywhere.
pub const MAX_KNOWN_GPU_MEMORY_MB: u64 = 256 * 1024;

/// An edge of the DAG.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// Producing operator.
    pub from: String,
    /// Consuming operator.
    pub to: String,
    /// How records of each producer PE are spread over the consumer PEs.
    #[serde(default)]
    pub partitioning: Partitioning,
}

impl StreamSpec {
    /// The stream's identity.
    pub fn key(&self) -> StreamKey {
        StreamKey {
            from: self.from.as_str().into(),
            to: self.to.as_str().into(),
        }
    }
}

/// A stream's identity: at most one stream joins two operators.
///
/// Shared strings: a physical model clones a key into every channel and route.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamKey {
    /// Producing operator.
    pub from: Arc<str>,
    /// Consuming operator.
    pub to: Arc<str>,
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.from, self.to)
    }
}

/// How a stream spreads records from producer PEs over consumer PEs.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Partitioning {
    /// Producer PE i sends to consumer PE i (equal parallelism required).
    #[default]
    Forward,
    /// Each producer PE cycles over all consumer PEs.
    RoundRobin,
    /// By hash of a field (`key` empty: the record key), through key groups.
    Hash {
        /// Field hashed; empty means the record key.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        key: String,
    },
    /// Every consumer PE gets every record.
    Broadcast,
}

impl fmt::Display for Partitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Forward => f.write_str("forward"),
            Self::RoundRobin => f.write_str("round_robin"),
            Self::Hash { key } if key.is_empty() => f.write_str("hash(key)"),
            Self::Hash { key } => write!(f, "hash({key})"),
            Self::Broadcast => f.write_str("broadcast"),
        }
    }
}
