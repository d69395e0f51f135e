//! The queue: live apps not placed yet, in the order the scheduler serves them, with
//! why each one waits. Pure: the queue's content is the replicated state (every
//! waiting app is a record in Raft with its arrival time, priority and start
//! conditions), and its order a function of that state and the leader's clock, so a
//! new leader serves the same queue in the same order.
//!
//! **Order.** Entries are served by
//! 1. *rank*, highest first: the priority class (low 0, normal 1, high 2) plus one per
//!    [`AGING_MS`] waited, up to [`MAX_AGING`] (aging: a low app that waited long
//!    enough is served like a high one, so no class starves another forever);
//! 2. the tenant's *share*, lowest first: its dominant resource share averaged over
//!    the last [`SHARE_WINDOW_MS`](super::usage::SHARE_WINDOW_MS), plus the share of
//!    what was placed for it earlier in the same round (so two tenants that submit
//!    ten apps each at once are served in turn, not ten and then ten);
//! 3. arrival, oldest first; then the name.
//!
//! **Gates.** An entry is tried only when its start conditions hold (`not_before` has
//! passed; every app named in `after` has started, i.e. been placed once) and its
//! tenant's quota leaves room for all of it beside what the tenant holds. Otherwise it
//! waits with that reason and takes nothing.
//!
//! **Backfill, and what stops it.** An entry that does not fit the free capacity now
//! is skipped and later entries that fit are placed (small apps do not wait behind a
//! large one). Once a skipped entry has waited [`STARVING_MS`], and it would fit the
//! cluster were it empty, nothing behind it that competes for the same resources is
//! placed any more (only an app asking GPUs of another vendor than a starving GPU app
//! goes on): capacity freed from then on is kept for it, so a stream of small apps
//! cannot starve a large one. The same holds for an entry that preempts: what its
//! victims free is kept for it.

use super::usage::{over_quota, Demand, Totals};
use super::QueueOrder;
use crate::state::{AppRecord, ClusterState};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use weir_common::spec::{AppSpec, Priority, Vendor};

/// Waiting this long raises an entry's rank by one.
pub const AGING_MS: u64 = 5 * 60 * 1000;

/// The most rank aging adds: a low app ages up to a high one's rank, never above.
pub const MAX_AGING: u32 = 2;

/// An entry that waited this long and could fit the empty cluster stops backfill.
pub const STARVING_MS: u64 = 15 * 60 * 1000;

/// An app waiting in the queue, as `weirctl queue` shows it: a queued app, or a
/// running one whose lost PEs wait for room (those come first).
#[derive(Clone, Debug, PartialEq)]
pub struct QueueEntry {
    /// App name.
    pub app: String,
    /// Its tenant.
    pub tenant: String,
    /// Its priority class.
    pub priority: weir_common::spec::Priority,
    /// Its rank (class plus aging).
    pub rank: u32,
    /// Its tenant's share when it was examined.
    pub share: f64,
    /// When it arrived (leader clock).
    pub queued_at_ms: u64,
    /// Its PEs.
    pub pes: u64,
    /// Why it waits.
    pub wait: Wait,
}

/// Why an entry waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wait {
    /// `not_before` has not come yet (ms since the epoch).
    NotBefore(u64),
    /// An app named in `after` has not started; why.
    After(String),
    /// Its tenant's quota has no room; which limit.
    Quota(String),
    /// No worker has room for it now; what is missing.
    Capacity(String),
    /// A starving entry ahead of it keeps the capacity freed (the app named).
    Behind(String),
    /// Lower-class apps are being preempted to make room for it (those named).
    Preempting(Vec<String>),
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wait::NotBefore(ms) => {
                write!(f, "start.not_before: not before {ms} ms since the epoch")
            }
            Wait::After(why) => write!(f, "start.after: {why}"),
            Wait::Quota(why) | Wait::Capacity(why) => f.write_str(why),
            Wait::Preempting(apps) => write!(
                f,
                "preempting {} (of a lower class) to make room; they resume from their latest checkpoint later",
                apps.join(", ")
            ),
            Wait::Behind(app) => write!(
                f,
                "behind {app}, which has waited over {} min: capacity freed now goes to it first",
                STARVING_MS / 60_000
            ),
        }
    }
}

