//! Checkpoint decisions without a network: clickstream placed on w1 (and w2 where a
//! test moves it), reports made by hand.

use super::checkpoints::*;
use super::upgrade::Reports;
use crate::state::fixtures::{all_on, submitted, upgrading, worker, APP as SPEC};
use crate::state::{ClusterState, Command, WorkerState};
use std::collections::BTreeMap;
use std::time::Duration;
use weir_common::physical::PeId;
use weir_proto::v1 as pb;

const APP: &str = "clickstream";

fn rules() -> Rules {
    Rules {
        replicas: 2,
        known_after_ms: 1_000,
        heard_after_ms: 600,
        timeout_ms: 10_000,
        interval: Duration::from_secs(1),
    }
}

/// Clickstream placed on w1; w2 registered at `w2_at` (both alive).
fn placed(w2_at: u64) -> ClusterState {
    let mut s = submitted();
    let mut w2 = worker("w2");
    w2.state_since_ms = w2_at;
    s.apply(&Command::RegisterWorker { worker: w2 }).unwrap();
    // Registration stamps no time of its own: keep the one given.
    s.workers.get_mut("w2").unwrap().state_since_ms = w2_at;
    s.apply(&Command::SetPlacement {
        app: APP.into(),
        placement: all_on(SPEC, "w1"),
        gpus: BTreeMap::new(),
        at_ms: 0,
    })
    .unwrap();
    s
}

fn pes(s: &ClusterState) -> Vec<PeId> {
    s.apps[APP].placement.keys().cloned().collect()
}

/// Every PE running, each with a piece of `pieces` = (checkpoint, size, replicas).
fn running(s: &ClusterState, piece: Option<(u64, u64, usize)>) -> Reports {
    pes(s)
        .into_iter()
        .map(|pe| {
            let checkpoints = piece
                .map(|(id, size, n)| pb::SnapshotPiece {
                    checkpoint_id: id,
                    size_bytes: size,
                    replicas: (1..=n).map(|i| format!("w{i}")).collect(),
                    alignment_ms: 3,
                    ..Default::default()
                })
                .into_iter()
                .collect();
            (
                ("w1".to_string(), pe.clone()),
                pb::PeReport {
                    pe: pe.to_string(),
                    app: APP.into(),
                    state: pb::PeState::Running as i32,
                    checkpoints,
                    ..Default::default()
                },
            )
        })
        .collect()
}

fn decide(s: &ClusterState, reports: &Reports, now: u64, since: Option<Duration>) -> Step {
    decide_checkpoint(s, &s.apps[APP], reports, &rules(), now, since)
}

fn begin(s: &mut ClusterState, at_ms: u64) -> u64 {
    let id = s.apps[APP].checkpoints.last_id + 1;
    s.apply(&Command::BeginCheckpoint {
        app: APP.into(),
        id,
        at_ms,
    })
    .unwrap();
    id
}

