use super::fixtures::*;
use super::*;
use weir_common::plan::Phase;

#[test]
fn submit_stores_v1_and_refuses_a_duplicate_without_change() {
    let mut s = ClusterState::default();
    assert_eq!(
        s.apply(&submit(10)).unwrap(),
        Response::AppVersion {
            app: "clickstream".into(),
            version: 1
        }
    );
    let app = &s.apps["clickstream"];
    assert_eq!(
        (app.current_version, app.versions.len(), app.created_at_ms),
        (1, 1, 10)
    );
    assert_eq!(s.tenants["web"].apps, 1);
    let before = s.clone();
    assert_eq!(
        s.apply(&submit(20)),
        Err(CommandError::AppExists("clickstream".into()))
    );
    assert_eq!(s, before);
}

#[test]
fn cancel_needs_a_live_app() {
    let mut s = ClusterState::default();
    let cancel = Command::CancelApp {
        name: "clickstream".into(),
        at_ms: 30,
        request_id: String::new(),
    };
    assert_eq!(
        s.apply(&cancel),
        Err(CommandError::AppNotFound("clickstream".into()))
    );
    s.apply(&submit(10)).unwrap();
    s.apply(&cancel).unwrap();
    assert_eq!(s.apps["clickstream"].state(), AppState::Cancelled);
    assert_eq!(s.tenants["web"].apps, 0);
    let before = s.clone();
    assert!(matches!(
        s.apply(&cancel),
        Err(CommandError::AppState { .. })
    ));
    assert_eq!(s, before);
}

#[test]
fn workers_register_with_rising_incarnations_and_change_state() {
    let mut s = ClusterState::default();
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    assert_eq!(s.workers["w1"].incarnation, 2);
    s.apply(&Command::SetWorkerState {
        id: "w1".into(),
        state: WorkerState::Lost,
        at_ms: 99,
    })
    .unwrap();
    assert_eq!(
        (s.workers["w1"].state, s.workers["w1"].state_since_ms),
        (WorkerState::Lost, 99)
    );
    let unknown = Command::SetWorkerState {
        id: "nope".into(),
        state: WorkerState::Lost,
        at_ms: 1,
    };
    assert_eq!(
        s.apply(&unknown),
        Err(CommandError::WorkerNotFound("nope".into()))
    );
}

#[test]
fn placement_must_name_real_pes_and_alive_workers() {
    let mut s = ClusterState::default();
    s.apply(&submit(10)).unwrap();
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    let place = |pe: &str, w: &str| Command::SetPlacement {
        app: "clickstream".into(),
        placement: [(PeId::from(pe), w.to_string())].into(),
        gpus: Default::default(),
        at_ms: 0,
    };
    let before = s.clone();
    assert!(matches!(
        s.apply(&place("ghost@00000000#0", "w1")),
        Err(CommandError::BadPlacement { .. })
    ));
    assert!(matches!(
        s.apply(&place("parse@00000000#0", "w9")),
        Err(CommandError::BadPlacement { .. })
    ));
    assert_eq!(s, before);
    s.apply(&place("parse@00000000#0", "w1")).unwrap();
    assert_eq!(s.apps["clickstream"].state(), AppState::Running);
}

#[test]
fn state_round_trips_through_json_for_snapshots() {
    let mut s = ClusterState::default();
    s.apply(&submit(10)).unwrap();
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    let bytes = serde_json::to_vec(&s).unwrap();
    let back: ClusterState = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, s);
}

