//! Issue 19's attacks against real servers with security on: masters and workers with
//! mutual TLS, and callers with no certificate, another CA's, a tenant's, another
//! worker's or another master's. Each refusal is checked, and that nothing changed.

use std::time::Duration;
use tonic::Code;
use weir_proto::v1 as pb;
use weir_proto::v1::master_workers_client::MasterWorkersClient;
use weir_proto::v1::raft_transport_client::RaftTransportClient;
use weir_proto::v1::weir_admin_client::WeirAdminClient;
use weir_proto::v1::weir_client::WeirClient;
use weir_proto::v1::worker_control_client::WorkerControlClient;
use weir_security::ca::DevCa;
use weir_security::{Principal, Security, ServerRole};
use weir_tests::secure::{security_of, SecureCluster};
use weir_tests::{eventually, submit_yaml, upgrade_yaml};

fn tenant(t: &str) -> Principal {
    Principal::Tenant(t.into())
}

fn admin() -> Principal {
    Principal::Admin("ops".into())
}

fn app_spec(name: &str, tenant: &str, count: u64) -> String {
    format!(
        "name: {name}\ntenant: {tenant}\noperators:\n  - {{name: gen, kind: source.generator, params: {{count: {count}}}}}\n  - {{name: out, kind: sink.verify}}\nstreams:\n  - {{from: gen, to: out}}\n"
    )
}

/// Registers `names` as tenants that need not sign and may run built-in operators
/// (what the tests of other rules need).
async fn open_tenants(c: &SecureCluster, master: u64, names: &[&str]) {
    let mut ops = c.client(master, &admin()).await;
    for n in names {
        ops.put_tenant(put_tenant(n, &[], false, Default::default()))
            .await
            .expect("an admin registers a tenant");
    }
}

