//! A container registry for the tests: the Docker Registry HTTP API v2 subset a
//! `docker pull` uses (`/v2/`, manifests, blobs), over plain HTTP on loopback, which
//! the Docker Engine accepts for 127.0.0.0/8 without TLS. No registry image can be
//! fetched on the test machines, so this one serves images made from a local one:
//! [`Image::from_local`] takes `docker save`'s layers and config and adds one layer of
//! its own, so the served image is one the engine does not hold (its id differs) and
//! its pull moves real bytes.
//!
//! The added layer's download can be held back ([`Registry::release`]), so a test sees
//! the pull in progress for as long as it needs to, without timing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPE: &str = "application/vnd.docker.container.image.v1+json";
// Layers are served as `docker save` wrote them, uncompressed: the engine detects
// the compression of what it downloads, and an uncompressed layer's digest is its
// diff id.
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An image as a registry serves it: a manifest and the blobs it names.
pub struct Image {
    manifest: Vec<u8>,
    blobs: HashMap<String, Vec<u8>>,
    /// The digest of the layer this harness added.
    added: String,
}

impl Image {
    /// `local` (an image the engine holds) plus a layer holding one file,
    /// `/weir-pulled`, of `bytes` bytes made unique to this process and moment.
    pub fn from_local(local: &str, bytes: usize) -> Self {
        let out = Command::new("docker")
            .args(["save", local])
            .output()
            .expect("docker save runs");
        assert!(
            out.status.success(),
            "docker save {local}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let files = untar(&out.stdout);
        let file = |name: &str| -> &Vec<u8> {
            files
                .get(name)
                .unwrap_or_else(|| panic!("docker save of {local} has no {name}"))
        };
        let saved: serde_json::Value =
            serde_json::from_slice(file("manifest.json")).expect("manifest.json is JSON");
        let entry = &saved[0];
        let mut config: serde_json::Value =
            serde_json::from_slice(file(entry["Config"].as_str().expect("Config")))
                .expect("the config is JSON");
        let mut layers: Vec<Vec<u8>> = entry["Layers"]
            .as_array()
            .expect("Layers")
            .iter()
            .map(|l| file(l.as_str().expect("a layer path")).clone())
            .collect();
        let mut content = format!(
            "pulled by weir's tests, process {}, at {:?}\n",
            std::process::id(),
            std::time::SystemTime::now()
        )
        .into_bytes();
        content.resize(bytes.max(content.len()), b'w');
        let added_layer = tar_of_one_file("weir-pulled", &content);
        let added = digest(&added_layer);
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .expect("rootfs.diff_ids")
            .push(added.clone().into());
        if let Some(h) = config["history"].as_array_mut() {
            h.push(serde_json::json!({"created_by": "weir tests: the pulled layer"}));
        }
        layers.push(added_layer);
        let config = serde_json::to_vec(&config).expect("the config serialises");
        let mut blobs = HashMap::new();
        let config_digest = digest(&config);
        let layer_refs: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| serde_json::json!({"mediaType": LAYER_TYPE, "size": l.len(), "digest": digest(l)}))
            .collect();
        for l in layers {
            blobs.insert(digest(&l), l);
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": config.len(), "digest": config_digest},
            "layers": layer_refs,
        }))
        .expect("the manifest serialises");
        blobs.insert(config_digest, config);
        Self {
            manifest,
            blobs,
            added,
        }
    }
}