#[test]
fn an_upgrade_moves_through_its_phases_and_makes_v2_current_at_the_switch() {
    let (mut s, begin) = upgrading();
    assert_eq!(
        s.apply(&begin).unwrap(),
        Response::UpgradeStarted { id: 1, version: 2 }
    );
    let app = &s.apps["clickstream"];
    assert_eq!(
        (app.current_version, app.versions.len()),
        (1, 2),
        "v1 runs on"
    );
    assert_eq!(app.state(), AppState::Upgrading);
    let barrier = s.upgrades[&1].barrier;
    assert_eq!(
        barrier, app.checkpoints.last_id,
        "the barrier id is reserved"
    );
    // A second upgrade is refused and changes nothing.
    let before = s.clone();
    assert!(matches!(
        s.apply(&begin),
        Err(CommandError::Upgrade(UpgradeRefusal::Running { id: 1, .. }))
    ));
    assert_eq!(s, before);
    // Phases only in order.
    let finish = Command::FinishUpgradeSwitch {
        app: "clickstream".into(),
        id: 1,
        at_ms: 120,
    };
    assert_eq!(
        s.apply(&finish),
        Err(CommandError::Upgrade(UpgradeRefusal::WrongPhase {
            app: "clickstream".into(),
            id: 1,
            is: Some(Phase::Prepare),
            need: Phase::Switch
        }))
    );
    s.apply(&Command::UpgradeSwitch {
        app: "clickstream".into(),
        id: 1,
        at_ms: 110,
    })
    .unwrap();
    assert_eq!(
        s.apps["clickstream"]
            .checkpoints
            .in_flight
            .as_ref()
            .map(|f| f.id),
        Some(barrier)
    );
    // The switch completes only with its checkpoint.
    assert!(s.apply(&finish).is_err());
    s.apply(&Command::CompleteCheckpoint {
        app: "clickstream".into(),
        id: barrier,
        at_ms: 115,
        max_alignment_ms: 0,
        pieces: BTreeMap::new(),
    })
    .unwrap();
    s.apply(&finish).unwrap();
    let app = &s.apps["clickstream"];
    assert_eq!(app.current_version, 2);
    assert_eq!(app.placement, s.upgrades[&1].placement);
    // Aborting after the switch is refused: it can only complete.
    assert!(matches!(
        s.apply(&Command::AbortUpgrade {
            app: "clickstream".into(),
            id: 1,
            at_ms: 130,
            reason: "late".into(),
            recover: None,
        }),
        Err(CommandError::Upgrade(UpgradeRefusal::Switched {
            id: 1,
            ..
        }))
    ));
    s.apply(&Command::CompleteUpgrade {
        app: "clickstream".into(),
        id: 1,
        at_ms: 140,
        result: UpgradeResultRecord::default(),
    })
    .unwrap();
    let app = &s.apps["clickstream"];
    assert_eq!((app.state(), app.upgrade), (AppState::Running, None));
    assert_eq!(s.upgrades[&1].outcome(), Some(&UpgradeOutcome::Completed));
}

#[test]
fn an_aborted_switch_keeps_v1_and_restarts_the_touched_region_from_before_it() {
    let (mut s, begin) = upgrading();
    s.apply(&begin).unwrap();
    s.apply(&Command::UpgradeSwitch {
        app: "clickstream".into(),
        id: 1,
        at_ms: 110,
    })
    .unwrap();
    s.apply(&Command::AbortUpgrade {
        app: "clickstream".into(),
        id: 1,
        at_ms: 130,
        reason: "worker w1 lost".into(),
        recover: Some((vec!["parse".into(), "views".into()], 0)),
    })
    .unwrap();
    let app = &s.apps["clickstream"];
    assert_eq!((app.current_version, app.state()), (1, AppState::Running));
    assert_eq!(app.upgrade, None);
    assert_eq!(
        app.checkpoints.in_flight, None,
        "the switch checkpoint is dropped"
    );
    assert_eq!(app.checkpoints.attempt("parse"), 1);
    assert_eq!(app.checkpoints.attempt("views"), 1);
    let rec = app.checkpoints.recoveries.last().unwrap();
    assert!(
        rec.reason.contains("rolled back: worker w1 lost"),
        "{}",
        rec.reason
    );
    assert_eq!(
        s.upgrades[&1].outcome(),
        Some(&UpgradeOutcome::RolledBack("worker w1 lost".into()))
    );
    // A new upgrade may start; it gets the next id and the next version.
    let (_, again) = upgrading();
    assert_eq!(
        s.apply(&again).unwrap(),
        Response::UpgradeStarted { id: 2, version: 3 }
    );
}

#[test]
fn a_batch_applies_and_answers_each_command_on_its_own() {
    let mut s = ClusterState::default();
    let cancel_unknown = Command::CancelApp {
        name: "nope".into(),
        at_ms: 3,
        request_id: String::new(),
    };
    let batch = Command::Batch {
        cmds: vec![submit(1), submit(2), cancel_unknown],
    };
    let Response::Batch { results } = s.apply(&batch).unwrap() else {
        panic!("a batch answers a batch");
    };
    assert_eq!(
        results,
        vec![
            Ok(Response::AppVersion {
                app: "clickstream".into(),
                version: 1
            }),
            Err(CommandError::AppExists("clickstream".into())),
            Err(CommandError::AppNotFound("nope".into())),
        ]
    );
    // The refused ones changed nothing: the first submit stands as if alone.
    let mut alone = ClusterState::default();
    alone.apply(&submit(1)).unwrap();
    assert_eq!(s, alone);
    // A batch survives the log's encoding.
    let bytes = serde_json::to_vec(&batch).unwrap();
    assert_eq!(serde_json::from_slice::<Command>(&bytes).unwrap(), batch);
}

