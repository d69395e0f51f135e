//! Property tests of the upgrade planner over random related models.

mod gen;

use gen::{edits, genome};
use proptest::prelude::*;
use std::collections::BTreeSet;
use weir_common::physical::{PeId, PhysicalModel};
use weir_common::plan::{apply, plan, Instruction, OperatorChangeKind, Placement, Target};
use weir_common::spec::{parse_app_value, AppSpec};

/// Operators an edit leaves alone: same spec, same incident streams (with the same
/// partitioning), and the same specs at the other end of each of those streams.
/// Computed from the two models only, independently of the planner's diff.
fn untouched_operators(a: &AppSpec, b: &AppSpec) -> BTreeSet<String> {
    let incident = |m: &AppSpec, name: &str| {
        m.streams
            .iter()
            .filter(|s| s.from == name || s.to == name)
            .map(|s| {
                let other = if s.from == name { &s.to } else { &s.from };
                (
                    s.key(),
                    s.partitioning.clone(),
                    m.operator(other).cloned().map(|o| format!("{o:?}")),
                )
            })
            .collect::<Vec<_>>()
    };
    a.operators
        .iter()
        .filter(|o| b.operator(&o.name) == Some(*o))
        .filter(|o| incident(a, &o.name) == incident(b, &o.name))
        .map(|o| o.name.clone())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_models_are_valid(g in genome()) {
        let app = g.app();
        let v = serde_json::to_value(&app).unwrap();
        let parsed = parse_app_value(&v);
        prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed.err(), serde_json::to_string_pretty(&v).unwrap());
        prop_assert_eq!(parsed.unwrap(), app);
    }

    #[test]
    fn applying_the_plan_yields_the_new_physical_model(g in genome(), e in edits()) {
        let (a, b) = (g.app(), g.mutate(&e).app());
        let p = plan(&a, &b, None);
        let after = apply(&p, &PhysicalModel::expand(&a));
        prop_assert_eq!(after, PhysicalModel::expand(&b));
    }

    #[test]
    fn planning_a_model_against_itself_is_empty(g in genome()) {
        let a = g.app();
        let p = plan(&a, &a, None);
        prop_assert!(p.is_empty());
        prop_assert!(p.adjusted_streams.is_empty());
        prop_assert!(p.operators.iter().all(|o| o.change == OperatorChangeKind::Unchanged));
        prop_assert_eq!(p.untouched_pes.len(), PhysicalModel::expand(&a).pes.len());
    }

    #[test]
    fn untouched_operators_appear_in_no_instruction(g in genome(), e in edits()) {
        let (a, b) = (g.app(), g.mutate(&e).app());
        let p = plan(&a, &b, None);
        let pa = PhysicalModel::expand(&a);
        let untouched = untouched_operators(&a, &b);
        let named: BTreeSet<&PeId> = p.instructions().flat_map(|(_, i)| i.pes()).collect();
        for pe in pa.pes.values().filter(|pe| untouched.contains(&*pe.operator)) {
            prop_assert!(!named.contains(&pe.id), "{} of untouched {} is in the plan", pe.id, pe.operator);
            prop_assert!(p.untouched_pes.contains(&pe.id));
        }
        // PEs whose operator spec is the same are never started, stopped or drained.
        for (_, i) in p.instructions() {
            if let Instruction::StartPe { pe, .. } | Instruction::StopPe { pe } | Instruction::Drain { pe, .. } = i {
                let name = pe.operator();
                prop_assert!(a.operator(name) != b.operator(name) || a.operator(name).is_none(),
                    "{} restarted although its operator did not change", pe);
            }
        }
    }

    #[test]
    fn plans_group_by_worker_when_placed(g in genome(), e in edits(), workers in 1usize..4) {
        let (a, b) = (g.app(), g.mutate(&e).app());
        let all: BTreeSet<PeId> = PhysicalModel::expand(&a).pes.into_keys()
            .chain(PhysicalModel::expand(&b).pes.into_keys()).collect();
        let placement: Placement = all.iter().enumerate()
            .map(|(i, pe)| (pe.clone(), format!("w{}", i % workers))).collect();
        let p = plan(&a, &b, Some(&placement));
        for phase in &p.phases {
            for g in &phase.groups {
                let Target::Worker(w) = &g.target else { panic!("ungrouped {:?}", g.target) };
                for i in &g.instructions {
                    prop_assert_eq!(&placement[i.subject()], w);
                }
            }
        }
        // Placement changes the grouping, never the instructions.
        let mut placed: Vec<_> = p.instructions().map(|(ph, i)| (ph, i.clone())).collect();
        let mut offline: Vec<_> = plan(&a, &b, None).instructions().map(|(ph, i)| (ph, i.clone())).collect();
        placed.sort();
        offline.sort();
        prop_assert_eq!(placed, offline);
    }

    #[test]
    fn plans_are_deterministic_and_round_trip_as_json(g in genome(), e in edits()) {
        let (a, b) = (g.app(), g.mutate(&e).app());
        let p = plan(&a, &b, None);
        prop_assert_eq!(&p, &plan(&a, &b, None));
        let json = serde_json::to_string(&p).unwrap();
        let back: weir_common::plan::UpgradePlan = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, p);
    }

    #[test]
    fn state_hand_off_covers_every_key_group(g in genome(), e in edits()) {
        let (a, b) = (g.app(), g.mutate(&e).app());
        let pa = PhysicalModel::expand(&a);
        let p = plan(&a, &b, None);
        for (_, i) in p.instructions() {
            if let Instruction::StartPe { key_groups, state_from, .. } = i {
                // The predecessors together own exactly the new PE's key groups (or more).
                if state_from.is_empty() { continue; }
                for group in key_groups.start..key_groups.end {
                    prop_assert!(state_from.iter().any(|s| pa.pes[s].key_groups.contains(group)));
                }
                // And each hand-off is announced by the matching Drain.
                for s in state_from {
                    let drained = p.instructions().any(|(_, d)| matches!(d,
                        Instruction::Drain { pe, hand_off_to } if pe == s && hand_off_to.iter().any(|t| t == i.subject())));
                    prop_assert!(drained, "{} hands nothing to {}", s, i.subject());
                }
            }
        }
    }
}