fn denied<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) -> tonic::Status {
    let s = r.expect_err(what);
    assert_eq!(s.code(), Code::PermissionDenied, "{what}: {s:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_certificate_or_another_cas_gets_nothing_from_a_master() {
    let c = SecureCluster::start(1).await;
    c.leader().await;
    // Plain TCP to a TLS port.
    let plain = Security::Off;
    match c.channel_with(1, &plain).await {
        Err(_) => {}
        Ok(ch) => {
            let r = WeirClient::new(ch)
                .submit_app(submit_yaml(app_spec("x", "acme", 1)))
                .await;
            assert!(r.is_err(), "plain TCP was served: {r:?}");
        }
    }
    // A tenant certificate from another CA: the handshake fails.
    let outsider = security_of(&DevCa::generate("other").unwrap(), &tenant("acme"));
    match c.channel_with(1, &outsider).await {
        Err(_) => {}
        Ok(ch) => {
            let r = WeirClient::new(ch)
                .submit_app(submit_yaml(app_spec("x", "acme", 1)))
                .await;
            assert!(r.is_err(), "another CA's certificate was served: {r:?}");
        }
    }
    // TLS without a client certificate.
    let ca = tonic::transport::Certificate::from_pem(c.ca.cert_pem());
    let ep = tonic::transport::Endpoint::from_shared(format!("https://{}", c.addrs[&1]))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(ca)
                .domain_name(ServerRole::Master.dns_name()),
        )
        .unwrap();
    if let Ok(ch) = ep.connect().await {
        let r = WeirClient::new(ch)
            .submit_app(submit_yaml(app_spec("x", "acme", 1)))
            .await;
        assert!(
            r.is_err(),
            "a client without a certificate was served: {r:?}"
        );
    }
    assert!(c.local_apps(1).await.is_empty(), "nothing was submitted");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_sees_and_changes_only_its_own_apps_even_through_a_follower() {
    let c = SecureCluster::start(3).await;
    let leader = c.leader().await;
    let follower = *c.addrs.keys().find(|id| **id != leader).unwrap();
    open_tenants(&c, leader, &["acme", "globex"]).await;
    let mut acme = c.client(follower, &tenant("acme")).await;
    let mut globex = c.client(follower, &tenant("globex")).await;
    acme.submit_app(submit_yaml(app_spec("orders", "acme", 1_000_000_000)))
        .await
        .expect("acme submits its own app");

    // A tenant may not submit for another.
    let s = denied(
        globex
            .submit_app(submit_yaml(app_spec("stolen", "acme", 1)))
            .await,
        "globex submitting as acme",
    );
    assert!(s.message().contains("tenant \"globex\""), "{s:?}");
    // Nor read, watch, cancel or upgrade another's app.
    denied(
        globex
            .get_app(pb::GetAppRequest {
                app: "orders".into(),
            })
            .await,
        "get",
    );
    denied(
        globex
            .watch_app(pb::WatchAppRequest {
                app: "orders".into(),
            })
            .await,
        "watch",
    );
    denied(
        globex
            .list_checkpoints(pb::ListCheckpointsRequest {
                app: "orders".into(),
            })
            .await,
        "checkpoints",
    );
    denied(
        globex
            .get_app_history(pb::GetAppHistoryRequest {
                app: "orders".into(),
            })
            .await,
        "history",
    );
    denied(
        globex
            .cancel_app(pb::CancelAppRequest {
                app: "orders".into(),
                request_id: String::new(),
            })
            .await,
        "cancel",
    );
    denied(
        globex
            .upgrade_app(upgrade_yaml("orders", app_spec("orders", "acme", 5)))
            .await,
        "upgrade",
    );
    // Listing shows a tenant only its own, and asking for another's is refused.
    let mine = globex
        .list_apps(pb::ListAppsRequest {
            tenant: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert!(mine.is_empty(), "globex was shown {mine:?}");
    denied(
        globex
            .list_apps(pb::ListAppsRequest {
                tenant: "acme".into(),
            })
            .await,
        "listing acme's apps",
    );
    // Claiming to be forwarded on acme's behalf is refused from anyone but a master.
    let mut spoof = tonic::Request::new(pb::GetAppRequest {
        app: "orders".into(),
    });
    spoof.metadata_mut().insert(
        weir_security::caller::ON_BEHALF_OF,
        tenant("acme").uri().parse().unwrap(),
    );
    denied(globex.get_app(spoof).await, "a forged on-behalf-of");

    // Nothing changed: acme's app is live at version 1, and the only app.
    let d = acme
        .get_app(pb::GetAppRequest {
            app: "orders".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .app
        .unwrap();
    let summary = d.summary.unwrap();
    assert_eq!(summary.version, 1);
    assert_ne!(summary.state, pb::AppState::Cancelled as i32);
    for id in c.addrs.keys() {
        let apps = eventually("every master applied the submit", || async {
            let a = c.local_apps(*id).await;
            (!a.is_empty()).then_some(a)
        })
        .await;
        assert_eq!(apps, vec!["orders".to_string()], "master {id}");
    }
    // An admin sees every tenant's apps.
    let all = c
        .client(follower, &admin())
        .await
        .list_apps(pb::ListAppsRequest {
            tenant: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .apps;
    assert_eq!(all.len(), 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_workers_and_the_catalog_need_the_admin_role() {
    let c = SecureCluster::start(3).await;
    let leader = c.leader().await;
    let ch = c
        .channel_with(leader, &c.security(&tenant("acme")))
        .await
        .unwrap();
    let s = denied(
        WeirAdminClient::new(ch.clone())
            .add_master(pb::AddMasterRequest {
                id: 9,
                address: "127.0.0.1:1".into(),
                as_voter: true,
            })
            .await,
        "a tenant adding a master",
    );
    assert!(s.message().contains("admin"), "{s:?}");
    denied(
        WeirAdminClient::new(ch.clone())
            .remove_master(pb::RemoveMasterRequest { id: 2 })
            .await,
        "a tenant removing a master",
    );
    let mut acme = WeirClient::new(ch);
    denied(
        acme.list_workers(pb::ListWorkersRequest {}).await,
        "workers",
    );
    denied(
        acme.add_template(pb::AddTemplateRequest {
            text: "name: t\n".into(),
            format: pb::SpecFormat::Yaml as i32,
        })
        .await,
        "adding a template",
    );
    denied(
        acme.remove_base_image(pb::RemoveBaseImageRequest { name: "x".into() })
            .await,
        "removing a base image",
    );
    // Reads every user needs stay open to tenants.
    acme.cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap();
    acme.list_templates(pb::ListTemplatesRequest {})
        .await
        .unwrap();
    // Membership is unchanged.
    let voters: Vec<u64> = c.masters[&leader]
        .node
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    assert_eq!(voters, vec![1, 2, 3]);
    // The admin may.
    let mut ops = c.client(leader, &admin()).await;
    ops.list_workers(pb::ListWorkersRequest {}).await.unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_masters_speak_raft_and_each_only_as_itself() {
    let c = SecureCluster::start(3).await;
    let leader = c.leader().await;
    let target = *c.addrs.keys().find(|id| **id != leader).unwrap();
    let impostor = *c
        .addrs
        .keys()
        .find(|id| **id != leader && **id != target)
        .unwrap();
    let term_before = c.masters[&target].node.raft.metrics().borrow().current_term;
    let vote = |from: u64| pb::VoteRequest {
        header: Some(pb::RaftHeader {
            cluster_id: "weir".into(),
            from_id: from,
            to_id: target,
            ..Default::default()
        }),
        // Never decoded: the refusal comes first.
        payload: b"{\"vote\":{\"leader_id\":{\"term\":18446744073709551615}}}"
            .to_vec()
            .into(),
    };
    for who in [tenant("acme"), Principal::Worker("w1".into()), admin()] {
        let ch = c.channel_with(target, &c.security(&who)).await.unwrap();
        denied(
            RaftTransportClient::new(ch).vote(vote(leader)).await,
            &format!("{who} voting"),
        );
    }
    // A master's certificate claiming to be another master.
    let ch = c
        .channel_with(target, &c.security(&Principal::Master(impostor)))
        .await
        .unwrap();
    let s = denied(
        RaftTransportClient::new(ch).vote(vote(leader)).await,
        "a master posing as the leader",
    );
    assert!(s.message().contains("header.from_id"), "{s:?}");
    // The forged votes carry term u64::MAX: had one reached Raft, the target would
    // have taken that term. (A real election on a loaded machine may still move the
    // term by one or two, which is no forgery.)
    let term_after = c.masters[&target].node.raft.metrics().borrow().current_term;
    assert!(
        term_after >= term_before && term_after < term_before + 16,
        "no forged vote reached Raft: term {term_before} -> {term_after}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_registers_only_as_itself_and_obeys_only_masters() {
    let c = SecureCluster::start(1).await;
    c.leader().await;
    let w1 = c.worker("w1").await;
    let mut ops = c.client(1, &admin()).await;
    eventually("w1 registered over TLS", || {
        let mut ops = ops.clone();
        async move {
            let ws = ops
                .list_workers(pb::ListWorkersRequest {})
                .await
                .ok()?
                .into_inner()
                .workers;
            (ws.len() == 1 && ws[0].worker_id == "w1").then_some(())
        }
    })
    .await;

    // w1's certificate cannot register (take over) w2.
    let ch = c
        .channel_with(1, &c.security(&Principal::Worker("w1".into())))
        .await
        .unwrap();
    let s = denied(
        MasterWorkersClient::new(ch)
            .register_worker(pb::RegisterWorkerRequest {
                worker_id: "w2".into(),
                control_address: "127.0.0.1:1".into(),
                data_address: "127.0.0.1:2".into(),
                ..Default::default()
            })
            .await,
        "w1 registering as w2",
    );
    assert!(s.message().contains("worker_id"), "{s:?}");
    // Nor can a tenant register a worker at all.
    let ch = c
        .channel_with(1, &c.security(&tenant("acme")))
        .await
        .unwrap();
    denied(
        MasterWorkersClient::new(ch)
            .register_worker(pb::RegisterWorkerRequest {
                worker_id: "evil".into(),
                ..Default::default()
            })
            .await,
        "a tenant registering a worker",
    );
    let ids: Vec<String> = ops
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers
        .into_iter()
        .map(|w| w.worker_id)
        .collect();
    assert_eq!(ids, vec!["w1".to_string()]);

    // Nobody but a master commands a worker: a forged term from a tenant or another
    // worker is refused before the worker looks at it.
    let forged = pb::ReportRequest {
        header: Some(pb::CommandHeader {
            command_id: "forged".into(),
            term: u64::MAX,
            leader_id: 1,
        }),
    };
    for who in [tenant("acme"), Principal::Worker("w2".into())] {
        let ep = c
            .security(&who)
            .endpoint(&w1.control_addr.to_string(), ServerRole::Worker)
            .unwrap();
        let mut ctl = WorkerControlClient::new(ep.connect().await.unwrap());
        denied(
            ctl.report(forged.clone()).await,
            &format!("{who} forging a term"),
        );
        denied(
            ctl.deploy_pe(pb::DeployPeRequest::default()).await,
            &format!("{who} deploying a PE"),
        );
    }
    let ep = c
        .security(&Principal::Master(1))
        .endpoint(&w1.control_addr.to_string(), ServerRole::Worker)
        .unwrap();
    let report = WorkerControlClient::new(ep.connect().await.unwrap())
        .report(pb::ReportRequest { header: None })
        .await
        .unwrap()
        .into_inner();
    assert!(
        report.term < u64::MAX,
        "the forged term was not taken: {report:?}"
    );
    // And the real master still commands it: an app runs on it over TLS.
    open_tenants(&c, 1, &["acme"]).await;
    let mut acme = c.client(1, &tenant("acme")).await;
    acme.submit_app(submit_yaml(app_spec("tls-app", "acme", 5000)))
        .await
        .unwrap();
    weir_tests::assert_audit_exact(&acme, "tls-app", "out", 5000, Duration::from_secs(120)).await;
    w1.stop().await;
    c.stop().await;
}

/// Records cross workers over mutual TLS exactly once, and a worker of the cluster (a
/// valid worker certificate) cannot open a channel whose producer the master placed on
/// another worker: its batch is never taken, and the real link is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_app_runs_exactly_once_across_workers_over_mutual_tls_and_no_other_worker_opens_its_channels(
) {
    use weir_common::frame::Frame;
    use weir_worker::dataplane::reader::{FrameReader, FrameWriter};
    use weir_worker::dataplane::ChannelKey;
    use weir_worker::runtime::channel_end;
    let c = SecureCluster::start(1).await;
    c.leader().await;
    let workers = [
        c.worker("w1").await,
        c.worker("w2").await,
        c.worker("w3").await,
    ];
    let ops = c.client(1, &admin()).await;
    weir_tests::workers_alive(&ops, 3, Duration::from_secs(30)).await;
    // Paced (about 10 s), so the channels are open while the intruder tries.
    let spec = "name: spread\ntenant: acme\noperators:\n  - {name: gen, kind: source.generator, parallelism: 2, params: {count: 200000, rate: 20000, keys: 100}}\n  - {name: by-key, kind: key_by, parallelism: 3, params: {field: key}}\n  - {name: out, kind: sink.verify}\nstreams:\n  - {from: gen, to: by-key, partitioning: round_robin}\n  - {from: by-key, to: out, partitioning: hash}\n";
    open_tenants(&c, 1, &["acme"]).await;
    let mut acme = c.client(1, &tenant("acme")).await;
    acme.submit_app(submit_yaml(spec.into())).await.unwrap();
    let running = |acme: WeirClient<tonic::transport::Channel>| async move {
        let d = acme
            .clone()
            .get_app(pb::GetAppRequest {
                app: "spread".into(),
            })
            .await
            .ok()?
            .into_inner()
            .app?;
        let all = d.pes.len() == 6
            && d.pes
                .iter()
                .all(|p| p.state == pb::PeState::Running as i32 && !p.worker_id.is_empty());
        all.then_some(d.pes)
    };
    let pes = eventually("every PE running", || running(acme.clone())).await;
    // The PEs were spread over the workers, so records cross TLS data links; both
    // streams join every producer to every consumer, so some channel crosses.
    let on = |op: &str| -> Vec<(String, String)> {
        pes.iter()
            .filter_map(|p| {
                let r = p.pe.as_ref()?;
                (r.operator == op).then(|| (r.id.clone(), p.worker_id.clone()))
            })
            .collect()
    };
    let crossing = [("gen", "by-key"), ("by-key", "out")]
        .iter()
        .flat_map(|(a, b)| {
            let (a, b) = (on(a), on(b));
            a.into_iter()
                .flat_map(move |x| b.clone().into_iter().map(move |y| (x.clone(), y)))
        })
        .find(|((_, pw), (_, cw))| pw != cw);
    let Some(((producer, producer_worker), (consumer, consumer_worker))) = crossing else {
        panic!("every PE on one worker: {pes:?}");
    };
    let intruder = ["w1", "w2", "w3"]
        .into_iter()
        .find(|w| *w != producer_worker)
        .unwrap();
    let data_address = ops
        .clone()
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers
        .into_iter()
        .find(|w| w.worker_id == consumer_worker)
        .unwrap()
        .data_address;
    // The intruder dials the live channel (first attempt of the app: attempt 0) with
    // its own valid worker certificate, as a compromised worker would, and asks to
    // take it over from the start.
    let key = ChannelKey::new(
        channel_end("spread", &producer, 0),
        channel_end("spread", &consumer, 0),
    );
    let sec = security_of(&c.ca, &Principal::Worker(intruder.into()));
    let (connector, name) = sec.data_connector().unwrap().expect("TLS is on");
    let sock = tokio::net::TcpStream::connect(&data_address).await.unwrap();
    let tls = connector
        .connect(name, sock)
        .await
        .expect("a worker of the cluster passes the TLS handshake");
    let (rd, wr) = tokio::io::split(tls);
    let mut wr = FrameWriter::new(wr);
    wr.push(&Frame::Open {
        channel: 1,
        from_pe: key.from.clone(),
        to_pe: key.to.clone(),
        resume_after: 0,
    })
    .await
    .unwrap();
    wr.flush().await.unwrap();
    // Credited, it could send batches, barriers or an end on the channel; refused,
    // the link is closed before any frame comes back.
    let answer = tokio::time::timeout(Duration::from_secs(60), FrameReader::new(rd).next())
        .await
        .expect("the worker answers or closes the link");
    assert!(
        answer.is_err(),
        "worker {intruder} was answered {answer:?} on {key}, whose producer is on {producer_worker}"
    );
    // The consumer was still running, so the channel was open all along: the refusal
    // was the producer check, not an unknown channel.
    let still = running(acme.clone()).await.map(|pes| {
        pes.iter()
            .any(|p| p.pe.as_ref().is_some_and(|r| r.id == consumer))
    });
    assert_eq!(
        still,
        Some(true),
        "{consumer} stopped before the intruder was refused"
    );
    weir_tests::assert_audit_exact(&acme, "spread", "out", 200_000, Duration::from_secs(300)).await;
    for w in workers {
        w.stop().await;
    }
    c.stop().await;
}

/// `GET /metrics` from master 1's metrics endpoint over TLS as `who`: the HTTP
/// response, or why the connection failed.
async fn scrape_as(c: &SecureCluster, sec: &Security) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = c.masters[&1].metrics_addr.expect("metrics served");
    let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (connector, name) = sec
        .connector(ServerRole::Master)
        .unwrap()
        .expect("TLS is on");
    let mut tls = connector
        .connect(name, sock)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut got = String::new();
    tls.read_to_string(&mut got)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok(got)
}

/// The metrics endpoint is a link like the others: HTTPS with client certificates of
/// the CA, read by a monitor's or an admin's certificate only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_served_over_tls_to_monitors_and_admins_only() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = SecureCluster::start(1).await;
    c.leader().await;
    for who in [Principal::Monitor("prometheus".into()), admin()] {
        let page = scrape_as(&c, &c.security(&who)).await.unwrap();
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{who}: {page}");
        assert!(page.contains("weir_raft_is_leader 1"), "{who}: {page}");
    }
    for who in [
        tenant("acme"),
        Principal::Worker("w1".into()),
        Principal::Master(2),
    ] {
        let page = scrape_as(&c, &c.security(&who)).await.unwrap();
        assert!(page.starts_with("HTTP/1.1 403 Forbidden"), "{who}: {page}");
        assert!(page.contains("may not read metrics"), "{who}: {page}");
        assert!(!page.contains("weir_raft"), "{who} read metrics: {page}");
    }
    // A monitor's certificate reads metrics and nothing else.
    let mut monitor = c.client(1, &Principal::Monitor("prometheus".into())).await;
    let s = denied(
        monitor.list_apps(pb::ListAppsRequest::default()).await,
        "a monitor lists apps",
    );
    assert!(s.message().contains("monitor"), "{s:?}");
    // Another CA's monitor: the handshake fails (or the connection dies in it).
    let other = DevCa::generate("other").unwrap();
    let forged = security_of(&other, &Principal::Monitor("prometheus".into()));
    let r = scrape_as(&c, &forged).await;
    assert!(
        r.as_ref().map_or(true, |p| !p.contains("weir_raft")),
        "another CA's monitor read metrics: {r:?}"
    );
    // Plain HTTP gets no page.
    let mut sock = tokio::net::TcpStream::connect(c.masters[&1].metrics_addr.unwrap())
        .await
        .unwrap();
    sock.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), sock.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(!got.contains("weir_raft"), "plain HTTP read metrics: {got}");
    c.stop().await;
}

/// Each caller has its own rate on the client API, counted on the master the call
/// reaches: a tenant over its burst is refused (RESOURCE_EXHAUSTED, saying when to
/// retry) while another tenant is not held back, and calls a follower forwarded were
/// not counted again at the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_over_its_rate_is_refused_and_holds_nobody_else_back() {
    let c = SecureCluster::start_tuned(2, |cfg| {
        // One call per 1,000 s beyond a burst of 3: no refill within the test.
        cfg.client_rate_limit = Some(weir_master::api::ratelimit::RateLimit {
            per_second: 0.001,
            burst: 3.0,
        })
    })
    .await;
    let leader = c.leader().await;
    let follower = if leader == 1 { 2 } else { 1 };
    let list = |mut client: WeirClient<tonic::transport::Channel>| async move {
        client.list_apps(pb::ListAppsRequest::default()).await
    };
    let acme_f = c.client(follower, &tenant("acme")).await;
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(list(acme_f.clone()).await);
    }
    let ok = answers.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 3, "{answers:?}");
    for r in &answers[3..] {
        let s = r.as_ref().unwrap_err();
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        assert!(
            s.message().starts_with(
                "rate limit: tenant acme may make 0.001 calls/s in bursts of 3; retry in "
            ),
            "{}",
            s.message()
        );
    }
    // Another tenant on the same master: its own bucket.
    let globex = c.client(follower, &tenant("globex")).await;
    for _ in 0..3 {
        list(globex.clone())
            .await
            .expect("globex is not held back by acme");
    }
    // The leader answered acme's three forwarded calls without counting them: acme's
    // own calls to it get the whole burst.
    let acme_l = c.client(leader, &tenant("acme")).await;
    for _ in 0..3 {
        list(acme_l.clone())
            .await
            .expect("forwarded calls were counted once");
    }
    let s = list(acme_l).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    c.stop().await;
}

fn put_tenant(
    name: &str,
    keys: &[&weir_security::sign::Signer],
    require_signature: bool,
    caps: pb::Capabilities,
) -> pb::PutTenantRequest {
    pb::PutTenantRequest {
        tenant: name.into(),
        policy: Some(pb::TenantPolicy {
            keys: keys
                .iter()
                .map(|k| pb::SigningKey {
                    id: k.key_id(),
                    public_key: k.public_key().to_vec().into(),
                })
                .collect(),
            require_signature,
            capabilities: Some(caps),
        }),
    }
}

fn signed(spec: String, key: &weir_security::sign::Signer) -> pb::SubmitAppRequest {
    let mut r = submit_yaml(spec.clone());
    r.signature = Some(pb::SpecSignature {
        key_id: key.key_id(),
        signature: key.sign(&spec).into(),
    });
    r
}

fn unauthenticated<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) -> tonic::Status {
    let s = r.expect_err(what);
    assert_eq!(s.code(), Code::Unauthenticated, "{what}: {s:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn specs_are_signed_verified_before_raft_and_kept_with_each_version() {
    use weir_security::sign::Signer;
    let c = SecureCluster::start(1).await;
    c.leader().await;
    let (key, _) = Signer::generate().unwrap();
    let (stranger, _) = Signer::generate().unwrap();
    let mut ops = c.client(1, &admin()).await;
    let mut acme = c.client(1, &tenant("acme")).await;
    // Only an admin registers tenants, and a bad policy changes nothing.
    denied(
        acme.put_tenant(put_tenant("acme", &[&stranger], true, Default::default()))
            .await,
        "a tenant registering itself",
    );
    let mut short = put_tenant("acme", &[&key], true, Default::default());
    short.policy.as_mut().unwrap().keys[0].public_key = vec![7u8; 31].into();
    let s = ops.put_tenant(short).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("32 bytes"), "{s:?}");
    let listed = ops
        .list_tenants(pb::ListTenantsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.tenants.iter().all(|t| t.policy.is_none()),
        "{listed:?}"
    );

    // With security on, an unregistered tenant cannot submit at all.
    let s = unauthenticated(
        acme.submit_app(submit_yaml(app_spec("a", "acme", 10)))
            .await,
        "an unregistered tenant",
    );
    assert!(s.message().contains("not registered"), "{s:?}");

    ops.put_tenant(put_tenant("acme", &[&key], true, Default::default()))
        .await
        .unwrap();
    let text = app_spec("a", "acme", 10);
    unauthenticated(acme.submit_app(submit_yaml(text.clone())).await, "unsigned");
    let mut tampered = signed(text.clone(), &key);
    tampered.spec = app_spec("a", "acme", 1_000_000);
    let s = unauthenticated(acme.submit_app(tampered).await, "tampered");
    assert!(s.message().contains("does not verify"), "{s:?}");
    unauthenticated(
        acme.submit_app(signed(text.clone(), &stranger)).await,
        "signed with an unregistered key",
    );
    assert!(c.local_apps(1).await.is_empty(), "nothing reached Raft");

    acme.submit_app(signed(text, &key)).await.unwrap();
    let h = acme
        .get_app_history(pb::GetAppHistoryRequest { app: "a".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.versions.len(), 1);
    assert_eq!(h.versions[0].signed_by_key, key.key_id());
    // A tenant lists only itself, with its keys.
    let mine = acme
        .list_tenants(pb::ListTenantsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine.tenants.len(), 1);
    assert_eq!(
        mine.tenants[0].policy.as_ref().unwrap().keys[0].id,
        key.key_id()
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_an_app_may_reach_is_granted_per_tenant_not_assumed() {
    let c = SecureCluster::start(1).await;
    c.leader().await;
    let mut ops = c.client(1, &admin()).await;
    let mut acme = c.client(1, &tenant("acme")).await;
    let root = "/tmp/weir-acme-root";
    ops.put_tenant(put_tenant(
        "acme",
        &[],
        false,
        pb::Capabilities {
            file_root: root.into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let with = |name: &str, op: &str| {
        format!(
            "name: {name}\ntenant: acme\noperators:\n  - {{name: gen, kind: source.generator, params: {{count: 10}}}}\n  - {op}\nstreams:\n  - {{from: gen, to: out}}\n"
        )
    };
    let exec_app = |name: &str| {
        format!(
            "name: {name}\ntenant: acme\noperators:\n  - {{name: gen, kind: source.generator, params: {{count: 10}}}}\n  - {{name: x, kind: exec, params: {{command: [/bin/cat]}}}}\n  - {{name: out, kind: sink.verify}}\nstreams:\n  - {{from: gen, to: x}}\n  - {{from: x, to: out}}\n"
        )
    };
    let s = denied(acme.submit_app(submit_yaml(exec_app("x"))).await, "exec");
    assert!(
        s.message()
            .contains("operators[1].kind: exec operators are not granted"),
        "{s:?}"
    );
    let refusals = [
        (
            "{name: out, kind: sink.file, params: {path: /etc/weir-owned}}",
            "must be an absolute path under",
        ),
        (
            "{name: out, kind: sink.file, params: {path: /tmp/weir-acme-root/../escape}}",
            "without `..`",
        ),
        (
            "{name: out, kind: sink.tcp, params: {address: \"127.0.0.1:9\"}}",
            "network operators are not granted",
        ),
    ];
    for (i, (op, why)) in refusals.iter().enumerate() {
        let s = denied(
            acme.submit_app(submit_yaml(with(&format!("x{i}"), op)))
                .await,
            op,
        );
        assert!(s.message().contains(why), "{op}: {s:?}");
        assert!(s.message().contains("operators[1]"), "{op}: {s:?}");
    }
    assert!(
        c.local_apps(1).await.is_empty(),
        "no refused app reached Raft"
    );
    let ok = with(
        "ok",
        &format!("{{name: out, kind: sink.file, params: {{path: {root}/out.jsonl}}}}"),
    );
    acme.submit_app(submit_yaml(ok)).await.unwrap();
    // An upgrade is held to the same grant.
    let s = denied(
        acme.upgrade_app(upgrade_yaml("ok", exec_app("ok"))).await,
        "an upgrade to an exec operator",
    );
    assert!(
        s.message().contains("exec operators are not granted"),
        "{s:?}"
    );
    let h = acme
        .get_app_history(pb::GetAppHistoryRequest { app: "ok".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.versions.len(), 1, "the app stayed at version 1");
    assert_eq!(c.local_apps(1).await, vec!["ok".to_string()]);
    c.stop().await;
}
