//! `weirctl images`: the container images each worker holds, as the workers report
//! them to the masters (placement puts a container PE only where its image is).

use crate::online::{list_workers, Conn};
use serde_json::{json, Value};
use weir_proto::v1 as pb;

/// Lists every worker's images, or one worker's.
pub async fn images(c: &Conn, worker: Option<&str>) -> anyhow::Result<()> {
    let r = list_workers(c).await?;
    let workers: Vec<&pb::WorkerView> = r
        .workers
        .iter()
        .filter(|w| worker.is_none_or(|id| w.worker_id == id))
        .collect();
    if let Some(id) = worker.filter(|_| workers.is_empty()) {
        anyhow::bail!("no worker {id:?} (`weirctl workers` lists them)");
    }
    c.print(text(&workers), to_json(&workers));
    Ok(())
}

fn held(w: &pb::WorkerView) -> &[pb::DockerImage] {
    w.resources.as_ref().map_or(&[], |r| r.images.as_slice())
}

/// One row per tag (an untagged image gets one row, `<none>`), as `docker images`.
fn text(workers: &[&pb::WorkerView]) -> String {
    let mut out = format!("{:16} {:48} {:12} {:>10}", "WORKER", "IMAGE", "ID", "SIZE");
    for w in workers {
        for i in held(w) {
            let none = ["<none>".to_string()];
            let tags = if i.tags.is_empty() {
                &none[..]
            } else {
                &i.tags[..]
            };
            for t in tags {
                out.push_str(&format!(
                    "\n{:16} {:48} {:12} {:>10}",
                    w.worker_id,
                    t,
                    short_id(&i.id),
                    size(i.size_bytes)
                ));
            }
        }
    }
    for w in workers {
        let pulls = w
            .resources
            .as_ref()
            .map_or(&[][..], |r| &r.pull_registries[..]);
        if !pulls.is_empty() {
            out.push_str(&format!(
                "\n{} pulls absent images from: {}",
                w.worker_id,
                pulls.join(", ")
            ));
        }
    }
    out
}

fn to_json(workers: &[&pb::WorkerView]) -> Value {
    json!(workers
        .iter()
        .flat_map(|w| held(w).iter().map(|i| json!({
            "worker": w.worker_id, "id": i.id, "tags": i.tags, "digests": i.digests,
            "size_bytes": i.size_bytes,
        })))
        .collect::<Vec<_>>())
}

/// The id as `docker images` shows it: 12 hex digits, no algorithm.
fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// Bytes in decimal units, as Docker prints sizes.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes}B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, images: Vec<pb::DockerImage>) -> pb::WorkerView {
        pb::WorkerView {
            worker_id: id.into(),
            resources: Some(pb::WorkerResources {
                images,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn one_row_per_tag_with_short_ids_and_sizes() {
        let id = "sha256:4f2a3b1c9d8e7f60112233445566778899aabbccddeeff001122334455667788";
        let w1 = view(
            "w1",
            vec![pb::DockerImage {
                id: id.into(),
                tags: vec!["acme/app:1".into(), "acme/app:latest".into()],
                size_bytes: 12_345_678,
                ..Default::default()
            }],
        );
        let w2 = view(
            "w2",
            vec![pb::DockerImage {
                id: "sha256:00ff".into(),
                size_bytes: 12,
                ..Default::default()
            }],
        );
        let t = text(&[&w1, &w2]);
        let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["WORKER", "IMAGE", "ID", "SIZE"]);
        assert_eq!(rows[1], ["w1", "acme/app:1", "4f2a3b1c9d8e", "12.3MB"]);
        assert_eq!(rows[2], ["w1", "acme/app:latest", "4f2a3b1c9d8e", "12.3MB"]);
        assert_eq!(rows[3], ["w2", "<none>", "00ff", "12B"]);
        let j = to_json(&[&w1, &w2]);
        assert_eq!(j.as_array().unwrap().len(), 2);
        assert_eq!(j[0]["id"], id);
        assert_eq!(j[1]["worker"], "w2");
        assert_eq!(size(1_500), "1.5kB");
        assert_eq!(size(2_000_000_000), "2.0GB");
    }

    #[test]
    fn workers_that_pull_say_from_where() {
        let mut w = view("w1", Vec::new());
        if let Some(r) = w.resources.as_mut() {
            r.pull_registries = vec!["127.0.0.1:5000".into(), "registry.local".into()];
        }
        let t = text(&[&w, &view("w2", Vec::new())]);
        assert_eq!(
            t.lines().skip(1).collect::<Vec<_>>(),
            ["w1 pulls absent images from: 127.0.0.1:5000, registry.local"]
        );
    }
}
