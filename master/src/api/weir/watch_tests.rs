use super::*;
use crate::state::fixtures::{all_on, submitted, upgrading, APP as SPEC};
use crate::state::{PeId, UpgradeResultRecord};
use std::collections::BTreeMap;
use weir_common::plan::Instruction;

const APP: &str = "clickstream";

/// Applies `cmd` to `s` as the state machine does and feeds it to the watch.
fn feed(s: &mut ClusterState, watch: &mut AppWatch, cmd: Command) -> Vec<Note> {
    let response = s.apply(&cmd).expect("the command applies");
    watch.on(&cmd, &response)
}

fn open(s: &ClusterState) -> AppWatch {
    AppWatch::open(s, &s.apps[APP]).0
}

/// The phase events of `notes`: (operation id, phase, from -> to versions).
fn phase_versions(notes: &[Note]) -> Vec<(pb::UpgradePhase, u64, u64)> {
    notes
        .iter()
        .filter_map(|n| match &n.event {
            pb::app_event::Event::UpgradePhaseChanged(p) => Some((
                pb::UpgradePhase::try_from(p.phase).unwrap(),
                p.from_version,
                p.to_version,
            )),
            _ => None,
        })
        .collect()
}

/// The phase events of `notes`: (operation id, phase, version).
fn phases(notes: &[Note]) -> Vec<(String, pb::UpgradePhase, u32)> {
    notes
        .iter()
        .filter_map(|n| match &n.event {
            pb::app_event::Event::UpgradePhaseChanged(p) => Some((
                p.operation_id.clone(),
                pb::UpgradePhase::try_from(p.phase).unwrap(),
                n.version,
            )),
            _ => None,
        })
        .collect()
}

/// Runs upgrade 1 from `upgrading()` to its end, feeding every command to `watch`;
/// returns every event.
fn upgrade_to_the_end(s: &mut ClusterState, watch: &mut AppWatch, begin: Command) -> Vec<Note> {
    let mut notes = feed(s, watch, begin);
    for cmd in switch(s) {
        notes.extend(feed(s, watch, cmd));
    }
    notes.extend(feed(s, watch, complete()));
    notes
}

/// The commands of upgrade 1's switch, from its trigger to its finish.
fn switch(s: &ClusterState) -> [Command; 3] {
    let app = || APP.to_string();
    [
        Command::UpgradeSwitch {
            app: app(),
            id: 1,
            at_ms: 110,
        },
        Command::CompleteCheckpoint {
            app: app(),
            id: s.upgrades[&1].barrier,
            at_ms: 115,
            max_alignment_ms: 0,
            pieces: Default::default(),
        },
        Command::FinishUpgradeSwitch {
            app: app(),
            id: 1,
            at_ms: 120,
        },
    ]
}

fn complete() -> Command {
    Command::CompleteUpgrade {
        app: APP.into(),
        id: 1,
        at_ms: 130,
        result: UpgradeResultRecord::default(),
    }
}

#[test]
fn events_carry_the_version_current_when_they_happened() {
    let (mut s, begin) = upgrading();
    let mut watch = open(&s);
    let notes = upgrade_to_the_end(&mut s, &mut watch, begin);
    assert_eq!(
        phases(&notes),
        [
            ("1".into(), pb::UpgradePhase::Prepare, 1),
            ("1".into(), pb::UpgradePhase::Switch, 1),
            ("1".into(), pb::UpgradePhase::Cleanup, 2),
            ("1".into(), pb::UpgradePhase::Done, 2),
        ],
        "v2 is current from the switch on"
    );
    assert_eq!(
        phase_versions(&notes),
        [
            (pb::UpgradePhase::Prepare, 1, 2),
            (pb::UpgradePhase::Switch, 1, 2),
            (pb::UpgradePhase::Cleanup, 1, 2),
            (pb::UpgradePhase::Done, 1, 2),
        ],
        "every phase event says which versions the upgrade goes between"
    );
    let checkpoint = notes
        .iter()
        .find(|n| matches!(n.event, pb::app_event::Event::CheckpointCompleted(_)))
        .unwrap();
    assert_eq!(
        checkpoint.version, 1,
        "the switch barrier completes under v1"
    );
    // Later events belong to v2.
    let placement = s.apps[APP].placement.clone();
    let later = feed(
        &mut s,
        &mut watch,
        Command::SetPlacement {
            app: APP.into(),
            placement,
            gpus: BTreeMap::new(),
            at_ms: 0,
        },
    );
    assert_eq!(later.iter().map(|n| n.version).collect::<Vec<_>>(), [2]);
}

