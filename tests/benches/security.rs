//! What mutual TLS costs, measured the way users run Weir: the release `weir-master`
//! and two `weir-worker` processes on loopback, once with `--insecure` and once with
//! certificates from `weirctl certs init`'s CA (every link TLS: client, control, data
//! plane). The app: `source.generator` (parallelism 2, 4 M records of about 100 bytes)
//! -> `key_by` (2) -> hash -> `sink.null` (2), so channels cross between the workers;
//! wall time from submit to finished, records/s, and TLS as a ratio of plain TCP in
//! the same run. Also the cost of checking a signed spec (Ed25519 verify, in-process).
//!
//! ```sh
//! cargo build --release -p weir-master -p weir-worker
//! cargo bench -p weir-tests --bench security
//! ```

use std::path::Path;
use std::time::{Duration, Instant};
use weir_proto::v1 as pb;
use weir_security::ca::DevCa;
use weir_security::{Principal, Security, ServerRole, TlsFiles};

const RECORDS: u64 = 4_000_000;

fn tls_args(certs: Option<&Path>, stem: &str) -> Vec<String> {
    match certs {
        None => vec!["--insecure".into()],
        Some(d) => {
            let f = TlsFiles::in_dir(d, stem);
            vec![
                "--ca".into(),
                f.ca.display().to_string(),
                "--cert".into(),
                f.cert.display().to_string(),
                "--key".into(),
                f.key.display().to_string(),
            ]
        }
    }
}

const SPEC: &str = "name: spread\ntenant: bench\noperators:\n  - {name: gen, kind: source.generator, parallelism: 2, params: {count: RECORDS, keys: 1000, payload_bytes: 60}}\n  - {name: by-key, kind: key_by, parallelism: 2, params: {field: key}}\n  - {name: out, kind: sink.null, parallelism: 2}\nstreams:\n  - {from: gen, to: by-key, partitioning: round_robin}\n  - {from: by-key, to: out, partitioning: hash}\n";

/// One run: a master and two workers, plain or TLS; returns (seconds, PEs per worker).
async fn run(certs: Option<&Path>) -> (f64, Vec<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let mport = weir_tests::free_port();
    let master_addr = format!("127.0.0.1:{mport}");
    let mut procs = vec![
        tokio::process::Command::new(weir_tests::release_binary("weir-master"))
            .args(["--dev", "--listen", &master_addr, "--data-dir"])
            .arg(dir.path().join("m"))
            .args(tls_args(certs, "master-1"))
            .env("RUST_LOG", "error")
            .kill_on_drop(true)
            .spawn()
            .unwrap(),
    ];
    for w in ["w1", "w2"] {
        procs.push(
            tokio::process::Command::new(weir_tests::release_binary("weir-worker"))
                .args(["--id", w, "--master", &master_addr, "--no-nvml"])
                .args([
                    "--control-address",
                    &format!("127.0.0.1:{}", weir_tests::free_port()),
                ])
                .args([
                    "--data-address",
                    &format!("127.0.0.1:{}", weir_tests::free_port()),
                ])
                .arg("--data-dir")
                .arg(dir.path().join(w))
                .args(tls_args(certs, &format!("worker-{w}")))
                .env("RUST_LOG", "error")
                .kill_on_drop(true)
                .spawn()
                .unwrap(),
        );
    }
    let admin = match certs {
        None => Security::Off,
        Some(d) => Security::load(Some(&TlsFiles::in_dir(d, "admin-ops"))).unwrap(),
    };
    let client = weir_tests::eventually_within("two workers", Duration::from_secs(60), || {
        let ep = admin.endpoint(&master_addr, ServerRole::Master).unwrap();
        async move {
            let mut c = pb::weir_client::WeirClient::new(ep.connect().await.ok()?);
            let w = c.list_workers(pb::ListWorkersRequest {}).await.ok()?;
            (w.into_inner().workers.len() == 2).then_some(c)
        }
    })
    .await;
    let mut c = client.clone();
    if certs.is_some() {
        c.put_tenant(pb::PutTenantRequest {
            tenant: "bench".into(),
            policy: Some(pb::TenantPolicy {
                require_signature: false,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    }
    let started = Instant::now();
    c.submit_app(weir_tests::submit_yaml(
        SPEC.replace("RECORDS", &RECORDS.to_string()),
    ))
    .await
    .unwrap();
    let d = weir_tests::eventually_within("the app finishes", Duration::from_secs(600), || {
        let mut c = c.clone();
        async move {
            let d = weir_tests::app_detail(&mut c, "spread").await?;
            (d.summary.as_ref()?.state == pb::AppState::Finished as i32).then_some(d)
        }
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let per = ["w1", "w2"]
        .iter()
        .map(|w| d.pes.iter().filter(|p| p.worker_id == *w).count())
        .collect();
    for mut p in procs {
        let _ = p.start_kill();
        let _ = p.wait().await;
    }
    (secs, per)
}

fn verify_cost() {
    let (signer, _) = weir_security::sign::Signer::generate().unwrap();
    let spec = SPEC.repeat(10);
    let sig = signer.sign(&spec);
    let n = 20_000;
    let start = Instant::now();
    for _ in 0..n {
        assert!(weir_security::sign::verify(
            signer.public_key(),
            &spec,
            &sig
        ));
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "signature check of a {} B spec: {us:.1} us per submit (Ed25519 verify, in-process)",
        spec.len()
    );
}

async fn bench() {
    let certs = tempfile::tempdir().unwrap();
    DevCa::generate("bench")
        .unwrap()
        .write(
            certs.path(),
            &[
                Principal::Master(1),
                Principal::Worker("w1".into()),
                Principal::Worker("w2".into()),
                Principal::Admin("ops".into()),
            ],
        )
        .unwrap();
    println!(
        "weir-master --dev + two weir-worker (release processes): generator (2 x {}) -> key_by (2) -> hash -> sink.null (2), submit to finished",
        RECORDS / 2
    );
    println!(
        "{:<28} {:>8} {:>12} {:>10}  PEs on w1/w2",
        "links", "seconds", "records/s", "vs plain"
    );
    for round in 1..=2 {
        let (plain, p1) = run(None).await;
        let (tls, p2) = run(Some(certs.path())).await;
        let (rp, rt) = (RECORDS as f64 / plain, RECORDS as f64 / tls);
        println!(
            "{:<28} {plain:>8.2} {rp:>12.0} {:>9.2}x  {p1:?}",
            format!("plain TCP (run {round})"),
            1.0
        );
        println!(
            "{:<28} {tls:>8.2} {rt:>12.0} {:>9.2}x  {p2:?}",
            format!("mutual TLS (run {round})"),
            rt / rp
        );
    }
    verify_cost();
}

fn main() {
    weir_tests::bench_main("security", bench);
}
