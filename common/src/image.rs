//! Container images as workers report them, and how an operator's image reference
//! matches them.
//!
//! A worker lists the images its Docker Engine holds (id, `repo:tag`s, `repo@digest`s,
//! size) and reports them; placement puts a `kind: container` PE only on a worker that
//! holds its image. Matching is pure and follows Docker's own reference rules, so what
//! `docker run REF` would find locally is what placement finds:
//!
//! - `sha256:<hex>` names an image id: the full id, or a prefix of at least
//!   [`MIN_ID_PREFIX`] hex digits (as `docker images` shows 12).
//! - `name@sha256:<hex>` names a repo digest.
//! - `name:tag` names a tag; `name` alone means `name:latest` (Docker's default tag).
//! - Names are compared in their familiar form: `docker.io/library/alpine`,
//!   `library/alpine` and `alpine` are the same repository, as are
//!   `docker.io/acme/app` and `acme/app`; a registry host (`registry:5000/app`) stays.
//!
//! Everything a worker reports is bounded ([`bound`]) before it is sent and again
//! before the master stores it in Raft, so a host with many images cannot bloat
//! heartbeats or the log.

use serde::{Deserialize, Serialize};

/// Most images one worker reports.
pub const MAX_IMAGES: usize = 1_000;
/// Most tags (and, separately, digests) reported per image.
pub const MAX_REFS_PER_IMAGE: usize = 16;
/// Longest tag, digest or id reported, bytes. Longer ones are left out rather than
/// cut: a cut reference could match an image it does not name.
pub const MAX_REF_LEN: usize = 256;
/// Most bytes of references (ids, tags, digests) one worker reports in all.
pub const MAX_TOTAL_BYTES: usize = 256 * 1024;
/// Shortest id prefix (hex digits after `sha256:`) accepted as an image reference.
pub const MIN_ID_PREFIX: usize = 12;

/// One image a worker holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Content id, `sha256:<64 hex>`.
    pub id: String,
    /// `repo:tag` names, as Docker lists them (`<none>:<none>` left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `repo@sha256:...` digests (images pulled from or pushed to a registry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digests: Vec<String>,
    /// Size on disk, bytes.
    #[serde(default)]
    pub size_bytes: u64,
}

/// An image reference, normalised for comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// An image id or id prefix: `sha256:` and lower-case hex digits.
    Id(String),
    /// A repository (familiar form) and tag.
    Tag {
        /// Repository, e.g. `alpine` or `registry:5000/team/app`.
        name: String,
        /// Tag; `latest` when the reference had none.
        tag: String,
    },
    /// A repository (familiar form) and content digest.
    Digest {
        /// Repository.
        name: String,
        /// `sha256:<hex>`.
        digest: String,
    },
}

impl ImageRef {
    /// Parses a reference as `docker run` reads it (see the module docs).
    pub fn parse(reference: &str) -> Self {
        let r = reference.trim();
        if let Some(hex) = r.strip_prefix("sha256:") {
            return Self::Id(format!("sha256:{}", hex.to_ascii_lowercase()));
        }
        if let Some((name, digest)) = r.split_once('@') {
            return Self::Digest {
                name: familiar(name),
                digest: digest.to_ascii_lowercase(),
            };
        }
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let slash = r.rfind('/').map_or(0, |i| i + 1);
        match r[slash..].rfind(':') {
            Some(i) => Self::Tag {
                name: familiar(&r[..slash + i]),
                tag: r[slash + i + 1..].to_string(),
            },
            None => Self::Tag {
                name: familiar(r),
                tag: "latest".into(),
            },
        }
    }

    /// Whether `image` is the image this reference names.
    pub fn matches(&self, image: &ImageInfo) -> bool {
        match self {
            Self::Id(id) => {
                image.id == *id
                    || (id.len() >= "sha256:".len() + MIN_ID_PREFIX && image.id.starts_with(id))
            }
            Self::Tag { .. } => image.tags.iter().any(|t| Self::parse(t) == *self),
            Self::Digest { .. } => image.digests.iter().any(|d| Self::parse(d) == *self),
        }
    }
}

/// Whether any of `images` is the one `reference` names.
pub fn holds(images: &[ImageInfo], reference: &str) -> bool {
    let r = ImageRef::parse(reference);
    images.iter().any(|i| r.matches(i))
}

/// Most registries one worker may pull from.
pub const MAX_REGISTRIES: usize = 16;
/// Longest registry name (`host[:port]`), bytes: a DNS name's limit.
pub const MAX_REGISTRY_LEN: usize = 255;
/// Docker Hub, the registry of a reference that names no host.
pub const DOCKER_HUB: &str = "docker.io";