fn submit_with(request_id: &str, at_ms: u64) -> Command {
    let Command::SubmitApp {
        spec, spec_text, ..
    } = submit(at_ms)
    else {
        unreachable!("submit() builds a SubmitApp")
    };
    Command::SubmitApp {
        spec,
        spec_text,
        at_ms,
        request_id: request_id.into(),
        generated: Default::default(),
        signature: None,
    }
}

#[test]
fn a_repeated_submit_answers_its_version_and_changes_nothing() {
    let mut s = ClusterState::default();
    let first = s.apply(&submit_with("r-1", 10)).unwrap();
    assert_eq!(
        first,
        Response::AppVersion {
            app: "clickstream".into(),
            version: 1
        }
    );
    assert_eq!(s.apps["clickstream"].versions[0].request_id, "r-1");
    let before = s.clone();
    // The client repeats the call (its master died before answering): same answer,
    // accepted by the leader's pre-check, nothing changed (not even the time).
    let repeat = submit_with("r-1", 20);
    assert_eq!(s.repeated(&repeat).unwrap(), Some(first.clone()));
    assert_eq!(s.check(&repeat), Ok(()));
    assert_eq!(s.apply(&repeat).unwrap(), first);
    assert_eq!(s, before);
    // Another request for the same name is still refused, without change.
    assert_eq!(
        s.apply(&submit_with("r-2", 30)),
        Err(CommandError::AppExists("clickstream".into()))
    );
    assert_eq!(
        s.apply(&submit(40)),
        Err(CommandError::AppExists("clickstream".into()))
    );
    assert_eq!(s, before);
    // The same request id with another spec is a client bug, refused by field.
    let Command::SubmitApp { spec, .. } = submit(50) else {
        unreachable!()
    };
    let other = Command::SubmitApp {
        spec,
        spec_text: format!("{APP}\n# edited\n"),
        at_ms: 50,
        request_id: "r-1".into(),
        generated: Default::default(),
        signature: None,
    };
    let err = s.apply(&other).unwrap_err();
    assert!(
        matches!(&err, CommandError::RequestIdReused { request_id, .. } if request_id == "r-1"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("request_id: \"r-1\" already stored version 1"),
        "{err}"
    );
    assert_eq!(s, before);
}

#[test]
fn a_repeated_upgrade_answers_its_operation_and_starts_no_second_one() {
    let (mut s, begin) = upgrading();
    let Command::BeginUpgrade {
        spec,
        spec_text,
        placement,
        summary,
        ..
    } = begin
    else {
        unreachable!()
    };
    let with = |request_id: &str, at_ms: u64| Command::BeginUpgrade {
        generated: Default::default(),
        spec: spec.clone(),
        spec_text: spec_text.clone(),
        at_ms,
        placement: placement.clone(),
        gpus: BTreeMap::new(),
        handoff: BTreeMap::new(),
        summary: summary.clone(),
        request_id: request_id.into(),
        signature: None,
    };
    let first = s.apply(&with("u-1", 100)).unwrap();
    assert_eq!(first, Response::UpgradeStarted { id: 1, version: 2 });
    let before = s.clone();
    assert_eq!(s.apply(&with("u-1", 200)).unwrap(), first);
    assert_eq!(s, before);
    // A new request while it runs is refused as before.
    assert!(matches!(
        s.apply(&with("u-2", 300)),
        Err(CommandError::Upgrade(UpgradeRefusal::Running { .. }))
    ));
    // The same request id with another spec is refused, naming the field.
    let mut edited = with("u-1", 400);
    if let Command::BeginUpgrade { spec_text, .. } = &mut edited {
        spec_text.push_str("\n# edited\n");
    }
    assert!(matches!(
        s.apply(&edited),
        Err(CommandError::RequestIdReused { .. })
    ));
    assert_eq!(s, before);
}

#[test]
fn a_repeated_cancel_answers_done_while_another_is_refused() {
    let mut s = ClusterState::default();
    s.apply(&submit(10)).unwrap();
    let cancel = |request_id: &str| Command::CancelApp {
        name: "clickstream".into(),
        at_ms: 30,
        request_id: request_id.into(),
    };
    assert_eq!(s.apply(&cancel("c-1")).unwrap(), Response::Done);
    let before = s.clone();
    assert_eq!(s.apply(&cancel("c-1")).unwrap(), Response::Done);
    assert_eq!(s, before);
    assert!(matches!(
        s.apply(&cancel("c-2")),
        Err(CommandError::AppState { .. })
    ));
    assert!(matches!(
        s.apply(&cancel("")),
        Err(CommandError::AppState { .. })
    ));
    assert_eq!(s, before);
}

#[test]
fn entries_and_snapshots_written_before_request_ids_still_read() {
    // A SubmitApp entry as masters wrote it before request ids existed.
    let mut old = serde_json::to_value(submit(10)).unwrap();
    old.as_object_mut().unwrap().remove("request_id");
    let cmd: Command = serde_json::from_value(old).unwrap();
    assert_eq!(cmd, submit(10));
    let cancel: Command =
        serde_json::from_str(r#"{"cmd":"cancel_app","name":"clickstream","at_ms":3}"#).unwrap();
    assert!(matches!(cancel, Command::CancelApp { request_id, .. } if request_id.is_empty()));
    // A state snapshot without the new fields.
    let mut s = ClusterState::default();
    s.apply(&submit(10)).unwrap();
    let text = serde_json::to_string(&s).unwrap();
    assert!(
        !text.contains("request_id"),
        "empty ids are not written: {text}"
    );
    let back: ClusterState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
}

fn image(i: usize, tag: &str) -> weir_common::image::ImageInfo {
    weir_common::image::ImageInfo {
        id: format!("sha256:{i:064x}"),
        tags: vec![tag.to_string()],
        digests: vec![],
        size_bytes: 1000 + i as u64,
    }
}

#[test]
fn a_workers_images_are_stored_bounded_and_replaced_whole() {
    let mut s = ClusterState::default();
    let mut w = worker("w1");
    w.images = std::sync::Arc::new(vec![image(1, "acme/a:1"), image(0, "acme/b:1")]);
    s.apply(&Command::RegisterWorker { worker: w }).unwrap();
    // Stored sorted, as bound() orders them (so a re-report in another order is equal).
    let ids: Vec<&str> = s.workers["w1"]
        .images
        .iter()
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(ids, [image(0, "").id, image(1, "").id]);

    // A heartbeat reporting a different list replaces it whole, bounded.
    let many: Vec<_> = (0..weir_common::image::MAX_IMAGES + 20)
        .map(|i| image(i, &format!("app{i}:latest")))
        .collect();
    let cmd = Command::SetWorkerImages {
        id: "w1".into(),
        images: many,
    };
    assert!(cmd.weight() > 50_000, "a big list weighs what it carries");
    s.apply(&cmd).unwrap();
    let held = &s.workers["w1"].images;
    assert_eq!(held.len(), weir_common::image::MAX_IMAGES);
    assert!(
        !held.iter().any(|i| i.tags == ["acme/a:1"]),
        "replaced, not merged"
    );

    // Re-registration keeps the worker's new list (here: none).
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    assert!(s.workers["w1"].images.is_empty());

    let unknown = Command::SetWorkerImages {
        id: "nope".into(),
        images: vec![],
    };
    let before = s.clone();
    assert_eq!(
        s.apply(&unknown),
        Err(CommandError::WorkerNotFound("nope".into()))
    );
    assert_eq!(s, before);
}

#[test]
fn worker_records_written_before_images_still_read() {
    let mut s = ClusterState::default();
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    let text = serde_json::to_string(&s).unwrap();
    assert!(!text.contains("\"images\""), "no images, no field: {text}");
    let back: ClusterState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, s);
    // And with images, they round-trip.
    s.apply(&Command::SetWorkerImages {
        id: "w1".into(),
        images: vec![image(7, "acme/a:1")],
    })
    .unwrap();
    let back: ClusterState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
    assert_eq!(back.workers["w1"].images[0].tags, ["acme/a:1"]);
}

/// Log entries as the master wrote them before commands were split by family: each
/// still reads as the same command, and is written again byte for byte.
#[test]
fn commands_written_before_still_read() {
    let written = [
        r#"{"cmd":"cancel_app","name":"clickstream","at_ms":20,"request_id":"r1"}"#,
        r#"{"cmd":"finish_app","app":"clickstream","at_ms":21,"pes":{"out@r#0":{"worker":"w1","records_in":5,"records_out":0,"bytes_in":50,"bytes_out":0}}}"#,
        r#"{"cmd":"set_placement","app":"clickstream","placement":{"out@r#0":"w1"},"gpus":{"out@r#0":["GPU-1"]}}"#,
        r#"{"cmd":"register_worker","worker":{"id":"w2","control_address":"127.0.0.1:1","data_address":"127.0.0.1:2","cpu_cores":2.0,"memory_mb":1024,"gpus":[],"labels":{},"state":"alive","incarnation":0,"registered_at_ms":5,"state_since_ms":0}}"#,
        r#"{"cmd":"set_worker_state","id":"w2","state":"lost","at_ms":7}"#,
        r#"{"cmd":"begin_checkpoint","app":"clickstream","id":3,"at_ms":8}"#,
        r#"{"cmd":"complete_checkpoint","app":"clickstream","id":3,"at_ms":9,"max_alignment_ms":2,"pieces":{"win@r#0":{"size_bytes":10,"crc32c":7,"replicas":["w1"]}}}"#,
        r#"{"cmd":"abandon_checkpoint","app":"clickstream","id":3}"#,
        r#"{"cmd":"recover","app":"clickstream","operators":["win"],"checkpoint_id":3,"placement":{"win@r#0":"w1"},"reason":"lost","at_ms":10,"drop_checkpoint":2}"#,
        r#"{"cmd":"upgrade_switch","app":"clickstream","id":1,"at_ms":11}"#,
        r#"{"cmd":"finish_upgrade_switch","app":"clickstream","id":1,"at_ms":12}"#,
        r#"{"cmd":"abort_upgrade","app":"clickstream","id":1,"at_ms":9,"reason":"why","recover":[["parse"],2]}"#,
        r#"{"cmd":"remove_template","name":"t"}"#,
        r#"{"cmd":"batch","cmds":[{"cmd":"abandon_checkpoint","app":"a","id":1}]}"#,
    ];
    for text in written {
        let cmd: Command = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(serde_json::to_string(&cmd).unwrap(), text);
    }
    // The variants that carry a spec: as the fixtures build them, through the log's form.
    let (_, begin) = upgrading();
    for cmd in [submit(10), begin] {
        let text = serde_json::to_string(&cmd).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), cmd);
    }
}