#[test]
fn the_next_checkpoint_begins_when_due_and_everything_runs_at_the_sources_workers() {
    let s = placed(0);
    let all = running(&s, None);
    // Due (never triggered, or an interval ago): begin at the sources' worker.
    for since in [None, Some(Duration::from_secs(1))] {
        assert_eq!(
            decide(&s, &all, 5_000, since),
            Step::Begin {
                id: 1,
                sources: ["w1".to_string()].into()
            }
        );
    }
    // The sources on w2, the rest on w1: only w2 triggers.
    let mut split = placed(0);
    let mut placement = all_on(SPEC, "w1");
    for (pe, w) in placement.iter_mut() {
        if pe.starts_with("clicks@") {
            *w = "w2".into();
        }
    }
    split
        .apply(&Command::SetPlacement {
            app: APP.into(),
            placement: placement.clone(),
            gpus: BTreeMap::new(),
            at_ms: 0,
        })
        .unwrap();
    let reports: Reports = running(&split, None)
        .into_values()
        .map(|r| {
            (
                (placement[r.pe.as_str()].clone(), PeId::from(r.pe.as_str())),
                r,
            )
        })
        .collect();
    assert_eq!(
        decide(&split, &reports, 5_000, None),
        Step::Begin {
            id: 1,
            sources: ["w2".to_string()].into()
        }
    );
    // Not yet due.
    assert_eq!(
        decide(&s, &all, 5_000, Some(Duration::from_millis(999))),
        Step::Wait
    );
    // A PE not running (or reported under an older attempt): wait.
    let mut starting = all.clone();
    let first = starting.keys().next().unwrap().clone();
    starting.get_mut(&first).unwrap().state = pb::PeState::Starting as i32;
    assert_eq!(decide(&s, &starting, 5_000, None), Step::Wait);
    let mut old = all.clone();
    old.get_mut(&first).unwrap().attempt = 1;
    assert_eq!(decide(&s, &old, 5_000, None), Step::Wait);
    // During an upgrade none begins (the switch barrier is its checkpoint).
    let (mut u, up) = upgrading();
    u.apply(&up).unwrap();
    let all = running(&u, None);
    assert_eq!(
        decide_checkpoint(&u, &u.apps[APP], &all, &rules(), 5_000, None),
        Step::Wait
    );
}

#[test]
fn a_checkpoint_completes_once_every_piece_has_its_copies() {
    let mut s = placed(0);
    let id = begin(&mut s, 5_000);
    // One copy each: two are needed (two workers alive and known when it began).
    assert_eq!(
        decide(&s, &running(&s, Some((id, 100, 1))), 5_100, None),
        Step::Wait
    );
    let Step::Complete {
        id: done,
        max_alignment_ms,
        pieces,
    } = decide(&s, &running(&s, Some((id, 100, 2))), 5_100, None)
    else {
        panic!("not complete")
    };
    assert_eq!((done, max_alignment_ms), (id, 3));
    assert_eq!(pieces.len(), pes(&s).len());
    assert!(pieces
        .values()
        .all(|p| p.size_bytes == 100 && p.replicas.len() == 2));
    // Empty pieces need no copies and are not recorded.
    let Step::Complete { pieces, .. } = decide(&s, &running(&s, Some((id, 0, 0))), 5_100, None)
    else {
        panic!("not complete")
    };
    assert!(pieces.is_empty());
    // A piece of another checkpoint is no piece of this one.
    assert_eq!(
        decide(&s, &running(&s, Some((id + 1, 100, 2))), 5_100, None),
        Step::Wait
    );
}

#[test]
fn a_worker_that_joined_just_before_a_checkpoint_is_not_waited_for() {
    // w2 (re)joined at 4,500; the checkpoint began at 5,000, before w2 was known to its
    // peers for two heartbeats (1,000 ms): one copy is enough.
    let mut s = placed(4_500);
    assert_eq!(copies_needed(&s, &rules(), 5_000), 1);
    assert_eq!(copies_needed(&s, &rules(), 5_500), 2);
    let id = begin(&mut s, 5_000);
    assert!(matches!(
        decide(&s, &running(&s, Some((id, 100, 1))), 5_100, None),
        Step::Complete { .. }
    ));
    // A lost worker holds nothing up either.
    let mut lost = placed(0);
    lost.workers.get_mut("w2").unwrap().state = WorkerState::Lost;
    assert_eq!(copies_needed(&lost, &rules(), 5_000), 1);
    // Never fewer than one, never more than asked.
    let mut many = placed(0);
    for w in ["w3", "w4"] {
        many.apply(&Command::RegisterWorker { worker: worker(w) })
            .unwrap();
    }
    assert_eq!(copies_needed(&many, &rules(), 5_000), 2);
}

