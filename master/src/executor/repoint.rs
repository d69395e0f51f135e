//! Repointing, decided: when a consumer PE moved (a recovery placed it elsewhere) and
//! its producer stayed put, the producer still sends to the old address; the executor
//! tells it the new one (`OpenChannel` on the producer end). Pure: the placements of
//! the previous tick and the state now in, the repoints out.

use super::request::moved_channels;
use crate::state::{AppRecord, ClusterState, WorkerState};
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_common::physical::PhysicalModel;
use weir_proto::v1 as pb;

/// One producer end to repoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Repoint {
    /// The app.
    pub app: String,
    /// The channel.
    pub channel: pb::ChannelRef,
    /// The producer's worker (alive), whose control service is told.
    pub producer_worker: String,
    /// The consumer's new data address.
    pub consumer_address: String,
}

/// The live apps of `state`, as the next tick's `before`. Held as the apps' `Arc`s: an
/// unchanged app is the same `Arc` (changes go through `Arc::make_mut`), so most are
/// compared without looking inside.
pub fn live_apps(state: &ClusterState) -> BTreeMap<String, Arc<AppRecord>> {
    state
        .apps
        .iter()
        .filter(|(_, a)| a.state().is_live())
        .map(|(name, a)| (name.clone(), a.clone()))
        .collect()
}

/// The producer ends to repoint: channels of live apps whose consumer moved since
/// `before` while their producer stayed on a worker that is alive.
pub fn decide_repoints(
    state: &ClusterState,
    before: &BTreeMap<String, Arc<AppRecord>>,
) -> Vec<Repoint> {
    let mut out = Vec::new();
    for (app, rec) in state.apps.iter().filter(|(_, a)| a.state().is_live()) {
        let Some(prev) = before
            .get(app)
            .filter(|p| !Arc::ptr_eq(p, rec) && p.placement != rec.placement)
            .map(|p| &p.placement)
        else {
            continue;
        };
        let model = PhysicalModel::expand(&rec.current().spec);
        for (channel, producer_worker, consumer_worker) in
            moved_channels(&model, prev, &rec.placement)
        {
            let (Some(pw), Some(cw)) = (
                state.workers.get(&producer_worker),
                state.workers.get(&consumer_worker),
            ) else {
                continue;
            };
            if pw.state != WorkerState::Alive {
                continue;
            }
            out.push(Repoint {
                app: app.clone(),
                channel,
                producer_worker,
                consumer_address: cw.data_address.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fixtures::{all_on, upgrading, worker, APP as SPEC};
    use crate::state::Command;

    /// clickstream on w1 (w2, w3 registered); `views` moves to `to`.
    fn moved(to: &str) -> (ClusterState, BTreeMap<String, Arc<AppRecord>>) {
        let (mut s, _) = upgrading();
        for w in ["w2", "w3"] {
            let mut rec = worker(w);
            rec.data_address = format!("{w}:data");
            s.apply(&Command::RegisterWorker { worker: rec }).unwrap();
        }
        let before = live_apps(&s);
        let mut placement = all_on(SPEC, "w1");
        for (pe, w) in placement.iter_mut() {
            if pe.starts_with("views@") {
                *w = to.into();
            }
        }
        s.apply(&Command::Recover {
            app: "clickstream".into(),
            operators: vec!["views".into()],
            checkpoint_id: 0,
            placement,
            reason: "test".into(),
            at_ms: 1,
            drop_checkpoint: None,
            gpus: BTreeMap::new(),
        })
        .unwrap();
        (s, before)
    }

    #[test]
    fn producers_that_stayed_are_told_where_a_moved_consumer_went() {
        let (s, before) = moved("w2");
        let r = decide_repoints(&s, &before);
        assert!(!r.is_empty());
        for p in &r {
            assert!(p.channel.to_pe.starts_with("views@"), "{p:?}");
            assert!(p.channel.from_pe.starts_with("by-page@"), "{p:?}");
            assert_eq!(
                (p.producer_worker.as_str(), p.consumer_address.as_str()),
                ("w1", "w2:data")
            );
        }
        // by-page (2 PEs) hashes to views (2 PEs): every channel.
        assert_eq!(r.len(), 4);
        // Nothing moved since: nothing to tell (the same Arc).
        assert!(decide_repoints(&s, &live_apps(&s)).is_empty());
        // The producer's worker is lost: it cannot be told (its PEs recover).
        let mut lost = s.clone();
        lost.workers.get_mut("w1").unwrap().state = WorkerState::Lost;
        assert!(decide_repoints(&lost, &before).is_empty());
        // An app not known on the previous tick (a new leader): nothing.
        assert!(decide_repoints(&s, &BTreeMap::new()).is_empty());
    }
}