/// The registry an image reference would be pulled from (`host[:port]`, lower case),
/// by Docker's rule: a first path component with a `.` or a `:`, or `localhost`, is a
/// host; otherwise the image is on Docker Hub. `None` for an image id, which no
/// registry serves.
pub fn registry_of(reference: &str) -> Option<String> {
    let r = reference.trim();
    if r.starts_with("sha256:") {
        return None;
    }
    let name = r.split('@').next().unwrap_or(r);
    match name.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            Some(match first.to_ascii_lowercase().as_str() {
                "index.docker.io" => DOCKER_HUB.to_string(),
                h => h.to_string(),
            })
        }
        _ => Some(DOCKER_HUB.to_string()),
    }
}

/// Whether a worker that pulls from `registries` can fetch `reference`.
pub fn pullable(registries: &[String], reference: &str) -> bool {
    !registries.is_empty()
        && registry_of(reference)
            .is_some_and(|r| registries.iter().any(|x| x.eq_ignore_ascii_case(&r)))
}

/// How a worker could come to run an image; ordered from worst to best, so placement
/// takes the workers that hold it before those that would pull it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Neither held nor pullable.
    None,
    /// Not held, but on a registry the worker pulls from.
    Pull,
    /// Held by the worker's Docker Engine.
    Held,
}

/// How a worker holding `images` and pulling from `registries` could run `reference`.
pub fn access(images: &[ImageInfo], registries: &[String], reference: &str) -> Access {
    if holds(images, reference) {
        Access::Held
    } else if pullable(registries, reference) {
        Access::Pull
    } else {
        Access::None
    }
}

/// Checks a worker's `--pull-from` list: at most [`MAX_REGISTRIES`], each a
/// `host[:port]` of at most [`MAX_REGISTRY_LEN`] bytes (letters, digits, `.`, `-`,
/// `:`, `[`, `]`). The error names the entry and the rule.
pub fn check_registries(registries: &[String]) -> Result<(), String> {
    if registries.len() > MAX_REGISTRIES {
        return Err(format!(
            "{} registries; a worker may pull from at most {MAX_REGISTRIES}",
            registries.len()
        ));
    }
    for r in registries {
        if r.is_empty() || r.len() > MAX_REGISTRY_LEN {
            return Err(format!(
                "registry {r:?}: must be 1 to {MAX_REGISTRY_LEN} bytes"
            ));
        }
        if let Some(c) = r
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')))
        {
            return Err(format!(
                "registry {r:?}: {c:?} is not allowed (a registry is host[:port], e.g. registry.local:5000)"
            ));
        }
    }
    Ok(())
}

/// A repository name in Docker's familiar form: Docker Hub's host and its `library/`
/// namespace left out.
fn familiar(name: &str) -> String {
    let n = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .unwrap_or(name);
    match n.strip_prefix("library/") {
        Some(rest) if !rest.contains('/') => rest.to_string(),
        _ => n.to_string(),
    }
}

/// What [`bound`] kept, and how much it left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bounded {
    /// The images kept, sorted (tagged images first, then by id), each with its
    /// references sorted.
    pub images: Vec<ImageInfo>,
    /// Images left out (over [`MAX_IMAGES`] or [`MAX_TOTAL_BYTES`], or with an id
    /// over [`MAX_REF_LEN`]).
    pub images_dropped: usize,
    /// Tags and digests left out of kept images.
    pub refs_dropped: usize,
}

/// Sorts `images` into a stable order and keeps what fits the bounds. Tagged images
/// come first: an untagged (dangling) image can only be named by its id, so it is the
/// least useful to placement.
pub fn bound(mut images: Vec<ImageInfo>) -> Bounded {
    let mut out = Bounded::default();
    for i in &mut images {
        let before = i.tags.len() + i.digests.len();
        for refs in [&mut i.tags, &mut i.digests] {
            refs.retain(|r| r.len() <= MAX_REF_LEN && !r.contains("<none>"));
            refs.sort();
            refs.dedup();
            refs.truncate(MAX_REFS_PER_IMAGE);
        }
        out.refs_dropped += before - i.tags.len() - i.digests.len();
    }
    images.sort_by(|a, b| (a.tags.is_empty(), &a.id).cmp(&(b.tags.is_empty(), &b.id)));
    images.dedup_by(|a, b| a.id == b.id);
    let mut bytes = 0;
    for i in images {
        let size = i.id.len()
            + i.tags
                .iter()
                .chain(&i.digests)
                .map(String::len)
                .sum::<usize>();
        if i.id.len() > MAX_REF_LEN
            || out.images.len() >= MAX_IMAGES
            || bytes + size > MAX_TOTAL_BYTES
        {
            out.images_dropped += 1;
            continue;
        }
        bytes += size;
        out.images.push(i);
    }
    out
}

#[cfg(test)]
mod tests;