impl Wait {
    /// A short name of the kind of wait, for tables and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Wait::NotBefore(_) => "not_before",
            Wait::After(_) => "after",
            Wait::Quota(_) => "quota",
            Wait::Capacity(_) => "capacity",
            Wait::Behind(_) => "behind",
            Wait::Preempting(_) => "preempting",
        }
    }
}

/// One waiting app.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The app.
    pub app: Arc<AppRecord>,
    /// What it asks for.
    pub demand: Demand,
    /// Its rank (class plus aging).
    pub rank: u32,
    /// Its tenant's share when it was examined.
    pub share: f64,
}

impl Entry {
    /// When it arrived (committed).
    pub fn queued_at_ms(&self) -> u64 {
        self.app.queued_at()
    }
}

/// The class's rank.
fn class(p: Priority) -> u32 {
    match p {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
    }
}

/// An entry's rank after `waited_ms` (see the module doc).
pub fn rank(p: Priority, waited_ms: u64) -> u32 {
    class(p) + ((waited_ms / AGING_MS).min(u64::from(MAX_AGING)) as u32)
}

/// The live apps of `state` never placed yet: the queue's content, unordered.
pub fn waiting(state: &ClusterState) -> Vec<Arc<AppRecord>> {
    state
        .apps
        .values()
        .filter(|a| a.state().is_live() && a.placement.is_empty())
        .cloned()
        .collect()
}

/// Why `app`'s start conditions do not hold at `now_ms`, if they do not.
pub fn gate(state: &ClusterState, app: &AppRecord, now_ms: u64) -> Option<Wait> {
    let start = &app.current().spec.start;
    if let Some(t) = start.not_before_ms {
        if now_ms < t {
            return Some(Wait::NotBefore(t));
        }
    }
    for other in &start.after {
        // Only the tenant's own apps count: another tenant's are not even named.
        let found = state.apps.get(other).filter(|o| o.tenant == app.tenant);
        let why = match found {
            None => format!("app {other:?} does not exist (yet)"),
            Some(o) if o.placed_at_ms.is_none() && o.placement.is_empty() => {
                if o.state().is_live() {
                    format!("app {other:?} has not started")
                } else {
                    format!(
                        "app {other:?} ended ({:?}) without ever starting",
                        o.state()
                    )
                    .to_lowercase()
                }
            }
            Some(_) => continue,
        };
        return Some(Wait::After(why));
    }
    None
}