fn set_quota(pes: Option<u64>) -> Command {
    Command::SetQuota {
        tenant: "web".into(),
        quota: Some(Quota {
            pes,
            ..Quota::default()
        }),
    }
}

#[test]
fn a_submit_or_upgrade_over_the_quota_is_refused_and_changes_nothing() {
    let mut s = ClusterState::default();
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    // clickstream (tenant web) has 10 PEs; v2 has 12, of which 6 are new (the
    // rescaled and changed operators): 16 run side by side during the upgrade.
    s.apply(&set_quota(Some(9))).unwrap();
    let before = s.clone();
    let e = s.apply(&submit(10)).unwrap_err();
    assert!(matches!(e, CommandError::Quota(_)), "{e}");
    assert!(
        e.to_string().starts_with(
            "quota.pes: tenant \"web\" may hold 9 PEs; it holds 0 PEs and this needs 10 PEs more: this app alone"
        ),
        "{e}"
    );
    assert_eq!(s, before);
    s.apply(&set_quota(Some(11))).unwrap();
    let (_, begin) = upgrading();
    s.apply(&submit(10)).unwrap();
    s.apply(&Command::SetPlacement {
        app: "clickstream".into(),
        placement: all_on(APP, "w1"),
        gpus: BTreeMap::new(),
        at_ms: 20,
    })
    .unwrap();
    assert_eq!(s.apps["clickstream"].placed_at_ms, Some(20));
    let before = s.clone();
    let e = s.apply(&begin).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "quota.pes: tenant \"web\" may hold 11 PEs; it holds 0 PEs and this needs 16 PEs more"
        ),
        "{e}"
    );
    assert_eq!(s, before);
    s.apply(&set_quota(None)).unwrap();
    s.apply(&begin).unwrap();
}