#[test]
fn a_checkpoint_past_its_timeout_is_abandoned_but_a_switch_barrier_is_left_to_the_upgrade() {
    let mut s = placed(0);
    let id = begin(&mut s, 5_000);
    let partial = running(&s, Some((id, 100, 1)));
    assert_eq!(decide(&s, &partial, 15_000, None), Step::Wait);
    assert_eq!(decide(&s, &partial, 15_001, None), Step::Abandon { id });
    // The switch barrier of an upgrade is its checkpoint: never abandoned here.
    let (mut u, up) = upgrading();
    u.apply(&up).unwrap();
    u.apply(&Command::UpgradeSwitch {
        app: APP.into(),
        id: 1,
        at_ms: 5_000,
    })
    .unwrap();
    let barrier = u.upgrades[&1].barrier;
    let partial = running(&u, Some((barrier, 100, 0)));
    assert_eq!(
        decide_checkpoint(&u, &u.apps[APP], &partial, &rules(), 60_000, None),
        Step::Wait
    );
    // But it completes like any other.
    let whole = running(&u, Some((barrier, 100, 1)));
    assert!(matches!(
        decide_checkpoint(&u, &u.apps[APP], &whole, &rules(), 6_000, None),
        Step::Complete { id, .. } if id == barrier
    ));
}

#[test]
fn an_app_not_running_has_no_checkpoint_step() {
    // Submitted, not placed.
    let s = submitted();
    assert_eq!(
        decide_checkpoint(&s, &s.apps[APP], &Reports::new(), &rules(), 5_000, None),
        Step::Wait
    );
    // Cancelled.
    let mut s = placed(0);
    s.apply(&Command::CancelApp {
        name: APP.into(),
        at_ms: 10,
        request_id: String::new(),
    })
    .unwrap();
    assert_eq!(decide(&s, &running(&s, None), 5_000, None), Step::Wait);
}

/// Every PE's piece of `id` built on `base` (0: whole).
fn incremental(s: &ClusterState, id: u64, base: u64) -> Reports {
    let mut r = running(s, Some((id, 10, 2)));
    for report in r.values_mut() {
        report.checkpoints[0].base_checkpoint_id = base;
    }
    r
}

/// Decides and commits the completion of checkpoint `id`, its pieces built on `base`.
fn complete(s: &mut ClusterState, id: u64, base: u64) -> u64 {
    let Step::Complete {
        id,
        max_alignment_ms,
        pieces,
    } = decide(s, &incremental(s, id, base), 5_100, None)
    else {
        panic!("not complete")
    };
    s.apply(&Command::CompleteCheckpoint {
        app: APP.into(),
        id,
        at_ms: 5_100,
        max_alignment_ms,
        pieces,
    })
    .unwrap();
    id
}

#[test]
fn incremental_pieces_record_their_chain_and_keep_its_snapshots() {
    let mut s = placed(0);
    let first = begin(&mut s, 5_000);
    complete(&mut s, first, 0);
    // Five increments, each on the one before: the app keeps three checkpoints, and
    // the workers keep every snapshot back to the whole one they build on.
    let mut last = first;
    for _ in 0..5 {
        let id = begin(&mut s, 5_000);
        last = complete(&mut s, id, last);
    }
    let ck = &s.apps[APP].checkpoints;
    assert_eq!(ck.complete.len(), 3);
    let pe = &pes(&s)[0];
    let piece = &ck.latest().unwrap().pieces[pe];
    let links: Vec<u64> = piece.chain.iter().map(|l| l.checkpoint_id).collect();
    assert_eq!(links, (first..last).collect::<Vec<_>>());
    assert_eq!(piece.restore_bytes(), 10 * 6);
    assert_eq!(ck.keep_snapshots_from(), Some(first));
    // A whole piece starts a new chain: then only the kept checkpoints' count.
    for _ in 0..3 {
        let id = begin(&mut s, 5_000);
        complete(&mut s, id, 0);
    }
    let ck = &s.apps[APP].checkpoints;
    assert_eq!(ck.keep_snapshots_from(), Some(ck.complete[0].id));
}

