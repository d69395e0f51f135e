//! A plan rendered for humans: what changes, what is untouched, then the phases.

use super::*;
use std::fmt::Write;

/// How many untouched PEs are listed by name before the rest are counted.
const LIST_LIMIT: usize = 12;

/// Renders `plan` as an indented tree, stable from run to run.
pub fn render_text(plan: &UpgradePlan) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "Upgrade plan for app {:?}", plan.app);
    if plan.is_empty() {
        let _ = writeln!(w, "\nNothing to do: the two versions are the same app.");
        return out;
    }
    let _ = writeln!(w, "\nOperators");
    let width = plan
        .operators
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(0);
    for o in &plan.operators {
        let (mark, word) = match o.change {
            OperatorChangeKind::Added => ('+', "added"),
            OperatorChangeKind::Removed => ('-', "removed"),
            OperatorChangeKind::Replaced => ('~', "replaced"),
            OperatorChangeKind::Rescaled => ('^', "rescaled"),
            OperatorChangeKind::Rewired => ('>', "rewired"),
            OperatorChangeKind::Unchanged => ('=', "unchanged"),
        };
        let mut detail = o.reasons.join("; ");
        if o.change == OperatorChangeKind::Rewired {
            detail = "same PEs; routes switch at a barrier".to_string();
        }
        if let (OperatorChangeKind::Added, Some(p)) = (o.change, o.new_parallelism) {
            detail = format!("{detail}, parallelism {p}");
        }
        let _ = writeln!(w, "  {mark} {:width$}  {word:9}  {detail}", o.name);
    }
    let _ = writeln!(w, "\nStreams to adjust ({})", plan.adjusted_streams.len());
    let swidth = plan
        .streams
        .iter()
        .map(|s| s.stream.to_string().len())
        .max()
        .unwrap_or(0);
    for s in plan
        .streams
        .iter()
        .filter(|s| s.change != StreamChangeKind::Unchanged)
    {
        let detail = match (s.change, &s.old, &s.new) {
            (StreamChangeKind::Repartitioned, Some(a), Some(b)) => format!("{a} -> {b}"),
            (StreamChangeKind::Added, _, Some(b)) => b.to_string(),
            (StreamChangeKind::Rerouted, _, Some(b)) => format!("{b}, new endpoint PEs"),
            _ => String::new(),
        };
        let word = format!("{:?}", s.change).to_lowercase();
        let _ = writeln!(w, "  {:swidth$}  {word:13}  {detail}", s.stream.to_string());
    }
    let titles = [
        "start new PEs and open their channels; nothing switches yet",
        "barrier on every adjusted stream; drained PEs hand their state over",
        "close old channels, stop drained PEs",
    ];
    for (n, (phase, title)) in plan.phases.iter().zip(titles).enumerate() {
        let _ = writeln!(w, "\nPhase {}/3 {}: {title}", n + 1, phase.phase.name());
        if phase.groups.is_empty() {
            let _ = writeln!(w, "  (nothing)");
        }
        for g in &phase.groups {
            match &g.target {
                Target::Worker(id) => {
                    let _ = writeln!(w, "  worker {id}");
                }
                Target::Pe(pe) => {
                    let _ = writeln!(w, "  pe {pe}");
                }
            }
            for i in &g.instructions {
                let _ = writeln!(w, "    {}", describe(i));
            }
        }
    }
    let s = &plan.summary;
    let _ = writeln!(
        w,
        "\nUntouched: {} PE(s) keep running, never paused",
        plan.untouched_pes.len()
    );
    for pe in plan.untouched_pes.iter().take(LIST_LIMIT) {
        let _ = writeln!(w, "  {pe}");
    }
    if plan.untouched_pes.len() > LIST_LIMIT {
        let _ = writeln!(
            w,
            "  ... and {} more",
            plan.untouched_pes.len() - LIST_LIMIT
        );
    }
    let _ = writeln!(
        w,
        "\nSummary: start {} PE(s), stop {}, rewire {}, untouched {}; channels +{} -{}",
        s.pes_started,
        s.pes_stopped,
        s.pes_rewired,
        s.pes_untouched,
        s.channels_opened,
        s.channels_closed
    );
    out
}

fn list(pes: &[PeId]) -> String {
    pes.iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(i: &Instruction) -> String {
    match i {
        Instruction::StartPe {
            pe,
            key_groups,
            state_from,
            parallelism,
            ..
        } => {
            let mut s = format!("start  {pe}");
            if !state_from.is_empty() {
                s += &format!("  state from {}", list(state_from));
                if *parallelism > 1 {
                    s += &format!(" (key groups {}..{})", key_groups.start, key_groups.end);
                }
            }
            s
        }
        Instruction::OpenChannel { channel } => format!("open   {channel}"),
        Instruction::SwitchOutput {
            pe,
            stream,
            partitioning,
            targets,
        } => match partitioning {
            Some(p) => format!("switch {pe} on {stream} -> {p} over [{}]", list(targets)),
            None => format!("switch {pe} on {stream} -> stream ends at the barrier"),
        },
        Instruction::Drain { pe, hand_off_to } if hand_off_to.is_empty() => {
            format!("drain  {pe} to the barrier")
        }
        Instruction::Drain { pe, hand_off_to } => {
            format!(
                "drain  {pe} to the barrier, hand state to {}",
                list(hand_off_to)
            )
        }
        Instruction::CloseChannel { channel } => format!("close  {channel}"),
        Instruction::StopPe { pe } => format!("stop   {pe}"),
    }
}
