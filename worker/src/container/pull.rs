//! Pulling a container PE's image from a registry before the PE starts: what to ask
//! the engine for, and the progress shown to users (pure; the engine part is
//! [`ContainerEngine::ensure_image`](super::ContainerEngine)).
//!
//! A worker pulls only from the registries it was given (`weir-worker --pull-from`),
//! only an image its engine does not hold, and only before the PE's first container
//! starts: the PE stays STARTING meanwhile, with the pull's progress as its message
//! (`weirctl get` shows it), and counts as started only once the image is there and
//! the program answered its handshake.

use bollard::models::CreateImageInfo;
use std::collections::BTreeMap;
use weir_common::image::ImageRef;

/// What Docker's image-create call takes to pull exactly `reference`: the repository
/// and its tag (or digest), read by the same rules as placement matches images
/// ([`ImageRef`]). Docker pulls every tag of a repository when the tag is empty, so
/// one is always given (`latest` where the reference has none). `None` for an image
/// id, which no registry serves, or an empty reference.
pub fn pull_request(reference: &str) -> Option<(String, String)> {
    match ImageRef::parse(reference) {
        ImageRef::Tag { name, .. } | ImageRef::Digest { name, .. } if name.is_empty() => None,
        ImageRef::Tag { name, tag } => Some((name, tag)),
        ImageRef::Digest { name, digest } => Some((name, digest)),
        ImageRef::Id(_) => None,
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Layer {
    current: u64,
    total: u64,
    done: bool,
}

/// The progress of one pull, from the engine's stream of status messages (one per
/// layer event: `Pulling fs layer`, `Downloading` with bytes, `Download complete`,
/// `Extracting`, `Pull complete`, `Already exists`).
#[derive(Clone, Debug)]
pub struct PullProgress {
    image: String,
    layers: BTreeMap<String, Layer>,
    last: String,
}

impl PullProgress {
    /// The progress of pulling `image`, before anything arrived.
    pub fn new(image: &str) -> Self {
        let mut p = Self {
            image: image.to_string(),
            layers: BTreeMap::new(),
            last: String::new(),
        };
        p.last = p.render();
        p
    }

    /// What the user sees now.
    pub fn message(&self) -> &str {
        &self.last
    }

    /// Takes one message of the engine's stream; returns the new text to show when it
    /// changed.
    pub fn update(&mut self, info: &CreateImageInfo) -> Option<&str> {
        let (Some(id), Some(status)) = (&info.id, &info.status) else {
            return None;
        };
        // Messages without a layer id (`Pulling from x`, `Digest: ...`) say nothing
        // about bytes; ids that are tags, not layers, come with `Pulling from`.
        if status.starts_with("Pulling from") {
            return None;
        }
        let layer = self.layers.entry(id.clone()).or_default();
        match status.as_str() {
            "Downloading" => {
                if let Some(d) = &info.progress_detail {
                    layer.current = d.current.and_then(|c| u64::try_from(c).ok()).unwrap_or(0);
                    if let Some(t) = d.total.and_then(|t| u64::try_from(t).ok()) {
                        layer.total = t;
                    }
                }
            }
            "Download complete" | "Verifying Checksum" => layer.current = layer.total,
            "Pull complete" | "Already exists" => {
                layer.current = layer.total;
                layer.done = true;
            }
            _ => {}
        }
        let now = self.render();
        if now == self.last {
            return None;
        }
        self.last = now;
        Some(&self.last)
    }

    fn render(&self) -> String {
        let done = self.layers.values().filter(|l| l.done).count();
        let current: u64 = self.layers.values().map(|l| l.current).sum();
        let total: u64 = self.layers.values().map(|l| l.total).sum();
        let mb = |b: u64| b as f64 / 1e6;
        if self.layers.is_empty() {
            return format!("pulling image {}", self.image);
        }
        format!(
            "pulling image {}: {done} of {} layers, {:.1} of {:.1} MB downloaded",
            self.image,
            self.layers.len(),
            mb(current),
            mb(total)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ProgressDetail;

    fn info(id: &str, status: &str, progress: Option<(i64, i64)>) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: progress.map(|(c, t)| ProgressDetail {
                current: Some(c),
                total: Some(t),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pull_always_names_one_tag_or_digest() {
        for (r, want) in [
            ("alpine", Some(("alpine", "latest"))),
            (
                "127.0.0.1:5000/weir/pe",
                Some(("127.0.0.1:5000/weir/pe", "latest")),
            ),
            (
                "127.0.0.1:5000/weir/pe:v1",
                Some(("127.0.0.1:5000/weir/pe", "v1")),
            ),
            (
                "reg.local/app@sha256:ab",
                Some(("reg.local/app", "sha256:ab")),
            ),
            ("sha256:0123456789ab", None),
            ("", None),
        ] {
            let got = pull_request(r);
            assert_eq!(
                got.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                want,
                "{r}"
            );
        }
    }

    #[test]
    fn progress_sums_the_layers_and_changes_only_when_the_text_does() {
        let mut p = PullProgress::new("r:5000/app:1");
        assert_eq!(p.message(), "pulling image r:5000/app:1");
        assert_eq!(p.update(&info("1", "Pulling from app", None)), None);
        assert!(p.update(&info("a", "Pulling fs layer", None)).is_some());
        p.update(&info("b", "Already exists", None));
        assert_eq!(
            p.update(&info("a", "Downloading", Some((1_000_000, 4_000_000)))),
            Some("pulling image r:5000/app:1: 1 of 2 layers, 1.0 of 4.0 MB downloaded")
        );
        // The same bytes again: nothing new to show.
        assert_eq!(
            p.update(&info("a", "Downloading", Some((1_000_000, 4_000_000)))),
            None
        );
        p.update(&info("a", "Download complete", None));
        assert_eq!(
            p.message(),
            "pulling image r:5000/app:1: 1 of 2 layers, 4.0 of 4.0 MB downloaded"
        );
        p.update(&info("a", "Extracting", Some((10, 4_000_000))));
        assert_eq!(
            p.update(&info("a", "Pull complete", None)),
            Some("pulling image r:5000/app:1: 2 of 2 layers, 4.0 of 4.0 MB downloaded")
        );
        // Negative figures from a confused engine are not believed.
        p.update(&info("c", "Downloading", Some((-5, -1))));
        assert!(
            p.message().contains("2 of 3 layers, 4.0 of 4.0 MB"),
            "{}",
            p.message()
        );
    }
}
