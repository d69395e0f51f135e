//! Why a container PE's configuration cannot be built.

/// What stops a PE from becoming a container. Each names the PE, so the master's
/// report of a failed deploy says which one and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A field of the PE's identity is empty: its labels could not tell it apart, and
    /// orphan clean-up would match containers it should not.
    #[error("PE {pe:?}: its {field} is empty")]
    MissingIdentity {
        /// The PE.
        pe: String,
        /// Which field (`cluster id`, `worker id`, `app`, `PE id`).
        field: &'static str,
    },
    /// The CPU request is not a positive, finite number of cores.
    #[error("PE {pe}: cpu {cpu} is not a positive number of cores")]
    Cpu {
        /// The PE.
        pe: String,
        /// The request.
        cpu: f64,
    },
    /// The memory request is zero or too large for Docker's limit (bytes in an `i64`).
    #[error("PE {pe}: memory_mb {memory_mb} cannot be a container's memory limit")]
    Memory {
        /// The PE.
        pe: String,
        /// The request.
        memory_mb: u64,
    },
    /// The number of GPUs given is not the number of slices the spec asks for.
    #[error("PE {pe}: asks for {requested} GPU slice(s) but was given {allocated}")]
    GpuCount {
        /// The PE.
        pe: String,
        /// Slices in the spec (0 without a GPU request).
        requested: u32,
        /// UUIDs allocated.
        allocated: usize,
    },
    /// A GPU of a vendor other than NVIDIA, with no device nodes declared for it on
    /// this worker: the container could not reach it.
    #[error(
        "PE {pe}: GPU {uuid} ({vendor}) has no device nodes declared on this worker, \
         so a container cannot be given it"
    )]
    NoDeviceNodes {
        /// The PE.
        pe: String,
        /// The device.
        uuid: String,
        /// Its vendor.
        vendor: String,
    },
    /// A declared device node that is not a plain path under `/dev/`.
    #[error("PE {pe}: device node {path:?} of GPU {uuid} is not a path under /dev/")]
    DeviceNode {
        /// The PE.
        pe: String,
        /// The device.
        uuid: String,
        /// The declared node.
        path: String,
    },
    /// A tenant name that cannot name a Docker network.
    #[error(
        "PE {pe}: tenant {tenant:?} cannot name a network (it must match [a-z][a-z0-9-]{{0,62}})"
    )]
    Tenant {
        /// The PE.
        pe: String,
        /// The tenant.
        tenant: String,
    },
}
