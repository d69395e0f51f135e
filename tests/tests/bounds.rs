//! Bounds before Raft: oversized specs are refused before anything is proposed, and
//! secrets in spec env values never come back to a caller. Real masters on loopback.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tonic::Code;
use weir_common::spec::dense_spec_yaml;
use weir_proto::status::validation_problems;
use weir_proto::v1 as pb;
use weir_tests::{submit, submit_yaml, upgrade_yaml, Cluster};

/// Far below what expanding the dense spec took (the better part of a minute and
/// gigabytes), far above what refusing it takes on a loaded debug build.
const FAST: Duration = Duration::from_secs(15);

async fn app_names(c: &Cluster, via: u64) -> BTreeSet<String> {
    let mut client = c.client(via).await;
    client
        .list_apps(pb::ListAppsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .apps
        .into_iter()
        .map(|a| a.name)
        .collect()
}

fn problems(err: &tonic::Status) -> Vec<(String, String)> {
    validation_problems(err)
        .expect("problems in the status details")
        .into_iter()
        .map(|p| (p.path, p.rule))
        .collect()
}

fn dense_problems() -> Vec<(String, String)> {
    vec![
        (
            "operators".to_string(),
            "the app would have 11520 PEs; at most 4096 per app".to_string(),
        ),
        (
            "streams".to_string(),
            "the app would have 64880640 channels; at most 262144 per app".to_string(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dense_spec_is_refused_before_raft_and_changes_nothing() {
    let c = Cluster::start(3).await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let mut client = c.client(follower).await;
    client.submit_app(submit("small")).await.unwrap();

    // 45 operators of parallelism 256, 990 hash streams: ~50 KB of YAML, 11,520 PEs,
    // 64,880,640 channels. Through a follower, so the forwarding path is covered too.
    let dense = dense_spec_yaml("dense", 45, 256);
    assert!(dense.len() < 64 << 10);
    let started = Instant::now();
    let err = tokio::time::timeout(FAST, client.submit_app(submit_yaml(dense.clone())))
        .await
        .expect("refused fast")
        .unwrap_err();
    assert!(started.elapsed() < FAST);
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(problems(&err), dense_problems());

    // Nothing was committed: every master knows only the small app.
    let only_small: BTreeSet<String> = ["small".to_string()].into();
    for id in [1, 2, 3] {
        assert_eq!(app_names(&c, id).await, only_small);
    }
    assert!(c.local_apps(leader).await.iter().all(|a| a != "dense"));

    // An upgrade to the same shape is refused as well, and the app stays at v1.
    let dense_small = dense_spec_yaml("small", 45, 256);
    let err = tokio::time::timeout(FAST, client.upgrade_app(upgrade_yaml("small", dense_small)))
        .await
        .expect("refused fast")
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(problems(&err), dense_problems());
    let detail = client
        .get_app(pb::GetAppRequest {
            app: "small".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .app
        .unwrap();
    assert_eq!(detail.versions.len(), 1);
    assert!(detail.current_upgrade.is_none());
    assert_eq!(detail.pes.len(), 2);
    c.stop().await;
}

fn tight(cfg: &mut weir_master::server::MasterConfig) {
    cfg.app_limits = weir_common::spec::AppLimits {
        max_pes: 2,
        max_channels: 1,
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_limits_follow_the_master_config() {
    let c = Cluster::start_tuned(1, tight).await;
    c.leader().await;
    let mut client = c.client(1).await;
    // gen -> out: 2 PEs, 1 channel, exactly at the limits.
    client.submit_app(submit("fits")).await.unwrap();
    let three = "name: three\noperators:\n  - {name: gen, kind: source.generator, params: {count: 1}}\n  - {name: out, kind: sink.verify, parallelism: 2}\nstreams:\n  - {from: gen, to: out, partitioning: round_robin}\n";
    let err = client
        .submit_app(submit_yaml(three.to_string()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        problems(&err),
        vec![
            (
                "operators".to_string(),
                "the app would have 3 PEs; at most 2 per app".to_string()
            ),
            (
                "streams".to_string(),
                "the app would have 2 channels; at most 1 per app".to_string()
            ),
        ]
    );
    assert_eq!(app_names(&c, 1).await, ["fits".to_string()].into());
    c.stop().await;
}

const SECRET: &str = "s3cr3t-token-value-1";
const SECRET_2: &str = "s3cr3t-token-value-2";

fn secret_spec(token: &str) -> String {
    format!(
        "name: sec\noperators:\n  - {{name: gen, kind: source.generator, params: {{count: 1}}}}\n  - {{name: prog, kind: exec, params: {{command: [cat], env: {{API_TOKEN: \"{token}\"}}}}}}\n  - {{name: out, kind: sink.null}}\nstreams:\n  - {{from: gen, to: prog}}\n  - {{from: prog, to: out}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn env_values_never_come_back() {
    let c = Cluster::start(1).await;
    c.leader().await;
    let mut client = c.client(1).await;
    let r = client
        .submit_app(submit_yaml(secret_spec(SECRET)))
        .await
        .unwrap();
    assert!(!format!("{r:?}").contains(SECRET));

    let detail = client
        .get_app(pb::GetAppRequest { app: "sec".into() })
        .await
        .unwrap()
        .into_inner();
    let shown = format!("{detail:?}");
    assert!(!shown.contains(SECRET), "GetApp echoes the secret: {shown}");
    let app = detail.app.unwrap();
    assert!(app.spec.contains("API_TOKEN"), "{}", app.spec);
    assert!(app.spec.contains("(set)"), "{}", app.spec);

    let history = client
        .get_app_history(pb::GetAppHistoryRequest { app: "sec".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!format!("{history:?}").contains(SECRET));

    // A plan (dry run) for a new token names the variable, neither value.
    let mut dry = upgrade_yaml("sec", secret_spec(SECRET_2));
    dry.dry_run = true;
    let plan = client.upgrade_app(dry).await.unwrap().into_inner();
    let shown = format!("{plan:?}");
    assert!(
        !shown.contains(SECRET) && !shown.contains(SECRET_2),
        "{shown}"
    );
    assert!(
        plan.plan_text.contains("params.env.API_TOKEN"),
        "{}",
        plan.plan_text
    );
    c.stop().await;
}
