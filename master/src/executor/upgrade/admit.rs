//! Whether an upgrade may begin, and the `BeginUpgrade` it begins with: the new PEs
//! placed around everything that runs now, the plan computed once with that placement,
//! and which old PEs' state each new PE takes over. Pure: the API reads the state,
//! calls [`begin`], and proposes what it answers, or maps its refusal to a status.

use crate::executor::reconcile::{alive, capacities, joined};
use crate::scheduler::{place_with, requests_for, PeRequest};
use crate::state::{
    check_upgradable, AppRecord, ClusterState, Command, CommandError, Gpus, Handoff, PeId,
    Placement, SpecSignature,
};
use std::collections::BTreeMap;
use weir_common::catalog::Provenances;
use weir_common::plan::{plan, Instruction, UpgradePlan};
use weir_common::spec::AppSpec;

/// Why an upgrade cannot begin; nothing was stored or started.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The state refuses it (the app is not running, another upgrade runs, the
    /// tenant's quota, ...).
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// The new PEs do not fit.
    #[error("resources: the new version cannot be placed: {0}")]
    CannotPlace(String),
    /// The new spec plans nothing.
    #[error("spec: equals version {version} of {app:?}; there is nothing to upgrade")]
    Nothing {
        /// The app.
        app: String,
        /// Its current version.
        version: u32,
    },
}

/// What the request carries besides the new spec, kept with the new version.
#[derive(Clone, Debug, Default)]
pub struct Submitted {
    /// The submitted text.
    pub spec_text: String,
    /// The client's idempotency key; empty for none.
    pub request_id: String,
    /// Which template and base image generated which operator.
    pub generated: Provenances,
    /// The tenant's verified signature of `spec_text`.
    pub signature: Option<SpecSignature>,
}

/// The `BeginUpgrade` of `app` to `new` at `now`, checked against `s` as the state
/// machine will apply it, and its plan (placed: kept PEs keep their places, so an
/// identical spec plans nothing whatever the room).
pub fn begin(
    s: &ClusterState,
    app: &str,
    new: &AppSpec,
    submitted: Submitted,
    now_ms: u64,
) -> Result<(Command, UpgradePlan), AdmitError> {
    let rec = check_upgradable(s, app)?;
    let (placement, gpus) = place_upgrade(s, rec, new).map_err(AdmitError::CannotPlace)?;
    let p = plan(&rec.current().spec, new, Some(&placement));
    if p.is_empty() {
        return Err(AdmitError::Nothing {
            app: app.to_string(),
            version: rec.current_version,
        });
    }
    let cmd = Command::BeginUpgrade {
        spec: new.clone(),
        spec_text: submitted.spec_text,
        at_ms: now_ms,
        handoff: handoff(&p, new),
        placement,
        gpus,
        summary: p.summary.clone(),
        request_id: submitted.request_id,
        generated: submitted.generated,
        signature: submitted.signature,
    };
    s.check(&cmd)?;
    Ok((cmd, p))
}

/// Where every PE of `new`, an upgrade of the live `app`, runs: PEs the new version
/// keeps stay where they are; new PEs are placed by the scheduler around everything
/// that runs now (the old PEs they replace still run until the switch, so both count).
/// `Err` says why it cannot be placed (the upgrade is refused, nothing changes).
pub fn place_upgrade(
    state: &ClusterState,
    app: &AppRecord,
    new: &AppSpec,
) -> Result<(Placement, Gpus), String> {
    let free = capacities(state);
    let mut kept: BTreeMap<PeId, String> = BTreeMap::new();
    let mut pending: Vec<PeRequest> = Vec::new();
    for r in requests_for(new) {
        match app.placement.get(r.pe.as_str()) {
            Some(w) if alive(state, w) => {
                kept.insert(r.pe.clone(), w.clone());
            }
            Some(w) => {
                return Err(format!(
                    "PE {} is on worker {w}, which is not alive; upgrade once the app recovered",
                    r.pe
                ))
            }
            None => pending.push(r),
        }
    }
    // The replicated device policy, as the reconciler places with it (the default
    // without one: admission does not see a master's flags).
    let devices =
        crate::scheduler::policy::effective(state.scheduling.as_ref(), &Default::default()).devices;
    let placed = place_with(&free, &pending, &kept, &devices).map_err(|e| e.to_string())?;
    Ok(joined(kept, placed))
}

