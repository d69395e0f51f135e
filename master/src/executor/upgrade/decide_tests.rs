//! The orchestrator's decisions, without a network: clickstream v1 -> v2 (parse
//! replaced, views rescaled 2 -> 4) on worker w1, through every phase.

use super::decide::*;
use super::upgrade_plan;
use crate::state::fixtures::upgrading;
use crate::state::{
    ClusterState, Command, UpgradeRecord, UpgradeResultRecord, UpgradeStage, WorkerState,
};
use std::collections::BTreeMap;
use weir_common::physical::PeId;
use weir_common::plan::{Instruction, Phase, UpgradePlan};
use weir_proto::v1 as pb;

const APP: &str = "clickstream";

/// The state once the upgrade began (in prepare, at 100 ms).
fn begun() -> ClusterState {
    let (mut s, begin) = upgrading();
    s.apply(&begin).unwrap();
    s
}

fn plan_of(s: &ClusterState) -> (UpgradeRecord, UpgradePlan) {
    let up = s.upgrades[&1].clone();
    let p = upgrade_plan(&s.apps[APP], &up).unwrap();
    (up, p)
}

fn report(pe: &str, state: pb::PeState) -> ((String, PeId), pb::PeReport) {
    (
        ("w1".to_string(), PeId::from(pe)),
        pb::PeReport {
            pe: pe.into(),
            app: APP.into(),
            state: state as i32,
            ..Default::default()
        },
    )
}

/// The new PEs the plan starts.
fn new_pes(p: &UpgradePlan) -> Vec<PeId> {
    p.instructions()
        .filter_map(|(_, i)| match i {
            Instruction::StartPe { pe, .. } => Some(pe.clone()),
            _ => None,
        })
        .collect()
}

/// Every PE of both versions running.
fn all_running(s: &ClusterState, p: &UpgradePlan) -> Reports {
    s.apps[APP]
        .placement
        .keys()
        .cloned()
        .chain(new_pes(p))
        .map(|pe| report(pe.as_str(), pb::PeState::Running))
        .collect()
}

fn decide(
    s: &ClusterState,
    reports: &Reports,
    rollback: Option<&str>,
    now: u64,
    m: &mut Memory,
) -> Step {
    let (up, p) = plan_of(s);
    decide_upgrade(s, &s.apps[APP], &up, &p, reports, rollback, now, m)
}

fn prepare(s: &ClusterState, reports: &Reports, precopy: bool) -> Prepare {
    let (up, p) = plan_of(s);
    decide_prepare(&s.apps[APP], &up, &p, reports, precopy, |_| 0, |_| 0)
}

fn start_checkpoint(s: &mut ClusterState) {
    let id = s.apps[APP].checkpoints.last_id + 1;
    s.apply(&Command::BeginCheckpoint {
        app: APP.into(),
        id,
        at_ms: 105,
    })
    .unwrap();
}