#[test]
fn a_quota_must_be_a_finite_figure_for_a_valid_tenant() {
    let mut s = ClusterState::default();
    let before = s.clone();
    for (tenant, cpu, why) in [
        ("web", f64::NAN, "quota.cpu"),
        ("web", -1.0, "quota.cpu"),
        ("web", f64::INFINITY, "quota.cpu"),
        ("Web", 1.0, "tenant: \"Web\" must match"),
    ] {
        let e = s
            .apply(&Command::SetQuota {
                tenant: tenant.into(),
                quota: Some(Quota {
                    cpu: Some(cpu),
                    ..Quota::default()
                }),
            })
            .unwrap_err();
        assert!(e.to_string().starts_with(why), "{e}");
    }
    assert_eq!(s, before);
}

#[test]
fn leaving_the_queue_past_the_quota_is_refused_at_commit() {
    let mut s = ClusterState::default();
    s.apply(&Command::RegisterWorker {
        worker: worker("w1"),
    })
    .unwrap();
    s.apply(&set_quota(Some(10))).unwrap();
    s.apply(&submit(10)).unwrap();
    let other = APP.replace("name: clickstream", "name: second");
    submit_text(&mut s, &other, 11);
    s.apply(&Command::SetPlacement {
        app: "clickstream".into(),
        placement: all_on(APP, "w1"),
        gpus: BTreeMap::new(),
        at_ms: 20,
    })
    .unwrap();
    // Decided on a state where clickstream held nothing: refused now, nothing changes.
    let before = s.clone();
    let e = s
        .apply(&Command::SetPlacement {
            app: "second".into(),
            placement: all_on(&other, "w1"),
            gpus: BTreeMap::new(),
            at_ms: 30,
        })
        .unwrap_err();
    assert!(matches!(e, CommandError::Quota(_)), "{e}");
    assert_eq!(s, before);
}

