//! The hardening of local exec programs, against real child processes: a clean
//! environment, a process group killed whole, resource limits.

use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use weir_common::record::{BatchBuilder, Value};
use weir_common::spec::{ExecParams, GpuRequest, PeProtocol, Resources};

fn params(command: &[&str]) -> ExecParams {
    ExecParams {
        command: command.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        protocol: PeProtocol::Lines,
    }
}

fn quick() -> ExecConfig {
    ExecConfig {
        batch_timeout: Duration::from_secs(20),
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..ExecConfig::default()
    }
}

fn one_record() -> weir_common::record::Batch {
    let mut b = BatchBuilder::default();
    b.push(1, 0, 0, b"k", [("n", &Value::I64(1))]).unwrap();
    b.finish()
}

/// Starts `launch` directly and returns everything the program writes to stdout.
async fn stdout_of(launch: LocalLaunch) -> String {
    let mut started = launch.launch("pe-hard", 0).await.unwrap();
    drop(started.stdin);
    let mut out = String::new();
    started.stdout.read_to_string(&mut out).await.unwrap();
    started.instance.stop(Duration::from_secs(5)).await;
    out
}

/// Whether `pid` is a live process (a zombie waiting for its reaper is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X') | None
        ),
        Err(_) => false,
    }
}

/// Waits up to 5 s for `pid` to be gone.
async fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The pids the program wrote to `file`, one a line, once there are `n` of them.
async fn pids(file: &Path, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.len() >= n && text.ends_with('\n') {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "no {n} pids in {file:?}: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A lines-mode program that starts a background `sleep` (in its process group,
/// its output away from the PE's pipes), records its pid in `$0`, then `then`.
fn with_grandchild(pid_file: &Path, then: &str) -> ExecParams {
    let script = format!("sleep 1000 >/dev/null 2>&1 </dev/null & echo $! >> \"$0\"; {then}");
    params(&["sh", "-c", &script, pid_file.to_str().unwrap()])
}

#[tokio::test]
async fn the_program_sees_only_the_specs_environment() {
    let mut p = params(&["env"]);
    p.env.insert("FROM_SPEC".into(), "yes".into());
    let out = stdout_of(LocalLaunch::new(p)).await;
    let env: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    let names: BTreeSet<&str> = env.keys().copied().collect();
    assert_eq!(
        names,
        BTreeSet::from(["FROM_SPEC", "PATH", PE_ID_ENV]),
        "{out}"
    );
    assert_eq!(env["FROM_SPEC"], "yes");
    assert_eq!(env[PE_ID_ENV], "pe-hard");
    assert_eq!(env["PATH"], CHILD_PATH);
    // The test runs with more than that (cargo's variables, HOME, ...): the check
    // above is about what the worker would have passed on.
    let worker: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k != "PATH")
        .collect();
    assert!(!worker.is_empty());
    for name in &worker {
        assert!(!env.contains_key(name.as_str()), "{name} leaked: {out}");
    }
}

#[tokio::test]
async fn a_bare_name_is_found_on_the_specs_path_and_that_path_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("weir-test-prog");
    std::fs::write(&program, "#!/bin/sh\nprintf '%s\\n' \"$PATH\"\n").unwrap();
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut p = params(&["weir-test-prog"]);
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    p.env.insert("PATH".into(), path.clone());
    assert_eq!(stdout_of(LocalLaunch::new(p)).await.trim_end(), path);
    // Not on the worker's PATH: not found, and the error says so.
    let err = ExecPe::start("pe-x", &params(&["weir-test-prog"]))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("weir-test-prog"), "{err}");
}

#[tokio::test]
async fn the_program_runs_under_its_limits() {
    let limits = ExecLimits {
        address_space: Some(512 << 20),
        open_files: 100,
    };
    let launch = LocalLaunch::new(params(&["cat", "/proc/self/limits"])).with_limits(limits);
    let out = stdout_of(launch).await;
    // `Max open files            100                  100                  files`
    let limit = |name: &str| -> (String, String) {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"));
        let mut words = line[name.len()..].split_whitespace();
        (
            words.next().unwrap().to_string(),
            words.next().unwrap().to_string(),
        )
    };
    assert_eq!(
        limit("Max core file size"),
        ("0".into(), "0".into()),
        "{out}"
    );
    assert_eq!(
        limit("Max open files"),
        ("100".into(), "100".into()),
        "{out}"
    );
    let bytes = (512u64 << 20).to_string();
    assert_eq!(limit("Max address space"), (bytes.clone(), bytes), "{out}");

    // The defaults: open files bounded, no address-space limit of Weir's.
    let out = stdout_of(LocalLaunch::new(params(&[
        "sh",
        "-c",
        "ulimit -c; ulimit -S -n; ulimit -H -n",
    ])))
    .await;
    let bound = MAX_OPEN_FILES.to_string();
    let worker_hard = std::fs::read_to_string("/proc/self/limits").unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    // Never above the worker's own hard limit (a tighter worker keeps its own).
    for got in &lines[1..] {
        let got: u64 = got.parse().unwrap();
        assert!(
            got <= MAX_OPEN_FILES,
            "{out} (bound {bound}, worker {worker_hard})"
        );
    }
}