#[test]
fn a_piece_built_on_a_checkpoint_that_never_completed_abandons_its_checkpoint() {
    let mut s = placed(0);
    let first = begin(&mut s, 5_000);
    complete(&mut s, first, 0);
    // Checkpoint 2 begun and never completed; 3's pieces build on it.
    let lost = begin(&mut s, 5_000);
    s.apply(&Command::AbandonCheckpoint {
        app: APP.into(),
        id: lost,
    })
    .unwrap();
    let id = begin(&mut s, 5_000);
    assert_eq!(
        decide(&s, &incremental(&s, id, lost), 5_100, None),
        Step::Abandon { id }
    );
    // Built on the latest complete one: complete.
    assert_eq!(complete(&mut s, id, first), id);
}

#[test]
fn the_next_checkpoint_waits_until_every_worker_heard_of_the_last_completion() {
    let mut s = placed(0);
    let id = begin(&mut s, 5_000);
    complete(&mut s, id, 0);
    let all = running(&s, None);
    let due = Some(Duration::from_secs(2));
    // Completed at 5,100: not before 5,700, unless urgent (no trigger time).
    assert_eq!(decide(&s, &all, 5_600, due), Step::Wait);
    assert!(matches!(decide(&s, &all, 5_600, None), Step::Begin { .. }));
    assert!(matches!(decide(&s, &all, 5_700, due), Step::Begin { .. }));
}

#[test]
fn a_successors_first_increments_are_seeded_with_its_predecessors_pieces_of_the_switch() {
    let mut s = placed(0);
    let switch = begin(&mut s, 5_000);
    complete(&mut s, switch, 0);
    // As after an upgrade's switch: the first PE took over the state of the other two
    // there (it has no piece of its own in that checkpoint).
    let all = pes(&s);
    let (new, preds) = (all[0].clone(), all[1..3].to_vec());
    {
        let k = &mut std::sync::Arc::make_mut(s.apps.get_mut(APP).unwrap())
            .checkpoints
            .complete[0];
        k.pieces.remove(&new);
        k.handoff.insert(new.clone(), preds.clone());
    }
    let app = &s.apps[APP];
    let (seed, chain) = chain_of(app, &new, switch).unwrap();
    assert!(chain.is_empty());
    let seeded: Vec<(&PeId, u64)> = seed.iter().map(|s| (&s.pe, s.link.checkpoint_id)).collect();
    assert_eq!(
        seeded,
        preds.iter().map(|p| (p, switch)).collect::<Vec<_>>()
    );
    // Not a PE that took over state there, nor a checkpoint kept: no base.
    assert_eq!(chain_of(app, &all[3], switch + 7), None);
    // Its increments carry the seed on, after the chain of its own snapshots.
    let mut last = switch;
    for _ in 0..4 {
        let id = begin(&mut s, 5_000);
        last = complete(&mut s, id, last);
    }
    let ck = &s.apps[APP].checkpoints;
    let piece = &ck.latest().unwrap().pieces[&new];
    assert_eq!(piece.seed.len(), 2);
    let links: Vec<u64> = piece.chain.iter().map(|l| l.checkpoint_id).collect();
    assert_eq!(links, (switch + 1..last).collect::<Vec<_>>());
    assert_eq!(piece.restore_bytes(), 10 * 4 + 10 * 2);
    // The switch is no longer kept, but its predecessors' pieces are still needed.
    assert!(ck.complete[0].id > switch);
    assert_eq!(ck.keep_snapshots_from(), Some(switch));
    // A predecessor's piece that is itself an increment is no seed (a drained
    // predecessor's is always whole): no base, the checkpoint would be abandoned.
    let mut s2 = s.clone();
    let app2 = std::sync::Arc::make_mut(s2.apps.get_mut(APP).unwrap());
    let k = app2.checkpoints.complete.last_mut().unwrap();
    let at = k.id;
    k.pieces.remove(&new);
    k.handoff.insert(new.clone(), preds);
    assert_eq!(chain_of(&s2.apps[APP], &new, at), None);
}