/// Upgrade records in the flat form every master wrote before the lifecycle was typed
/// (`UpgradeRecordWire`): snapshots holding them still load, into the same lifecycle.
#[test]
fn upgrade_records_written_before_the_typed_lifecycle_load_and_round_trip() {
    let old = |extra: &str| {
        format!(
            r#"{{"id":4,"app":"a","from_version":1,"to_version":2,{extra},"summary":{{"pes_started":1,"pes_stopped":1,"pes_rewired":0,"pes_untouched":3,"channels_opened":2,"channels_closed":2}},"started_at_ms":100,"barrier":7,"placement":{{"x@0":"w1"}}}}"#
        )
    };
    let cases = [
        (
            // In switch, as today's master writes it.
            r#""completed_phase":"prepare","outcome":null,"finished_at_ms":null,"phase":"switch","phase_started_at_ms":150"#,
            UpgradeStage::Running {
                phase: Phase::Switch,
                since_ms: 150,
            },
        ),
        (
            // Written before `phase` was stored: the phase after the last completed.
            r#""completed_phase":"switch","outcome":null,"finished_at_ms":null"#,
            UpgradeStage::Running {
                phase: Phase::Cleanup,
                since_ms: 100,
            },
        ),
        (
            r#""completed_phase":null,"outcome":null,"finished_at_ms":null"#,
            UpgradeStage::Running {
                phase: Phase::Prepare,
                since_ms: 100,
            },
        ),
        (
            r#""completed_phase":"prepare","outcome":{"outcome":"rolled_back","reason":"worker w1 lost"},"finished_at_ms":180,"phase_started_at_ms":150"#,
            UpgradeStage::Ended {
                outcome: UpgradeOutcome::RolledBack("worker w1 lost".into()),
                at_ms: 180,
                completed: Some(Phase::Prepare),
                result: None,
            },
        ),
        (
            r#""completed_phase":"cleanup","outcome":{"outcome":"completed"},"finished_at_ms":200,"phase_started_at_ms":170,"result":{"pes_touched":2,"records_lost":0,"records_duplicated":0,"longest_stall_ms":12}"#,
            UpgradeStage::Ended {
                outcome: UpgradeOutcome::Completed,
                at_ms: 200,
                completed: Some(Phase::Cleanup),
                result: Some(UpgradeResultRecord {
                    pes_touched: 2,
                    longest_stall_ms: 12,
                    ..Default::default()
                }),
            },
        ),
    ];
    for (fields, stage) in cases {
        let text = old(fields);
        let up: UpgradeRecord =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(up.stage, stage, "{text}");
        assert_eq!((up.id, up.barrier, up.started_at_ms), (4, 7, 100));
        assert_eq!(up.placement["x@0"], "w1");
        // Written back in the same flat form, and read back the same.
        let again = serde_json::to_value(&up).unwrap();
        let was: serde_json::Value = serde_json::from_str(&text).unwrap();
        for key in ["completed_phase", "outcome", "finished_at_ms", "summary"] {
            assert_eq!(again[key], was[key], "{key} of {text}");
        }
        let back: UpgradeRecord = serde_json::from_value(again).unwrap();
        assert_eq!(back, up);
    }
}