#[test]
fn a_watch_opened_during_an_upgrade_follows_its_switch() {
    let (mut s, begin) = upgrading();
    s.apply(&begin).unwrap();
    let mut watch = open(&s);
    let barrier = s.upgrades[&1].barrier;
    for cmd in [
        Command::UpgradeSwitch {
            app: APP.into(),
            id: 1,
            at_ms: 110,
        },
        Command::CompleteCheckpoint {
            app: APP.into(),
            id: barrier,
            at_ms: 115,
            max_alignment_ms: 0,
            pieces: Default::default(),
        },
    ] {
        feed(&mut s, &mut watch, cmd);
    }
    let notes = feed(
        &mut s,
        &mut watch,
        Command::FinishUpgradeSwitch {
            app: APP.into(),
            id: 1,
            at_ms: 120,
        },
    );
    assert_eq!(phases(&notes), [("1".into(), pb::UpgradePhase::Cleanup, 2)]);
    assert_eq!(
        phase_versions(&notes),
        [(pb::UpgradePhase::Cleanup, 1, 2)],
        "a watch opened mid-upgrade knows its versions from the record"
    );
}

#[test]
fn the_prepare_event_names_its_operation_once() {
    let (mut s, begin) = upgrading();
    let mut watch = open(&s);
    let notes = feed(&mut s, &mut watch, begin.clone());
    assert_eq!(phases(&notes), [("1".into(), pb::UpgradePhase::Prepare, 1)]);
    // A repeated request (same request id, same spec) answers operation 1 again.
    let repeat = Command::Batch { cmds: vec![begin] };
    let response = Response::Batch {
        results: vec![Ok(Response::UpgradeStarted { id: 1, version: 2 })],
    };
    assert!(
        watch.on(&repeat, &response).is_empty(),
        "a repeat prepares nothing new"
    );
}

#[test]
fn a_batch_is_read_command_by_command_and_the_stream_ends_with_the_app() {
    let mut s = submitted();
    let mut watch = open(&s);
    let placement = all_on(SPEC, "w1");
    let batch = Command::Batch {
        cmds: vec![
            Command::SetPlacement {
                app: APP.into(),
                placement,
                gpus: BTreeMap::new(),
                at_ms: 0,
            },
            Command::CancelApp {
                name: "another".into(),
                at_ms: 20,
                request_id: String::new(),
            },
            Command::CancelApp {
                name: APP.into(),
                at_ms: 20,
                request_id: String::new(),
            },
        ],
    };
    let notes = feed(&mut s, &mut watch, batch);
    assert!(watch.ended());
    assert!(matches!(
        notes[0].event,
        pb::app_event::Event::PlacementChanged(_)
    ));
    let pb::app_event::Event::AppStateChanged(change) = &notes[1].event else {
        panic!("{notes:?}")
    };
    assert_eq!(
        (change.old_state, change.new_state),
        (pb::AppState::Running as i32, pb::AppState::Cancelled as i32),
        "the state it left is the one it had then, not at subscription"
    );
    assert_eq!(notes.len(), 2, "the refused command says nothing");
}