#[test]
fn prepare_starts_the_new_pes_not_running_and_switches_once_everything_runs() {
    let s = begun();
    let (_, p) = plan_of(&s);
    let started = new_pes(&p);
    assert_eq!(
        started.len(),
        6,
        "parse 2 replaced, views 4 new: {started:?}"
    );
    // Nothing reported yet: start all, wait.
    let Prepare::Go { start, then } = prepare(&s, &Reports::new(), true) else {
        panic!("held")
    };
    let mut names: Vec<String> = start.iter().map(|(_, pe, _)| pe.to_string()).collect();
    names.sort();
    let mut want = started.clone();
    want.sort();
    assert_eq!(names, want);
    assert!(start.iter().all(|(w, _, a)| w == "w1" && *a == 0));
    assert_eq!(then, AfterPrepare::Wait);
    // Everything runs: nothing to start, switch.
    let running = all_running(&s, &p);
    assert_eq!(
        prepare(&s, &running, true),
        Prepare::Go {
            start: vec![],
            then: AfterPrepare::Switch
        }
    );
    // A new PE running an older attempt is started again.
    let mut old_attempt = running.clone();
    old_attempt
        .get_mut(&("w1".to_string(), started[0].clone()))
        .unwrap()
        .attempt = 7;
    let (up, p) = plan_of(&s);
    let Prepare::Go { start, then } =
        decide_prepare(&s.apps[APP], &up, &p, &old_attempt, true, |_| 0, |_| 0)
    else {
        panic!("held")
    };
    assert_eq!(start.len(), 1);
    assert_eq!(start[0].1, started[0]);
    assert_eq!(then, AfterPrepare::Wait);
    // A new PE reported starting (pre-copying, say): wait, without deploying it again;
    // starting an older attempt, it is deployed again.
    let mut precopying = running.clone();
    let key = ("w1".to_string(), started[0].clone());
    precopying.get_mut(&key).unwrap().state = pb::PeState::Starting as i32;
    assert_eq!(
        prepare(&s, &precopying, true),
        Prepare::Go {
            start: vec![],
            then: AfterPrepare::Wait
        }
    );
    precopying.get_mut(&key).unwrap().attempt = 7;
    let Prepare::Go { start, .. } = prepare(&s, &precopying, true) else {
        panic!("held")
    };
    assert_eq!(start, vec![("w1".to_string(), started[0].clone(), 0)]);
    // An old PE not running yet: wait.
    let mut starting = running.clone();
    let old = s.apps[APP].placement.keys().next().unwrap().clone();
    starting.insert(
        report(&old, pb::PeState::Starting).0,
        report(&old, pb::PeState::Starting).1,
    );
    assert!(matches!(
        prepare(&s, &starting, true),
        Prepare::Go {
            then: AfterPrepare::Wait,
            ..
        }
    ));
    // An old PE that finished: nothing to switch, roll back.
    let mut stopped = running.clone();
    stopped.insert(
        report(&old, pb::PeState::Stopped).0,
        report(&old, pb::PeState::Stopped).1,
    );
    let Prepare::Go {
        then: AfterPrepare::Abort(why),
        ..
    } = prepare(&s, &stopped, true)
    else {
        panic!("not aborted")
    };
    assert!(
        why.contains(old.as_str()) && why.contains("finished"),
        "{why}"
    );
}

#[test]
fn prepare_holds_while_a_checkpoint_is_in_flight_and_successors_pre_copy() {
    let mut s = begun();
    let (_, p) = plan_of(&s);
    let running = all_running(&s, &p);
    start_checkpoint(&mut s);
    assert_eq!(prepare(&s, &running, true), Prepare::Hold);
    // Without pre-copy new PEs start, but the switch still waits for the checkpoint.
    assert_eq!(
        prepare(&s, &running, false),
        Prepare::Go {
            start: vec![],
            then: AfterPrepare::Wait
        }
    );
}

#[test]
fn a_failed_new_pe_a_lost_worker_a_rollback_or_a_timeout_ends_prepare() {
    let s = begun();
    let (_, p) = plan_of(&s);
    let running = all_running(&s, &p);
    let mut m = Memory::default();
    assert_eq!(decide(&s, &running, None, 200, &mut m), Step::Prepare);
    // A new PE failed.
    let new = new_pes(&p)[0].clone();
    let mut failed = running.clone();
    let (k, mut r) = report(&new, pb::PeState::Failed);
    r.message = "exit 3".into();
    failed.insert(k, r);
    assert_eq!(
        decide(&s, &failed, None, 200, &mut m),
        Step::Abort {
            reason: format!("new PE {new} failed: exit 3"),
            recover: None
        }
    );
    // The reconciler's finding comes first.
    assert_eq!(
        decide(&s, &failed, Some("old PE lost"), 200, &mut m),
        Step::Abort {
            reason: "old PE lost".into(),
            recover: None
        }
    );
    // The new PEs' worker is lost.
    let mut lost = s.clone();
    lost.apply(&Command::SetWorkerState {
        id: "w1".into(),
        state: WorkerState::Lost,
        at_ms: 150,
    })
    .unwrap();
    let Step::Abort { reason, recover } = decide(&lost, &running, None, 200, &mut m) else {
        panic!("not aborted")
    };
    assert!(reason.starts_with("worker w1 of new PE"), "{reason}");
    assert_eq!(recover, None);
    // Prepare ran out of time (it began at 100).
    assert_eq!(
        decide(&s, &running, None, 100 + PREPARE_TIMEOUT_MS, &mut m),
        Step::Prepare
    );
    assert_eq!(
        decide(&s, &running, None, 101 + PREPARE_TIMEOUT_MS, &mut m),
        Step::Abort {
            reason: "prepare did not finish within 30 s".into(),
            recover: None
        }
    );
}