#[test]
fn an_upgrade_ends_once_with_the_phase_it_had_reached() {
    let (mut s, begin) = upgrading();
    s.apply(&begin).unwrap();
    s.apply(&Command::UpgradeSwitch {
        app: "clickstream".into(),
        id: 1,
        at_ms: 110,
    })
    .unwrap();
    assert_eq!(s.upgrades[&1].phase(), Some(Phase::Switch));
    s.apply(&Command::AbortUpgrade {
        app: "clickstream".into(),
        id: 1,
        at_ms: 130,
        reason: "late".into(),
        recover: None,
    })
    .unwrap();
    let up = &s.upgrades[&1];
    assert_eq!(
        up.stage,
        UpgradeStage::Ended {
            outcome: UpgradeOutcome::RolledBack("late".into()),
            at_ms: 130,
            completed: Some(Phase::Prepare),
            result: None,
        }
    );
    assert_eq!((up.phase(), up.finished_at_ms()), (None, Some(130)));
    // Ended: a second end is refused and changes nothing.
    let before = s.clone();
    assert!(s
        .apply(&Command::AbortUpgrade {
            app: "clickstream".into(),
            id: 1,
            at_ms: 140,
            reason: "again".into(),
            recover: None,
        })
        .is_err());
    assert_eq!(s, before);
}

/// `Upgrading` is derived from the running operation; records that stored it (every
/// master before) read the same, and once the upgrade ended they read `Running`.
#[test]
fn upgrading_is_derived_from_the_running_operation_and_old_records_agree() {
    let (mut s, begin) = upgrading();
    s.apply(&begin).unwrap();
    let rec = &s.apps["clickstream"];
    assert_eq!(rec.state(), AppState::Upgrading);
    assert_eq!(rec.lifecycle, AppState::Running, "not stored");
    let mut json = serde_json::to_value(rec.as_ref()).unwrap();
    assert_eq!(json["state"], "running");
    // As an older master wrote it.
    json["state"] = "upgrading".into();
    let old: AppRecord = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(old.state(), AppState::Upgrading);
    // That upgrade ended (rolled back) under this master: it runs.
    let mut s2 = s.clone();
    std::sync::Arc::make_mut(s2.apps.get_mut("clickstream").unwrap()).lifecycle =
        AppState::Upgrading;
    s2.apply(&Command::AbortUpgrade {
        app: "clickstream".into(),
        id: 1,
        at_ms: 130,
        reason: "late".into(),
        recover: None,
    })
    .unwrap();
    assert_eq!(s2.apps["clickstream"].state(), AppState::Running);
    json["upgrade"] = serde_json::Value::Null;
    let ended: AppRecord = serde_json::from_value(json).unwrap();
    assert_eq!(ended.state(), AppState::Running);
    // A cancelled app is cancelled, upgrade or not.
    s.apply(&Command::CancelApp {
        name: "clickstream".into(),
        at_ms: 140,
        request_id: String::new(),
    })
    .unwrap();
    assert_eq!(s.apps["clickstream"].state(), AppState::Cancelled);
}

/// PE-keyed maps (placements, GPUs, pieces, hand-offs) are keyed by `PeId`, which
/// is written as its text: entries written when they were keyed by strings read the
/// same, apply the same, and are written back unchanged.
#[test]
fn pe_keyed_entries_written_with_string_keys_replay_and_write_back_unchanged() {
    let entries = [
        r#"{"cmd":"set_placement","app":"clickstream","placement":{"parse@abc#0":"w1","sink@def#0":"w2"},"gpus":{"parse@abc#0":["GPU-1"]},"at_ms":5}"#,
        r#"{"cmd":"complete_checkpoint","app":"clickstream","id":3,"at_ms":9,"max_alignment_ms":2,"pieces":{"parse@abc#0":{"size_bytes":10,"crc32c":7,"replicas":["w1","w2"]}}}"#,
    ];
    for text in entries {
        let cmd: Command = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        match &cmd {
            Command::SetPlacement {
                placement, gpus, ..
            } => {
                assert_eq!(placement["parse@abc#0"], "w1");
                let pe = placement.keys().next().unwrap();
                assert_eq!(pe.operator(), "parse");
                assert_eq!(gpus[pe], ["GPU-1"]);
            }
            Command::CompleteCheckpoint { pieces, .. } => {
                assert_eq!(pieces["parse@abc#0"].size_bytes, 10);
            }
            other => panic!("read as {other:?}"),
        }
        let again = serde_json::to_value(&cmd).unwrap();
        let was: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(again, was, "{text}");
    }
}

