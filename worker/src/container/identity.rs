//! Who a container belongs to: its labels, its name, the identity a program sees,
//! and the filter that finds this worker's containers again after a restart.

use super::ConfigError;
use bollard::query_parameters::ListContainersOptions;
use std::collections::{BTreeMap, HashMap};
use weir_common::fingerprint::fnv1a64;

/// Label: the cluster id (two clusters may share one Docker Engine).
pub const LABEL_CLUSTER: &str = "weir.cluster";
/// Label: the app.
pub const LABEL_APP: &str = "weir.app";
/// Label: the PE id.
pub const LABEL_PE: &str = "weir.pe";
/// Label: the PE's recovery attempt.
pub const LABEL_ATTEMPT: &str = "weir.attempt";
/// Label: the worker that started the container (the one that removes it).
pub const LABEL_WORKER: &str = "weir.worker";

/// Environment variable naming the PE's app.
pub const APP_ENV: &str = "WEIR_APP";
/// Environment variable naming the app's tenant.
pub const TENANT_ENV: &str = "WEIR_TENANT";
/// Environment variable giving the PE's recovery attempt.
pub const ATTEMPT_ENV: &str = "WEIR_ATTEMPT";

/// Everything that names one container PE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeIdentity {
    /// The cluster's id.
    pub cluster: String,
    /// The id of the worker running the PE.
    pub worker: String,
    /// The app's tenant.
    pub tenant: String,
    /// The app.
    pub app: String,
    /// The PE id (`operator@revision#index`).
    pub pe: String,
    /// The PE's recovery attempt.
    pub attempt: u64,
}

impl PeIdentity {
    /// Refuses an identity with an empty part: an empty cluster or worker id would
    /// make this worker's orphan filter match every cluster's or worker's containers.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("cluster id", &self.cluster),
            ("worker id", &self.worker),
            ("app", &self.app),
            ("PE id", &self.pe),
        ] {
            if value.is_empty() {
                return Err(ConfigError::MissingIdentity {
                    pe: self.pe.clone(),
                    field,
                });
            }
        }
        Ok(())
    }

    /// The container's labels: enough to find it by cluster and worker (orphans) and
    /// to tell which PE and attempt it runs.
    pub fn labels(&self) -> HashMap<String, String> {
        [
            (LABEL_CLUSTER, self.cluster.clone()),
            (LABEL_APP, self.app.clone()),
            (LABEL_PE, self.pe.clone()),
            (LABEL_ATTEMPT, self.attempt.to_string()),
            (LABEL_WORKER, self.worker.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The container's name: `weir-<app>-<PE id>-a<attempt>-<hash>`, readable in
    /// `docker ps`. The hash covers the exact cluster, worker, app, PE id and attempt,
    /// so two clusters or workers sharing an engine never collide, and neither do ids
    /// that only differ in characters Docker refuses (replaced by `.`).
    pub fn container_name(&self) -> String {
        let exact = format!(
            "{}\0{}\0{}\0{}\0{}",
            self.cluster, self.worker, self.app, self.pe, self.attempt
        );
        format!(
            "weir-{}-{}-a{}-{:08x}",
            docker_safe(&self.app),
            docker_safe(&self.pe),
            self.attempt,
            fnv1a64(exact.as_bytes()) as u32
        )
    }

    /// The identity a program sees: its PE id (the name exec PEs get too), app,
    /// tenant and attempt.
    pub(crate) fn env(&self) -> BTreeMap<String, String> {
        [
            (crate::exec::PE_ID_ENV, self.pe.clone()),
            (APP_ENV, self.app.clone()),
            (TENANT_ENV, self.tenant.clone()),
            (ATTEMPT_ENV, self.attempt.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// `s` with every character a Docker name may not hold (`[a-zA-Z0-9_.-]`) replaced by
/// `.`, which no app or operator name contains, so a PE id's parts stay apart.
fn docker_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '.'
            }
        })
        .collect()
}

/// The `filters` of Docker's container list that find every container this worker
/// of this cluster started (Docker ANDs label filters), to remove at start-up the
/// ones a crash left behind.
pub fn orphan_filters(cluster: &str, worker: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_CLUSTER}={cluster}"),
            format!("{LABEL_WORKER}={worker}"),
        ],
    )])
}

/// The container-list query for [`orphan_filters`], stopped containers included
/// (a container that never started or already exited is an orphan too).
pub fn orphan_list_options(cluster: &str, worker: &str) -> ListContainersOptions {
    ListContainersOptions {
        all: true,
        filters: Some(orphan_filters(cluster, worker)),
        ..Default::default()
    }
}
