//! The spec corpus: every example is valid (and its v2 plans cleanly against v1), and
//! every file in tests/specs/bad is refused with the problems its `# expect:` lines name.

use std::fs;
use std::path::{Path, PathBuf};
use weir_common::physical::PhysicalModel;
use weir_common::plan::{apply, plan};
use weir_common::spec::{parse_app, SpecFormat};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn specs(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "json")
            )
        })
        .collect();
    files.sort();
    files
}

fn parse(path: &Path) -> Result<weir_common::spec::AppSpec, weir_common::Problems> {
    let text = fs::read_to_string(path).unwrap();
    parse_app(&text, SpecFormat::from_path(path.to_str().unwrap()))
}

#[test]
fn every_example_is_valid() {
    let files = specs("examples");
    assert!(
        files.len() >= 6,
        "expected three apps with a v2 each, found {files:?}"
    );
    for f in files {
        if let Err(p) = parse(&f) {
            panic!("{} is invalid: {p}", f.display());
        }
    }
}

#[test]
fn every_nexmark_example_is_valid() {
    let files = specs("examples/nexmark");
    assert!(
        files.len() >= 4,
        "expected q0, q1, q5 and agg, found {files:?}"
    );
    for f in files {
        if let Err(p) = parse(&f) {
            panic!("{} is invalid: {p}", f.display());
        }
    }
}

#[test]
fn every_example_v2_is_an_online_upgrade_of_its_v1() {
    for v2 in specs("examples")
        .into_iter()
        .filter(|f| f.to_str().unwrap().ends_with("-v2.yaml"))
    {
        let v1 = PathBuf::from(v2.to_str().unwrap().replace("-v2.yaml", ".yaml"));
        let (a, b) = (parse(&v1).unwrap(), parse(&v2).unwrap());
        assert_eq!(a.name, b.name, "{}", v2.display());
        let p = plan(&a, &b, None);
        assert!(!p.is_empty(), "{} changes nothing", v2.display());
        assert_eq!(
            apply(&p, &PhysicalModel::expand(&a)),
            PhysicalModel::expand(&b)
        );
    }
}

#[test]
fn fraud_scoring_v2_inserts_an_operator_and_rescales_another() {
    use weir_common::plan::OperatorChangeKind as K;
    let a = parse(&root().join("examples/fraud-scoring.yaml")).unwrap();
    let b = parse(&root().join("examples/fraud-scoring-v2.yaml")).unwrap();
    let p = plan(&a, &b, None);
    let change = |n: &str| p.operators.iter().find(|o| o.name == n).unwrap().change;
    assert_eq!(change("normalise"), K::Added);
    assert_eq!(change("spend"), K::Rescaled);
    assert_eq!(change("flagged"), K::Unchanged);
    assert_eq!(change("review-queue"), K::Unchanged);
    // spend 2 -> 4: each new PE takes the state of exactly one old PE (half its groups).
    assert_eq!(p.summary.pes_started, 1 + 4);
    assert_eq!(p.summary.pes_stopped, 2);
    assert_eq!(p.untouched_pes.len(), 2);
}

#[test]
fn bad_specs_are_refused_with_their_paths() {
    let files = specs("tests/specs/bad");
    assert!(
        files.len() >= 15,
        "the corpus needs one file per rule, at least 15"
    );
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            f.display()
        );
        let problems = match parse(&f) {
            Ok(_) => panic!("{} was accepted", f.display()),
            Err(p) => p.0.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        };
        for e in expects {
            assert!(
                problems.iter().any(|p| p.contains(e)),
                "{}: no problem contains {e:?}; got {problems:#?}",
                f.display()
            );
        }
    }
}