#[test]
fn a_scheduling_policy_is_kept_checked_for_bounds_and_cleared() {
    use super::scheduling::{SchedulingPolicyRecord, MAX_POLICY_WEIGHTS};
    let mut s = ClusterState::default();
    let spread = SchedulingPolicyRecord {
        gpu_policy: "objective-spread".into(),
        gpu_weights: vec!["model:h100=2".into()],
        fifo_queue: true,
        set_at_ms: 7,
    };
    s.apply(&Command::SetSchedulingPolicy {
        policy: Some(spread.clone()),
    })
    .unwrap();
    assert_eq!(s.scheduling.as_ref(), Some(&spread));
    // Out of bounds: refused, naming the field, and nothing changes.
    let before = s.clone();
    for (bad, field) in [
        (
            SchedulingPolicyRecord {
                gpu_policy: String::new(),
                ..spread.clone()
            },
            "policy.gpu_policy",
        ),
        (
            SchedulingPolicyRecord {
                gpu_weights: vec!["model:a=1".into(); MAX_POLICY_WEIGHTS + 1],
                ..spread.clone()
            },
            "policy.gpu_weights:",
        ),
        (
            SchedulingPolicyRecord {
                gpu_weights: vec!["model:a=1".into(), "x".repeat(301)],
                ..spread.clone()
            },
            "policy.gpu_weights[1]",
        ),
    ] {
        let e = s
            .apply(&Command::SetSchedulingPolicy { policy: Some(bad) })
            .unwrap_err();
        assert!(matches!(e, CommandError::Scheduling(_)), "{e:?}");
        assert!(e.to_string().starts_with(field), "{e}");
        assert_eq!(s, before);
    }
    // Kept in snapshots; a snapshot from before the field reads as none.
    let json = serde_json::to_value(&s).unwrap();
    let back: ClusterState = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.scheduling.as_ref(), Some(&spread));
    let mut old = json;
    old.as_object_mut().unwrap().remove("scheduling");
    let back: ClusterState = serde_json::from_value(old).unwrap();
    assert_eq!(back.scheduling, None);
    s.apply(&Command::SetSchedulingPolicy { policy: None })
        .unwrap();
    assert_eq!(s.scheduling, None);
}

#[test]
fn a_checkpoint_is_readable_only_while_every_snapshot_it_loads_has_a_live_copy() {
    let link = |id: u64, on: &[&str]| LinkRecord {
        checkpoint_id: id,
        size_bytes: 1,
        crc32c: 0,
        replicas: on.iter().map(|w| w.to_string()).collect(),
    };
    let piece = |on: &[&str]| PieceRecord {
        size_bytes: 1,
        crc32c: 0,
        replicas: on.iter().map(|w| w.to_string()).collect(),
        chain: vec![],
        seed: vec![],
    };
    let ck = |pieces: Vec<PieceRecord>| CheckpointRecord {
        id: 9,
        started_at_ms: 0,
        completed_at_ms: 0,
        max_alignment_ms: 0,
        pieces: pieces
            .into_iter()
            .enumerate()
            .map(|(i, p)| (PeId::new("op", "00000000", i as u32), p))
            .collect(),
        handoff: Default::default(),
    };
    let up = |w: &str| w != "lost";
    assert!(ck(vec![piece(&["lost", "w2"]), piece(&["w1"])]).readable(up));
    assert!(!ck(vec![piece(&["lost"]), piece(&["w1"])]).readable(up));
    // Copies not recorded: not ruled out.
    assert!(ck(vec![piece(&[])]).readable(up));
    // An increment whose base is only on the lost worker, or a successor's whose
    // predecessor's snapshot is.
    let mut incr = piece(&["w1"]);
    incr.chain = vec![link(7, &["lost"]), link(8, &["w1"])];
    assert!(!ck(vec![incr.clone()]).readable(up));
    incr.chain[0].replicas.push("w3".into());
    assert!(ck(vec![incr.clone()]).readable(up));
    incr.seed = vec![SeedRecord {
        pe: PeId::new("old", "00000000", 0),
        link: link(6, &["lost"]),
    }];
    assert!(!ck(vec![incr]).readable(up));
}
