//! The container images this worker's Docker Engine holds, listed through bollard and
//! refreshed in the background so that registrations and heartbeats only read a cache.
//!
//! A worker without Docker (no socket, engine down) reports no images and says so once
//! in its log; it never fails for it. The list is bounded
//! ([`weir_common::image::bound`]) before it is reported. Heartbeats carry the list only
//! when it changed since the last heartbeat the master answered ([`attach`]), so the
//! master replicates it only on change.

use bollard::models::ImageSummary;
use bollard::query_parameters::ListImagesOptionsBuilder;
use bollard::Docker;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_common::image::{bound, ImageInfo};
use weir_proto::v1 as pb;

/// How often the list is refreshed. Images change when someone builds, pulls or
/// removes one: rare, and a placement that waits a few seconds for a new image is
/// cheap, while listing on every heartbeat would put Docker on its critical path.
pub const REFRESH: Duration = Duration::from_secs(10);

/// Longest a listing may take before it counts as failed (a hung engine must not
/// stall the refresher forever).
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the images could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// The Docker Engine could not be reached or refused the call.
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// The engine did not answer within the timeout.
    #[error("docker did not answer within {0:?}")]
    Timeout(Duration),
}

/// The images this worker holds, as last listed. `generation` increases whenever the
/// list changes, so the agent can tell whether the master already has it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Held {
    /// Bumped on every change.
    pub generation: u64,
    /// The images, bounded and sorted.
    pub images: Arc<Vec<pb::DockerImage>>,
}

/// A shared, cheaply cloned cache of the images held; empty until the first listing.
#[derive(Clone, Debug, Default)]
pub struct HeldImages {
    inner: Arc<Mutex<Held>>,
}

impl HeldImages {
    /// The images as last listed.
    pub fn get(&self) -> Held {
        self.inner.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// Replaces the list; bumps the generation only when it differs.
    pub fn set(&self, images: Vec<pb::DockerImage>) {
        if let Ok(mut h) = self.inner.lock() {
            if *h.images != images {
                h.generation += 1;
                h.images = Arc::new(images);
            }
        }
    }

    /// Lists now, then every `every` until `stop`; a failed listing empties the cache
    /// (a worker whose engine is gone cannot start containers from its images).
    pub fn spawn_refresh(
        &self,
        worker: String,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let held = self.clone();
        tokio::spawn(async move {
            let mut docker_ok = None;
            loop {
                match list_local().await {
                    Ok(images) => {
                        if docker_ok != Some(true) {
                            tracing::info!(worker = %worker, images = images.len(), "listing the Docker Engine's images");
                        }
                        docker_ok = Some(true);
                        held.set(images.iter().map(pb::DockerImage::from).collect());
                    }
                    Err(e) => {
                        // Once per outage, not every refresh.
                        if docker_ok != Some(false) {
                            tracing::info!(worker = %worker, reason = %e, "Docker unavailable: this worker reports no images");
                        }
                        docker_ok = Some(false);
                        held.set(Vec::new());
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    }
}

/// Lists the images of the local Docker Engine (`DOCKER_HOST` or the default socket),
/// bounded.
pub async fn list_local() -> Result<Vec<ImageInfo>, ImagesError> {
    let docker = Docker::connect_with_local_defaults()?;
    list(&docker).await
}

/// Lists the images `docker` holds, bounded.
pub async fn list(docker: &Docker) -> Result<Vec<ImageInfo>, ImagesError> {
    let opts = ListImagesOptionsBuilder::new().digests(true).build();
    let summaries = tokio::time::timeout(LIST_TIMEOUT, docker.list_images(Some(opts)))
        .await
        .map_err(|_| ImagesError::Timeout(LIST_TIMEOUT))??;
    let b = bound(summaries.into_iter().map(image_info).collect());
    if b.images_dropped + b.refs_dropped > 0 {
        tracing::debug!(
            images_dropped = b.images_dropped,
            refs_dropped = b.refs_dropped,
            "more images than a worker reports"
        );
    }
    Ok(b.images)
}

/// An image as Docker lists it, in the form workers report.
pub fn image_info(s: ImageSummary) -> ImageInfo {
    ImageInfo {
        id: s.id,
        tags: s.repo_tags,
        digests: s.repo_digests,
        size_bytes: u64::try_from(s.size).unwrap_or(0),
    }
}

/// Puts `held` into `resources`: the whole list, or, when the master already has
/// this generation (`sent`: the generation of the last heartbeat it answered), only
/// the flag saying so.
pub fn attach(resources: &mut pb::WorkerResources, held: &Held, sent: Option<u64>) {
    if sent == Some(held.generation) {
        resources.images_unchanged = true;
    } else {
        resources.images = held.images.to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(tag: &str) -> pb::DockerImage {
        pb::DockerImage {
            id: format!("sha256:{tag}"),
            tags: vec![tag.into()],
            ..Default::default()
        }
    }

    #[test]
    fn the_generation_moves_only_when_the_list_changes() {
        let h = HeldImages::default();
        assert_eq!(h.get().generation, 0);
        h.set(vec![img("a:1")]);
        h.set(vec![img("a:1")]);
        assert_eq!(h.get().generation, 1);
        h.set(vec![img("a:1"), img("b:1")]);
        assert_eq!(h.get().generation, 2);
        h.set(Vec::new());
        assert_eq!((h.get().generation, h.get().images.len()), (3, 0));
    }

    #[test]
    fn heartbeats_carry_the_list_until_the_master_has_this_generation() {
        let h = HeldImages::default();
        h.set(vec![img("a:1")]);
        let held = h.get();
        for sent in [None, Some(held.generation - 1)] {
            let mut r = pb::WorkerResources::default();
            attach(&mut r, &held, sent);
            assert_eq!((r.images.len(), r.images_unchanged), (1, false));
        }
        let mut r = pb::WorkerResources::default();
        attach(&mut r, &held, Some(held.generation));
        assert_eq!((r.images.len(), r.images_unchanged), (0, true));
    }

    #[test]
    fn docker_summaries_become_bounded_reports() {
        let s = ImageSummary {
            id: "sha256:ab".into(),
            repo_tags: vec!["<none>:<none>".into(), "a:1".into()],
            repo_digests: vec!["a@sha256:cd".into()],
            size: 2048,
            ..Default::default()
        };
        let b = bound(vec![image_info(s)]);
        assert_eq!(b.images[0].tags, ["a:1"]);
        assert_eq!(b.images[0].digests, ["a@sha256:cd"]);
        assert_eq!(b.images[0].size_bytes, 2048);
        let neg = ImageSummary {
            size: -1,
            ..Default::default()
        };
        assert_eq!(image_info(neg).size_bytes, 0);
    }
}