#[test]
fn the_switch_is_triggered_once_finished_with_its_checkpoint_and_rolled_back_with_its_region() {
    let mut s = begun();
    let (up, p) = plan_of(&s);
    s.apply(&Command::UpgradeSwitch {
        app: APP.into(),
        id: 1,
        at_ms: 110,
    })
    .unwrap();
    let running = all_running(&s, &p);
    let mut m = Memory::default();
    // This leader did not trigger it (a new leader, say): trigger.
    assert_eq!(decide(&s, &running, None, 120, &mut m), Step::TriggerSwitch);
    m.switch_triggered.insert((APP.into(), up.barrier));
    assert_eq!(decide(&s, &running, None, 120, &mut m), Step::Wait);
    // A failure in the switch restarts the touched region from the checkpoint before
    // the barrier (none here: 0).
    let Step::Abort { reason, recover } = decide(&s, &running, Some("worker w2 lost"), 120, &mut m)
    else {
        panic!("not aborted")
    };
    assert_eq!(reason, "worker w2 lost");
    let (ops, ck) = recover.expect("a region to restart");
    assert_eq!(ck, 0);
    for op in ["parse", "views"] {
        assert!(ops.iter().any(|o| o == op), "{op} in {ops:?}");
    }
    // The switch's own clock: 30 s from its start at 110.
    assert!(matches!(
        decide(&s, &running, None, 111 + SWITCH_TIMEOUT_MS, &mut m),
        Step::Abort { reason, recover: Some(_) } if reason == "switch did not finish within 30 s"
    ));
    // The barrier's checkpoint completed: finish the switch.
    s.apply(&Command::CompleteCheckpoint {
        app: APP.into(),
        id: up.barrier,
        at_ms: 130,
        max_alignment_ms: 0,
        pieces: BTreeMap::new(),
    })
    .unwrap();
    assert_eq!(decide(&s, &running, None, 140, &mut m), Step::FinishSwitch);
    // Once the upgrade is no longer running, what the leader held of it is forgotten.
    m.plans.insert(1, std::sync::Arc::new(p.clone()));
    m.least_missing.insert(1, 3);
    m.retain_running(&s);
    assert_eq!(
        (
            m.switch_triggered.len(),
            m.plans.len(),
            m.least_missing.len()
        ),
        (1, 1, 1)
    );
    s.apply(&Command::FinishUpgradeSwitch {
        app: APP.into(),
        id: 1,
        at_ms: 150,
    })
    .unwrap();
    s.apply(&Command::CompleteUpgrade {
        app: APP.into(),
        id: 1,
        at_ms: 160,
        result: UpgradeResultRecord::default(),
    })
    .unwrap();
    m.retain_running(&s);
    assert!(m.switch_triggered.is_empty() && m.plans.is_empty() && m.least_missing.is_empty());
}

/// The state in cleanup (switched at 150), and its plan.
fn cleaning() -> (ClusterState, UpgradePlan) {
    let mut s = begun();
    let (up, p) = plan_of(&s);
    for cmd in [
        Command::UpgradeSwitch {
            app: APP.into(),
            id: 1,
            at_ms: 110,
        },
        Command::CompleteCheckpoint {
            app: APP.into(),
            id: up.barrier,
            at_ms: 130,
            max_alignment_ms: 0,
            pieces: BTreeMap::new(),
        },
        Command::FinishUpgradeSwitch {
            app: APP.into(),
            id: 1,
            at_ms: 150,
        },
    ] {
        s.apply(&cmd).unwrap();
    }
    (s, p)
}

fn audit(s: &ClusterState, missing: u64, duplicates: u64) -> ((String, PeId), pb::PeReport) {
    let pe = s.apps[APP]
        .placement
        .keys()
        .find(|pe| pe.starts_with("audit@"))
        .unwrap();
    let (k, mut r) = report(pe, pb::PeState::Running);
    r.verify = Some(pb::VerifySummary {
        missing_settled: missing,
        duplicates,
        ..Default::default()
    });
    (k, r)
}