/// The queue in service order (`order`), for `serve` to try one entry at a time: it answers
/// whether the entry was placed, and the order adapts (a tenant served gains share).
///
/// `held` is what each tenant holds now, `shares` their windowed shares, `fits_empty`
/// whether an app would fit the cluster were it empty (asked only of starving
/// entries). `try_place` answers why an entry could not be placed (`Capacity`, or
/// `Preempting` when room is being made for it, which keeps that room from the entries
/// behind it). Returns every entry examined, in order, with why it still waits
/// (`None`: placed).
pub fn serve(
    state: &ClusterState,
    now_ms: u64,
    order: QueueOrder,
    held: &BTreeMap<String, Demand>,
    shares: &BTreeMap<String, f64>,
    mut fits_empty: impl FnMut(&AppRecord) -> bool,
    mut try_place: impl FnMut(&Arc<AppRecord>) -> Result<(), Wait>,
) -> Vec<(Entry, Option<Wait>)> {
    let totals = Totals::of(state);
    let mut held = held.clone();
    // FIFO: no classes and no shares, arrival alone decides.
    let fifo = order == QueueOrder::Fifo;
    let mut shares = if fifo {
        BTreeMap::new()
    } else {
        shares.clone()
    };
    // Per tenant, its entries best first; the tenant to serve next is the one whose
    // head is best (rank, then share, then arrival).
    let mut by_tenant: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for app in waiting(state) {
        let waited = now_ms.saturating_sub(app.queued_at());
        let entry = Entry {
            demand: Demand::of_spec(&app.current().spec),
            rank: if fifo {
                0
            } else {
                rank(app.current().spec.priority, waited)
            },
            share: 0.0,
            app,
        };
        by_tenant
            .entry(entry.app.tenant.clone())
            .or_default()
            .push(entry);
    }
    for q in by_tenant.values_mut() {
        // Reversed, so the best is popped from the end.
        q.sort_by(|a, b| {
            b.rank
                .cmp(&a.rank)
                .then(a.queued_at_ms().cmp(&b.queued_at_ms()))
                .then(a.app.name.cmp(&b.app.name))
        });
        q.reverse();
    }
    let mut out = Vec::new();
    // Starving entries, each with the GPU vendors it asks for: capacity of those is
    // kept for them.
    let mut blocked: Vec<(String, BTreeSet<Vendor>)> = Vec::new();
    loop {
        let next = by_tenant
            .iter()
            .filter_map(|(t, q)| q.last().map(|e| (t, e)))
            .min_by(|(ta, a), (tb, b)| {
                let (sa, sb) = (
                    shares.get(*ta).copied().unwrap_or(0.0),
                    shares.get(*tb).copied().unwrap_or(0.0),
                );
                b.rank
                    .cmp(&a.rank)
                    .then(sa.total_cmp(&sb))
                    .then(a.queued_at_ms().cmp(&b.queued_at_ms()))
                    .then(a.app.name.cmp(&b.app.name))
            })
            .map(|(t, _)| t.clone());
        let Some(tenant) = next else { break };
        let Some(mut e) = by_tenant.get_mut(&tenant).and_then(Vec::pop) else {
            break;
        };
        e.share = shares.get(&tenant).copied().unwrap_or(0.0);
        let vendors = gpu_vendors(&e.app.current().spec);
        let behind = blocked
            .iter()
            .find(|(_, claim)| competes(&vendors, claim))
            .map(|(app, _)| app.as_str());
        let wait = examine(state, now_ms, &e, &held, behind, &mut try_place);
        match &wait {
            None => {
                let h = held.entry(tenant.clone()).or_default();
                *h = h.plus(e.demand);
                if !fifo {
                    *shares.entry(tenant).or_default() += totals.dominant_share(&e.demand);
                }
            }
            // What its victims free is kept for a preempting entry, as for a starving one.
            Some(Wait::Preempting(_)) => blocked.push((e.app.name.clone(), vendors)),
            Some(Wait::Capacity(_))
                if now_ms.saturating_sub(e.queued_at_ms()) >= STARVING_MS && fits_empty(&e.app) =>
            {
                blocked.push((e.app.name.clone(), vendors));
            }
            Some(_) => {}
        }
        out.push((e, wait));
    }
    out
}

/// The GPU vendors `spec`'s PEs ask for (empty: none asks GPUs).
fn gpu_vendors(spec: &AppSpec) -> BTreeSet<Vendor> {
    spec.operators
        .iter()
        .filter_map(|o| o.resources.gpu.as_ref().map(|g| g.vendor))
        .collect()
}

/// Whether an app asking GPUs of `vendors` competes for what a starving app asking
/// `claim` waits for. Only two apps that both ask GPUs, of vendors that never meet
/// (`any` meets every vendor), do not: each needs workers with its own vendor's
/// devices. Any app may take cores or memory a starving app waits for (on the very
/// workers that host its devices, too), so an app asking no GPUs competes with all.
fn competes(vendors: &BTreeSet<Vendor>, claim: &BTreeSet<Vendor>) -> bool {
    claim.is_empty()
        || vendors.is_empty()
        || vendors.contains(&Vendor::Any)
        || claim.contains(&Vendor::Any)
        || vendors.intersection(claim).next().is_some()
}

/// Why `e` still waits after trying it, if it does.
fn examine(
    state: &ClusterState,
    now_ms: u64,
    e: &Entry,
    held: &BTreeMap<String, Demand>,
    blocked: Option<&str>,
    try_place: &mut impl FnMut(&Arc<AppRecord>) -> Result<(), Wait>,
) -> Option<Wait> {
    if let Some(w) = gate(state, &e.app, now_ms) {
        return Some(w);
    }
    let tenant = &e.app.tenant;
    if let Some(q) = state.tenants.get(tenant).and_then(|t| t.quota.as_ref()) {
        let now = held.get(tenant).copied().unwrap_or_default();
        if let Some(why) = over_quota(tenant, q, &now, &e.demand) {
            return Some(Wait::Quota(why));
        }
    }
    if let Some(b) = blocked {
        return Some(Wait::Behind(b.to_string()));
    }
    try_place(&e.app).err()
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