#[test]
fn declared_memory_is_the_address_space_unless_the_pe_has_gpus() {
    let mut resources = Resources {
        memory_mb: 64,
        ..Resources::default()
    };
    assert_eq!(
        ExecLimits::for_resources(&resources),
        ExecLimits {
            address_space: Some(64 << 20),
            open_files: MAX_OPEN_FILES
        }
    );
    resources.gpu = Some(GpuRequest {
        count: 1,
        memory_mb: 1000,
        vendor: Default::default(),
        scenario: Default::default(),
    });
    assert_eq!(ExecLimits::for_resources(&resources).address_space, None);
}

#[tokio::test]
async fn a_program_over_its_memory_fails_to_allocate() {
    // 64 MiB of address space, and a program asking for 256 MiB at once.
    let limits = ExecLimits {
        address_space: Some(64 << 20),
        ..ExecLimits::default()
    };
    let script = "import sys\ntry:\n    b = bytearray(256 << 20)\n    print('allocated')\nexcept MemoryError:\n    print('refused')\n";
    let launch = LocalLaunch::new(params(&["python3", "-c", script])).with_limits(limits);
    assert_eq!(stdout_of(launch).await.trim_end(), "refused");
}

#[tokio::test]
async fn shutdown_kills_what_the_program_started() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pids");
    let mut pe = ExecPe::start_with("pe-g", &with_grandchild(&file, "exec cat"), quick())
        .await
        .unwrap();
    pe.process(&one_record()).await.unwrap();
    let [sleeper] = pids(&file, 1).await[..] else {
        panic!("one pid expected")
    };
    assert!(alive(sleeper));
    pe.shutdown().await;
    assert!(
        gone(sleeper).await,
        "background process {sleeper} outlived the PE"
    );
}

#[tokio::test]
async fn dropping_the_pe_kills_what_the_program_started() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pids");
    let mut pe = ExecPe::start_with("pe-g", &with_grandchild(&file, "exec cat"), quick())
        .await
        .unwrap();
    pe.process(&one_record()).await.unwrap();
    let [sleeper] = pids(&file, 1).await[..] else {
        panic!("one pid expected")
    };
    drop(pe);
    assert!(
        gone(sleeper).await,
        "background process {sleeper} outlived the PE"
    );
}

#[tokio::test]
async fn aborting_a_batch_kills_what_the_program_started() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pids");
    // Never answers: the batch is in flight when its task is aborted.
    let p = with_grandchild(&file, "exec sleep 1000");
    let mut pe = ExecPe::start_with("pe-g", &p, quick()).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = pe.process(&one_record()).await;
        pe
    });
    let [sleeper] = pids(&file, 1).await[..] else {
        panic!("one pid expected")
    };
    assert!(alive(sleeper));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(
        gone(sleeper).await,
        "background process {sleeper} outlived the PE"
    );
}

#[tokio::test]
async fn a_restart_kills_what_the_failed_instance_started() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pids");
    // The first instance starts its sleeper and fails; the second answers.
    let then = "if [ -e \"$0.once\" ]; then exec cat; fi; : > \"$0.once\"; exit 3";
    let mut pe = ExecPe::start_with("pe-g", &with_grandchild(&file, then), quick())
        .await
        .unwrap();
    pe.process(&one_record()).await.unwrap();
    assert_eq!(pe.restarts(), 1);
    let [first, second] = pids(&file, 2).await[..] else {
        panic!("two pids expected")
    };
    assert!(
        gone(first).await,
        "the failed instance's {first} survived the restart"
    );
    assert!(alive(second), "the running instance's {second} was killed");
    pe.shutdown().await;
    assert!(gone(second).await);
}

#[tokio::test]
async fn the_kernel_path_applies_declared_memory() {
    // What `Kernel::build` does for `kind: exec`: the launch carries the limits.
    let resources = Resources {
        memory_mb: 96,
        ..Resources::default()
    };
    let launch = LocalLaunch::new(params(&["sh", "-c", "exec cat"]))
        .with_limits(ExecLimits::for_resources(&resources));
    let mut pe = ExecPe::launch("pe-k", Arc::new(launch), quick())
        .await
        .unwrap();
    assert_eq!(pe.process(&one_record()).await.unwrap().len(), 1);
    pe.shutdown().await;
}
