//! weirctl's offline commands, run as a user runs them: the real binary, real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn weirctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weirctl"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_accepts_every_example() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    files.sort();
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let out = weirctl(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout)
            .lines()
            .filter(|l| l.contains(": ok (app"))
            .count(),
        files.len()
    );
}

#[test]
fn validate_rejects_every_bad_spec_with_its_paths() {
    let dir = root().join("tests/specs/bad");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let body = std::fs::read_to_string(&path).unwrap();
        let out = weirctl(&["validate", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{} accepted", path.display());
        let err = text(&out.stderr);
        for expect in body.lines().filter_map(|l| l.strip_prefix("# expect: ")) {
            assert!(
                err.contains(expect),
                "{}: {expect:?} not in\n{err}",
                path.display()
            );
        }
        n += 1;
    }
    assert!(n >= 15);
}

#[test]
fn validate_json_lists_problems_with_path_and_rule() {
    let out = weirctl(&[
        "validate",
        "--output",
        "json",
        "tests/specs/bad/many-problems.yaml",
        "examples/clickstream.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["files"][0]["valid"], false);
    assert_eq!(v["files"][1]["valid"], true);
    assert_eq!(v["files"][1]["pes"], 10);
    let problems = v["files"][0]["problems"].as_array().unwrap();
    assert!(problems.len() >= 4);
    assert!(problems
        .iter()
        .any(|p| p["path"] == "operators[0].params.rate" && p["rule"] == "must be > 0"));
}

#[test]
fn plan_prints_phases_and_untouched_pes() {
    let out = weirctl(&[
        "plan",
        "examples/fraud-scoring.yaml",
        "examples/fraud-scoring-v2.yaml",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    for needle in [
        "+ normalise",
        "^ spend",
        "rescaled",
        "Phase 1/3 prepare",
        "Phase 2/3 switch",
        "Phase 3/3 cleanup",
        "Untouched: 2 PE(s)",
    ] {
        assert!(s.contains(needle), "{needle:?} missing from\n{s}");
    }
}

#[test]
fn plan_json_is_the_structured_plan() {
    let out = weirctl(&[
        "plan",
        "-o",
        "json",
        "examples/clickstream.yaml",
        "examples/clickstream-v2.yaml",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases: Vec<&str> = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["prepare", "switch", "cleanup"]);
    assert_eq!(v["summary"]["pes_started"], 6);
    assert_eq!(v["summary"]["pes_stopped"], 4);
}

#[test]
fn plan_groups_by_worker_with_a_placement() {
    let dir = std::env::temp_dir().join(format!("weirctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Place every PE of both versions: old ones where they run, new ones where the
    // scheduler would put them.
    let ids = |f: &str| -> Vec<String> {
        let out = weirctl(&["plan", "-o", "json", f, f]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["untouched_pes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    let mut placement = serde_json::Map::new();
    for (i, pe) in ids("examples/fraud-scoring.yaml")
        .into_iter()
        .chain(ids("examples/fraud-scoring-v2.yaml"))
        .enumerate()
    {
        placement.insert(pe, format!("w{}", i % 2).into());
    }
    let file = dir.join("placement.json");
    std::fs::write(&file, serde_json::Value::Object(placement).to_string()).unwrap();
    let out = weirctl(&[
        "plan",
        "-o",
        "json",
        "--placement",
        file.to_str().unwrap(),
        "examples/fraud-scoring.yaml",
        "examples/fraud-scoring-v2.yaml",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for phase in v["phases"].as_array().unwrap() {
        for g in phase["groups"].as_array().unwrap() {
            let w = g["target"]["worker"]
                .as_str()
                .unwrap_or_else(|| panic!("not per worker: {g}"));
            assert!(w == "w0" || w == "w1");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plan_refuses_a_renamed_app_and_invalid_specs() {
    let out = weirctl(&[
        "plan",
        "examples/clickstream.yaml",
        "examples/fraud-scoring.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("name: an upgrade keeps the app name"));
    let out = weirctl(&[
        "plan",
        "examples/clickstream.yaml",
        "tests/specs/bad/cycle.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cycle: up -> mid -> up"));
}

#[test]
fn missing_files_and_bad_usage_fail_clearly() {
    let out = weirctl(&["validate", "no/such/file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read no/such/file.yaml"));
    let out = weirctl(&["plan", "only-one.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let out = weirctl(&["--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("validate") && text(&out.stdout).contains("plan"));
}

#[test]
fn the_demo_runs_end_to_end_and_survives_a_restart() {
    let out = weirctl(&["demo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("submitted clickstream version 1 (10 PEs)"),
        "{s}"
    );
    assert!(s.contains("Phase 2/3 switch"));
    // Every link is mutual TLS, and a tenant is refused another tenant's app.
    assert!(s.contains("every link below is mutual TLS"), "{s}");
    // Tenant web must sign: unsigned, its spec is refused; signed, it runs.
    assert!(
        s.contains("weirctl submit (unsigned): Unauthenticated: signature: tenant \"web\" must sign its specs"),
        "{s}"
    );
    assert!(
        s.contains("PermissionDenied: app \"clickstream\" belongs to tenant \"web\"; the caller is tenant \"mobile\""),
        "{s}"
    );
    // The online upgrade to v2 midway: done, nothing lost or repeated.
    assert!(s.contains("upgrade 1 of clickstream: v1 -> v2 done"), "{s}");
    assert!(s.contains("records lost 0, records duplicated 0"), "{s}");
    // Every click reached the audit sink exactly once, across two workers.
    assert!(
        s.contains("2000000 records, 2000000 distinct, 0 duplicated, 0 missing, 2000000 expected, inputs ended"),
        "{s}"
    );
    let after = s
        .split("=== restarting the master from its data dir")
        .nth(1)
        .expect("restart step");
    // The bounded app ran to its end before the restart: it comes back finished, at v2.
    assert!(
        after.contains("clickstream              web            finished         2    12"),
        "{after}"
    );
}

#[test]
fn validate_refuses_an_oversized_app_fast_without_expanding_it() {
    // The review's spec: 45 operators of parallelism 256 and 990 hash streams, ~50 KB
    // describing 11,520 PEs and 64,880,640 channels. It used to pass after ~57 s of
    // expanding (and gigabytes); it is refused from the logical model.
    let dir = std::env::temp_dir().join(format!("weirctl-dense-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dense.yaml");
    std::fs::write(&file, weir_common::spec::dense_spec_yaml("dense", 45, 256)).unwrap();
    let started = std::time::Instant::now();
    let out = weirctl(&["validate", file.to_str().unwrap()]);
    let took = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("operators: the app would have 11520 PEs; at most 4096 per app"),
        "{err}"
    );
    assert!(
        err.contains("streams: the app would have 64880640 channels; at most 262144 per app"),
        "{err}"
    );
    // Generous for a debug build on a loaded machine; refusing takes milliseconds.
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
}