/// A registry serving images on loopback until dropped.
pub struct Registry {
    addr: SocketAddr,
    release: watch::Sender<bool>,
    added_served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

struct Served {
    /// (repository, tag or manifest digest) -> the manifest.
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    /// Layers held back until released.
    held: Vec<String>,
}

impl Registry {
    /// Serves `image` as `repo:tag`, holding back its added layer until
    /// [`release`](Self::release).
    pub async fn serve(repo: &str, tag: &str, image: Image) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let manifest_digest = digest(&image.manifest);
        let mut manifests = HashMap::new();
        for r in [tag.to_string(), manifest_digest.clone()] {
            manifests.insert(
                (repo.to_string(), r),
                (manifest_digest.clone(), image.manifest.clone()),
            );
        }
        let served = Arc::new(Served {
            manifests,
            blobs: image.blobs,
            held: vec![image.added],
        });
        let (release, released) = watch::channel(false);
        let added_served = Arc::new(AtomicU64::new(0));
        let counter = added_served.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (served, released, counter) =
                    (served.clone(), released.clone(), counter.clone());
                tokio::spawn(async move {
                    let _ = answer(conn, &served, released, &counter).await;
                });
            }
        });
        Self {
            addr,
            release,
            added_served,
            task,
        }
    }

    /// `host:port`, as an image reference begins.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Lets the held-back layer go.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }

    /// How many times the added layer was served whole.
    pub fn added_layer_served(&self) -> u64 {
        self.added_served.load(Ordering::SeqCst)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers one request, then closes the connection.
async fn answer(
    mut conn: TcpStream,
    served: &Served,
    mut released: watch::Receiver<bool>,
    counter: &AtomicU64,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        // A TLS ClientHello: the engine tries HTTPS first and falls back to plain
        // HTTP on loopback once this connection closes.
        if head[0] == 0x16 {
            return Ok(());
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    let (status, ctype, extra, body): (&str, &str, String, Vec<u8>) =
        if method != "GET" && method != "HEAD" {
            ("400 Bad Request", "text/plain", String::new(), Vec::new())
        } else if path == "/v2/" || path == "/v2" {
            ("200 OK", "application/json", String::new(), b"{}".to_vec())
        } else if let Some((repo, r)) = path
            .strip_prefix("/v2/")
            .and_then(|p| p.rsplit_once("/manifests/"))
        {
            match served.manifests.get(&(repo.to_string(), r.to_string())) {
                Some((d, m)) => (
                    "200 OK",
                    MANIFEST_TYPE,
                    format!("Docker-Content-Digest: {d}\r\n"),
                    m.clone(),
                ),
                None => not_found("MANIFEST_UNKNOWN"),
            }
        } else if let Some((_, d)) = path
            .strip_prefix("/v2/")
            .and_then(|p| p.rsplit_once("/blobs/"))
        {
            match served.blobs.get(d) {
                Some(b) => {
                    if served.held.iter().any(|h| h == d) && !head_only {
                        let _ = released.wait_for(|r| *r).await;
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    (
                        "200 OK",
                        "application/octet-stream",
                        format!("Docker-Content-Digest: {d}\r\n"),
                        b.clone(),
                    )
                }
                None => not_found("BLOB_UNKNOWN"),
            }
        } else {
            not_found("NAME_UNKNOWN")
        };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nDocker-Distribution-API-Version: registry/2.0\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    if !head_only {
        conn.write_all(&body).await?;
    }
    conn.shutdown().await
}

fn not_found(code: &str) -> (&'static str, &'static str, String, Vec<u8>) {
    (
        "404 Not Found",
        "application/json",
        String::new(),
        format!(r#"{{"errors":[{{"code":"{code}","message":"not here"}}]}}"#).into_bytes(),
    )
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The regular files of a tar archive by path (symbolic links resolved to the file
/// they name, as `docker save` links a layer shared between images).
fn untar(tar: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut files = HashMap::new();
    let mut links = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let h = &tar[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let text = |r: std::ops::Range<usize>| {
            let f = &h[r];
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let mut name = text(0..100);
        let prefix = text(345..500);
        if &h[257..262] == b"ustar" && !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
        let size = usize::from_str_radix(text(124..136).trim(), 8).unwrap_or(0);
        let data = &tar[at + 512..(at + 512 + size).min(tar.len())];
        match h[156] {
            b'0' | 0 => {
                files.insert(name, data.to_vec());
            }
            b'2' => {
                let dir = name.rsplit_once('/').map_or("", |(d, _)| d).to_string();
                let target = text(157..257);
                let target = match target.strip_prefix("../") {
                    Some(t) => t.to_string(),
                    None if dir.is_empty() => target,
                    None => format!("{dir}/{target}"),
                };
                links.push((name, target));
            }
            _ => {}
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    for (name, target) in links {
        if let Some(d) = files.get(&target).cloned() {
            files.insert(name, d);
        }
    }
    files
}

/// A tar archive of one regular file at the root.
fn tar_of_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, 0o644);
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, content.len() as u64);
    octal(&mut h, 136, 12, 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tar_written_here_reads_back() {
        let t = tar_of_one_file("weir-pulled", b"hello");
        assert_eq!(t.len() % 512, 0);
        assert_eq!(
            untar(&t).get("weir-pulled").map(Vec::as_slice),
            Some(&b"hello"[..])
        );
    }
}