/// New PE -> the old PEs whose state it takes over. Keyed state is split by key group
/// (every overlapping predecessor); other state (source positions, `sink.verify`,
/// `sink.file`) goes whole from the predecessor of the same index, so it is never
/// taken twice.
pub fn handoff(p: &UpgradePlan, new_spec: &AppSpec) -> Handoff {
    let mut out = Handoff::new();
    for i in p.instructions().map(|(_, i)| i) {
        let Instruction::StartPe {
            pe,
            operator,
            index,
            state_from,
            ..
        } = i
        else {
            continue;
        };
        let keyed = new_spec
            .operator(operator)
            .is_some_and(|o| o.kind.keyed_state());
        let from: Vec<PeId> = state_from
            .iter()
            .filter(|o| keyed || o.index() == Some(*index))
            .cloned()
            .collect();
        if !from.is_empty() {
            out.insert(pe.clone(), from);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fixtures::{upgrading, worker, APP, V2};
    use crate::state::WorkerState;
    use weir_common::spec::{parse_app, SpecFormat};

    fn v2() -> AppSpec {
        parse_app(V2, SpecFormat::Yaml).unwrap()
    }

    #[test]
    fn an_upgrade_begins_placed_and_planned_once_or_is_refused_saying_why() {
        let (s, _) = upgrading();
        let rec = &s.apps["clickstream"];
        let (cmd, p) = begin(&s, "clickstream", &v2(), Submitted::default(), 100).unwrap();
        let Command::BeginUpgrade {
            placement, handoff, ..
        } = &cmd
        else {
            panic!("{cmd:?}")
        };
        // Kept PEs stay where they run; every PE of v2 is placed.
        for (pe, w) in &rec.placement {
            if let Some(kept) = placement.get(pe) {
                assert_eq!(kept, w);
            }
        }
        assert_eq!(
            placement.len(),
            weir_common::physical::PhysicalModel::expand(&v2())
                .pes
                .len()
        );
        assert!(!p.is_empty());
        // Every new PE that takes state over names old PEs.
        for (new, old) in handoff {
            assert!(!rec.placement.contains_key(new), "{new}");
            assert!(old.iter().all(|o| rec.placement.contains_key(o)), "{old:?}");
        }

        // The same spec: nothing to upgrade.
        let same = parse_app(APP, SpecFormat::Yaml).unwrap();
        assert!(matches!(
            begin(&s, "clickstream", &same, Submitted::default(), 100),
            Err(AdmitError::Nothing { version: 1, .. })
        ));
        // Its worker lost: kept PEs have nowhere to stay.
        let mut lost = s.clone();
        lost.workers.get_mut("w1").unwrap().state = WorkerState::Lost;
        lost.apply(&Command::RegisterWorker {
            worker: worker("w2"),
        })
        .unwrap();
        let Err(AdmitError::CannotPlace(why)) =
            begin(&lost, "clickstream", &v2(), Submitted::default(), 100)
        else {
            panic!("placed on a lost worker")
        };
        assert!(why.contains("w1") && why.contains("not alive"), "{why}");
        // An app that is not there.
        assert!(matches!(
            begin(&s, "nope", &v2(), Submitted::default(), 100),
            Err(AdmitError::Refused(_))
        ));
        // Another upgrade running: refused by the state's own rule.
        let mut running = s.clone();
        running.apply(&cmd).unwrap();
        assert!(matches!(
            begin(&running, "clickstream", &v2(), Submitted::default(), 101),
            Err(AdmitError::Refused(_))
        ));
    }
}