#[test]
fn cleanup_waits_for_drained_pes_and_settling_gaps_then_completes_with_the_least_missing() {
    let (s, p) = cleaning();
    assert!(matches!(
        s.upgrades[&1].stage,
        UpgradeStage::Running {
            phase: Phase::Cleanup,
            since_ms: 150
        }
    ));
    let mut m = Memory::default();
    let mut reports: Reports = s.apps[APP]
        .placement
        .keys()
        .map(|pe| report(pe, pb::PeState::Running))
        .collect();
    // An old PE (v1's parse was replaced) still reported: wait for it to stop.
    let replaced = p
        .instructions()
        .find_map(|(_, i)| match i {
            Instruction::StopPe { pe } => Some(pe.to_string()),
            _ => None,
        })
        .expect("a PE stops");
    assert!(!s.apps[APP].placement.contains_key(replaced.as_str()));
    let (k, r) = report(&replaced, pb::PeState::Running);
    reports.insert(k.clone(), r);
    let (audit_key, r) = audit(&s, 0, 0);
    reports.insert(audit_key.clone(), r);
    assert_eq!(
        decide(&s, &reports, None, 160, &mut Memory::default()),
        Step::Wait
    );
    // On a lost worker it does not hold cleanup up.
    let mut gone = s.clone();
    gone.workers.get_mut("w1").unwrap().state = WorkerState::Lost;
    assert!(matches!(
        decide(&gone, &reports, None, 161, &mut Memory::default()),
        Step::Complete(_)
    ));
    reports.remove(&k);
    // Gaps at the audit: wait for them to close, keeping the least seen.
    reports.insert(audit_key.clone(), audit(&s, 5, 1).1);
    assert_eq!(decide(&s, &reports, None, 170, &mut m), Step::Wait);
    let (_, r) = audit(&s, 2, 1);
    reports.insert(audit_key.clone(), r);
    assert_eq!(decide(&s, &reports, None, 180, &mut m), Step::Wait);
    let (_, r) = audit(&s, 4, 1);
    reports.insert(audit_key.clone(), r);
    assert_eq!(
        decide(&s, &reports, None, 150 + CLEANUP_SETTLE_MS, &mut m),
        Step::Wait
    );
    let Step::Complete(result) = decide(&s, &reports, None, 151 + CLEANUP_SETTLE_MS, &mut m) else {
        panic!("not complete")
    };
    assert_eq!((result.records_lost, result.records_duplicated), (2, 1));
    assert!(m.least_missing.is_empty(), "forgotten once complete");
    // No gaps: complete at once.
    let (_, r) = audit(&s, 0, 0);
    reports.insert(audit_key, r);
    assert!(matches!(
        decide(&s, &reports, None, 160, &mut m),
        Step::Complete(r) if r.records_lost == 0
    ));
    // A failure reported now does not roll back: the switch is done.
    m.least_missing.clear();
    assert!(matches!(
        decide(&s, &reports, Some("late"), 160, &mut m),
        Step::Complete(_)
    ));
}

#[test]
fn an_ended_upgrade_has_no_step() {
    let (mut s, _) = cleaning();
    s.apply(&Command::CompleteUpgrade {
        app: APP.into(),
        id: 1,
        at_ms: 160,
        result: UpgradeResultRecord::default(),
    })
    .unwrap();
    assert_eq!(
        decide(&s, &Reports::new(), Some("x"), 170, &mut Memory::default()),
        Step::Wait
    );
}

fn up_started(started_at_ms: u64) -> UpgradeRecord {
    let mut up = begun().upgrades[&1].clone();
    up.started_at_ms = started_at_ms;
    up
}

#[test]
fn the_stall_is_the_gap_beyond_the_steady_one_since_the_upgrade_began() {
    // Ten seconds of per-second longest gaps; the upgrade began 1.5 s ago (the
    // last two seconds).
    let audit = [12, 13, 12, 11, 14, 12, 12, 13, 85, 12];
    assert_eq!(stall(&audit, 10_500, &up_started(9_000)), 85 - 14);
    // A window's sink waits a window between batches anyway: nothing added.
    let windowed = [1000; 10];
    assert_eq!(stall(&windowed, 10_500, &up_started(9_000)), 0);
    // Nothing before the upgrade to compare with: the whole gap counts.
    assert_eq!(stall(&[40, 90], 10_500, &up_started(0)), 90);
    assert_eq!(stall(&[], 10_500, &up_started(9_000)), 0);
}