#[test]
fn a_rolled_back_upgrade_says_why() {
    let (mut s, begin) = upgrading();
    let mut watch = open(&s);
    feed(&mut s, &mut watch, begin);
    let notes = feed(
        &mut s,
        &mut watch,
        Command::AbortUpgrade {
            app: APP.into(),
            id: 1,
            at_ms: 120,
            reason: "new PE score@2#0 failed: no such image".into(),
            recover: None,
        },
    );
    let rolled_back: Vec<_> = notes
        .iter()
        .filter_map(|n| match &n.event {
            pb::app_event::Event::UpgradePhaseChanged(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(rolled_back.len(), 1);
    let p = &rolled_back[0];
    assert_eq!(p.phase, pb::UpgradePhase::RolledBack as i32);
    assert_eq!((p.from_version, p.to_version), (1, 2));
    assert_eq!(p.reason, "new PE score@2#0 failed: no such image");
}

/// The instruction counts of `notes`' phase events: (phase, done, total).
fn phase_counts(notes: &[Note]) -> Vec<(pb::UpgradePhase, u32, u32)> {
    notes
        .iter()
        .filter_map(|n| match &n.event {
            pb::app_event::Event::UpgradePhaseChanged(p) => Some((
                pb::UpgradePhase::try_from(p.phase).unwrap(),
                p.instructions_done,
                p.instructions_total,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn phase_events_count_their_phases_instructions() {
    let (mut s, begin) = upgrading();
    // The plan the upgrade runs, counted by phase.
    let app = &s.apps[APP];
    let Command::BeginUpgrade { spec, .. } = &begin else {
        unreachable!()
    };
    use weir_common::plan::Phase;
    let p = weir_common::plan::plan(&app.current().spec, spec, None);
    // Counted here by instruction kind, not as the watch counts them.
    let count = |ph: Phase| -> u32 {
        p.instructions()
            .filter(|(_, i)| match ph {
                Phase::Prepare => matches!(
                    i,
                    Instruction::StartPe { .. } | Instruction::OpenChannel { .. }
                ),
                Phase::Switch => matches!(
                    i,
                    Instruction::SwitchOutput { .. } | Instruction::Drain { .. }
                ),
                Phase::Cleanup => matches!(
                    i,
                    Instruction::CloseChannel { .. } | Instruction::StopPe { .. }
                ),
            })
            .count() as u32
    };
    let (prepare, switch, cleanup) = (
        count(Phase::Prepare),
        count(Phase::Switch),
        count(Phase::Cleanup),
    );
    assert!(
        prepare > 0 && switch > 0 && cleanup > 0,
        "{prepare} {switch} {cleanup}"
    );
    assert_eq!(p.instructions().count() as u32, prepare + switch + cleanup);
    let mut watch = open(&s);
    let notes = upgrade_to_the_end(&mut s, &mut watch, begin.clone());
    let want = [
        (pb::UpgradePhase::Prepare, 0, prepare),
        (pb::UpgradePhase::Switch, 0, switch),
        (pb::UpgradePhase::Cleanup, 0, cleanup),
        (pb::UpgradePhase::Done, cleanup, cleanup),
    ];
    assert_eq!(phase_counts(&notes), want);
    // A watch opened mid-upgrade counts the same.
    let (mut s, begin) = upgrading();
    s.apply(&begin).unwrap();
    let mut watch = open(&s);
    let notes = feed(
        &mut s,
        &mut watch,
        Command::UpgradeSwitch {
            app: APP.into(),
            id: 1,
            at_ms: 110,
        },
    );
    assert_eq!(phase_counts(&notes), want[1..2]);
}

#[test]
fn a_checkpoint_says_how_long_it_took_and_a_switch_checkpoint_too() {
    let (mut s, begin) = upgrading();
    let mut watch = open(&s);
    let id = s.apps[APP].checkpoints.last_id + 1;
    let begin_ck = Command::BeginCheckpoint {
        app: APP.into(),
        id,
        at_ms: 50,
    };
    assert!(feed(&mut s, &mut watch, begin_ck).is_empty());
    let done = feed(
        &mut s,
        &mut watch,
        Command::CompleteCheckpoint {
            app: APP.into(),
            id,
            at_ms: 87,
            max_alignment_ms: 0,
            pieces: Default::default(),
        },
    );
    let durations = |notes: &[Note]| -> Vec<(u64, u64)> {
        notes
            .iter()
            .filter_map(|n| match &n.event {
                pb::app_event::Event::CheckpointCompleted(c) => {
                    Some((c.checkpoint_id, c.duration_ms))
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(durations(&done), [(id, 37)]);
    // The switch barrier: from UpgradeSwitch (110) to its completion (115).
    let notes = upgrade_to_the_end(&mut s, &mut watch, begin);
    let barrier = s.upgrades[&1].barrier;
    assert_eq!(durations(&notes), [(barrier, 5)]);
    // A watch opened while a checkpoint is in flight knows when it began.
    let id = s.apps[APP].checkpoints.last_id + 1;
    s.apply(&Command::BeginCheckpoint {
        app: APP.into(),
        id,
        at_ms: 200,
    })
    .unwrap();
    let mut late = open(&s);
    let done = feed(
        &mut s,
        &mut late,
        Command::CompleteCheckpoint {
            app: APP.into(),
            id,
            at_ms: 260,
            max_alignment_ms: 0,
            pieces: Default::default(),
        },
    );
    assert_eq!(durations(&done), [(id, 60)]);
}

#[test]
fn a_recovery_names_the_workers_its_pes_left_and_moved_to() {
    let (mut s, _) = upgrading();
    s.apply(&Command::RegisterWorker {
        worker: crate::state::fixtures::worker("w2"),
    })
    .unwrap();
    let mut watch = open(&s);
    let recover = |placement: Placement| Command::Recover {
        app: APP.into(),
        operators: vec!["parse".into(), "views".into()],
        checkpoint_id: 0,
        placement,
        reason: "worker w1 lost".into(),
        at_ms: 300,
        drop_checkpoint: None,
        gpus: BTreeMap::new(),
    };
    let recovery = |notes: &[Note]| -> (String, String) {
        notes
            .iter()
            .find_map(|n| match &n.event {
                pb::app_event::Event::Recovery(r) => {
                    Some((r.failed_worker_id.clone(), r.new_worker_id.clone()))
                }
                _ => None,
            })
            .expect("a recovery")
    };
    // In place: no worker left.
    let notes = feed(&mut s, &mut watch, recover(all_on(SPEC, "w1")));
    assert_eq!(recovery(&notes), (String::new(), String::new()));
    // parse's PEs move to w2; the rest stay.
    let mut moved = all_on(SPEC, "w1");
    for (pe, w) in moved.iter_mut() {
        if pe.starts_with("parse@") {
            *w = "w2".into();
        }
    }
    let notes = feed(&mut s, &mut watch, recover(moved));
    assert_eq!(recovery(&notes), ("w1".into(), "w2".into()));
    // And back: the watch follows the placement it announced.
    let notes = feed(&mut s, &mut watch, recover(all_on(SPEC, "w1")));
    assert_eq!(recovery(&notes), ("w2".into(), "w1".into()));
}

fn change(app: &str, pe: &PeId, worker: &str, new: pb::PeState, message: &str) -> PeChange {
    PeChange {
        app: app.into(),
        pe: pe.clone(),
        worker: worker.into(),
        old: pb::PeState::Starting,
        new,
        message: message.into(),
    }
}

/// The PE state event of `note`: (PE, worker, old, new, message).
fn pe_event(note: Option<Note>) -> Option<(String, String, i32, i32, String, u32)> {
    let note = note?;
    match note.event {
        pb::app_event::Event::PeStateChanged(p) => Some((
            p.pe,
            p.worker_id,
            p.old_state,
            p.new_state,
            p.message,
            note.version,
        )),
        other => panic!("not a PE event: {other:?}"),
    }
}

#[test]
fn pe_states_are_told_for_the_apps_pes_where_they_run_including_an_upgrades() {
    use pb::PeState::{Failed, Running, Starting, Stopped};
    let (mut s, begin) = upgrading();
    let mut watch = open(&s);
    let Command::BeginUpgrade { placement: v2, .. } = &begin else {
        unreachable!()
    };
    let v1 = s.apps[APP].placement.clone();
    let kept = v1.keys().find(|pe| v2.contains_key(*pe)).unwrap().clone();
    let replaced = v1.keys().find(|pe| !v2.contains_key(*pe)).unwrap().clone();
    let added = v2.keys().find(|pe| !v1.contains_key(*pe)).unwrap().clone();
    let app = || APP.to_string();

    assert_eq!(
        pe_event(watch.on_pe(&change(APP, &kept, "w1", Running, "ignored"))),
        Some((
            kept.to_string(),
            "w1".into(),
            Starting as i32,
            Running as i32,
            String::new(),
            1
        )),
        "a running PE's message is not an error"
    );
    assert_eq!(
        pe_event(watch.on_pe(&change(APP, &kept, "w1", Failed, "exit 3"))).map(|e| e.4),
        Some("exit 3".into())
    );
    // A worker the PE is not on (it moved off it), or another app's PE of that id.
    assert_eq!(watch.on_pe(&change(APP, &kept, "w2", Running, "")), None);
    assert_eq!(
        watch.on_pe(&change("other", &kept, "w1", Running, "")),
        None
    );
    // A PE of the new version is the app's once its upgrade begins.
    assert_eq!(watch.on_pe(&change(APP, &added, "w1", Running, "")), None);
    feed(&mut s, &mut watch, begin.clone());
    assert!(watch
        .on_pe(&change(APP, &added, "w1", Running, ""))
        .is_some());
    for cmd in switch(&s) {
        feed(&mut s, &mut watch, cmd);
    }
    // After the switch, the replaced PE drains and stops: still the app's, under v2.
    assert_eq!(
        pe_event(watch.on_pe(&change(APP, &replaced, "w1", Stopped, ""))).map(|e| e.5),
        Some(2)
    );
    feed(&mut s, &mut watch, complete());
    assert_eq!(
        watch.on_pe(&change(APP, &replaced, "w1", Stopped, "")),
        None
    );
    assert!(watch
        .on_pe(&change(APP, &added, "w1", Running, ""))
        .is_some());
    // An ended app tells nothing more.
    feed(
        &mut s,
        &mut watch,
        Command::CancelApp {
            name: app(),
            at_ms: 140,
            request_id: String::new(),
        },
    );
    assert_eq!(watch.on_pe(&change(APP, &added, "w1", Stopped, "")), None);
}

#[test]
fn placement_events_tell_each_pes_gpus_as_the_state_keeps_them() {
    let mut s = crate::state::fixtures::submitted();
    s.apply(&Command::RegisterWorker {
        worker: crate::state::fixtures::worker("w2"),
    })
    .unwrap();
    let mut watch = open(&s);
    let placement = all_on(SPEC, "w1");
    let views: Vec<PeId> = placement
        .keys()
        .filter(|p| p.starts_with("views@"))
        .cloned()
        .collect();
    let gpus_told = |notes: &[Note]| -> BTreeMap<String, Vec<String>> {
        notes
            .iter()
            .find_map(|n| match &n.event {
                pb::app_event::Event::PlacementChanged(p) => Some(
                    p.placements
                        .iter()
                        .filter(|p| !p.gpu_uuids.is_empty())
                        .map(|p| (p.pe.clone(), p.gpu_uuids.clone()))
                        .collect(),
                ),
                _ => None,
            })
            .expect("a placement event")
    };
    let notes = feed(
        &mut s,
        &mut watch,
        Command::SetPlacement {
            app: APP.into(),
            placement: placement.clone(),
            gpus: views
                .iter()
                .map(|p| (p.clone(), vec![format!("GPU-{p}")]))
                .collect(),
            at_ms: 1,
        },
    );
    let told = gpus_told(&notes);
    assert_eq!(told.len(), views.len(), "{told:?}");
    assert_eq!(told[views[0].as_str()], vec![format!("GPU-{}", views[0])]);
    // A recovery moves the first views PE: it releases its device; the others keep
    // theirs, as the state does.
    let mut moved = placement.clone();
    moved.insert(views[0].clone(), "w2".into());
    let notes = feed(
        &mut s,
        &mut watch,
        Command::Recover {
            app: APP.into(),
            operators: vec!["views".into()],
            checkpoint_id: 0,
            placement: moved,
            reason: "test".into(),
            at_ms: 2,
            drop_checkpoint: None,
            gpus: BTreeMap::new(),
        },
    );
    let told = gpus_told(&notes);
    assert!(!told.contains_key(views[0].as_str()), "{told:?}");
    assert_eq!(told.len(), views.len() - 1);
    let kept: BTreeMap<String, Vec<String>> = s.apps[APP]
        .gpus
        .iter()
        .map(|(p, g)| (p.to_string(), g.clone()))
        .collect();
    assert_eq!(told, kept, "the watch tells what the state keeps");
}