#[test]
fn a_prepare_has_a_second_more_per_50_mb_its_new_pes_pre_copy() {
    let s = begun();
    let (mut up, _) = plan_of(&s);
    let mut app = (*s.apps[APP]).clone();
    // Two new PEs taking over the state of two old ones (a rescale's successors).
    let old: Vec<PeId> = app.placement.keys().take(2).cloned().collect();
    up.handoff.insert(PeId::from("views@new#0"), old.clone());
    up.handoff
        .insert(PeId::from("views@new#1"), old[1..].to_vec());
    assert_eq!(
        prepare_limit_ms(&app, &up),
        PREPARE_TIMEOUT_MS,
        "no checkpoint"
    );
    // The latest complete checkpoint holds each predecessor's piece: 60 MB whole,
    // plus 40 MB it builds on.
    let piece = crate::state::PieceRecord {
        size_bytes: 60 << 20,
        crc32c: 0,
        replicas: vec!["w1".into()],
        chain: vec![crate::state::LinkRecord {
            checkpoint_id: 1,
            size_bytes: 40 << 20,
            crc32c: 0,
            replicas: vec!["w1".into()],
        }],
        seed: vec![],
    };
    let loads: Vec<&PeId> = up.handoff.values().flatten().collect();
    app.checkpoints
        .complete
        .push(crate::state::CheckpointRecord {
            id: 2,
            started_at_ms: 0,
            completed_at_ms: 0,
            max_alignment_ms: 0,
            pieces: old.iter().map(|p| (p.clone(), piece.clone())).collect(),
            handoff: BTreeMap::new(),
        });
    // Three pieces of 100 MB loaded: 6 s more, and the catch-up after them.
    assert_eq!(loads.len(), 3);
    up.barrier = 3;
    assert_eq!(
        prepare_limit_ms(&app, &up),
        PREPARE_TIMEOUT_MS + 6_000 + CATCH_UP_MS
    );
    // Not the barrier's own checkpoint: the pre-copy is of the one before.
    up.barrier = 2;
    assert_eq!(prepare_limit_ms(&app, &up), PREPARE_TIMEOUT_MS);
}

#[test]
fn progress_and_result_sum_the_successors_reports_and_name_those_behind() {
    let s = begun();
    let (mut up, p) = plan_of(&s);
    let app = &s.apps[APP];
    // The rescale's new views take over the old views' state.
    let views = |pes: Vec<PeId>| -> Vec<PeId> {
        pes.into_iter()
            .filter(|pe| pe.operator() == "views")
            .collect()
    };
    let old_views = views(app.placement.keys().cloned().collect());
    let successors = views(new_pes(&p));
    assert!(successors.len() >= 2 && !old_views.is_empty());
    for pe in &successors {
        up.handoff.insert(pe.clone(), old_views.clone());
    }
    // Nothing heard from the successors yet.
    let mut reports: Reports = app
        .placement
        .keys()
        .map(|pe| report(pe.as_str(), pb::PeState::Running))
        .collect();
    let none = progress(app, &up, &reports);
    assert_eq!(
        (
            none.successors,
            none.successors_ready,
            none.state_precopied_bytes
        ),
        (successors.len() as u32, 0, 0)
    );
    assert!(none.successors_behind.is_empty());
    // The first still pre-copying, the others running, one of them behind.
    for (i, pe) in successors.iter().enumerate() {
        let state = if i == 0 {
            pb::PeState::Starting
        } else {
            pb::PeState::Running
        };
        let (key, mut r) = report(pe.as_str(), state);
        r.stats = Some(pb::PeStats {
            state_precopied_bytes: 10 << 20,
            state_barrier_bytes: if i == 0 { 0 } else { 1 << 20 },
            handoff_behind: if i == 1 {
                "out of catch-up time".into()
            } else {
                String::new()
            },
            ..Default::default()
        });
        reports.insert(key, r);
    }
    let n = successors.len() as u64;
    let now = progress(app, &up, &reports);
    assert_eq!(now.successors_ready, successors.len() as u32 - 1);
    assert_eq!(now.state_precopied_bytes, n * (10 << 20));
    assert_eq!(
        now.successors_behind,
        vec![format!("{}: out of catch-up time", successors[1])]
    );
    let r = measure(app, &up, &p, &reports, 10_000);
    assert_eq!(
        (r.state_precopied_bytes, r.state_barrier_bytes),
        (n * (10 << 20), (n - 1) << 20)
    );
    assert_eq!(r.successors_behind, now.successors_behind);
    // Only successors count: an old PE's figures (it pre-copied nothing) do not.
    let old = app.placement.keys().next().unwrap();
    let key = ("w1".to_string(), old.clone());
    reports.get_mut(&key).unwrap().stats = Some(pb::PeStats {
        state_precopied_bytes: 1 << 30,
        handoff_behind: "losing ground".into(),
        ..Default::default()
    });
    assert_eq!(progress(app, &up, &reports), now);
}
