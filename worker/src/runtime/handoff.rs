//! An upgrade's state hand-off with pre-copy (docs/upgrade-protocol.md, "Pre-copy").
//!
//! The successor side, [`restore`]: a window successor whose restore pieces name a
//! pre-copy checkpoint loads its predecessors' snapshots of that checkpoint at once,
//! while they keep running; then it follows the *rounds* they ship (changed slots, a
//! bounded number at a time) and reports running once it has caught up, so the switch
//! waits for the copy, not the other way round. At the switch barrier it takes each
//! predecessor's *envelope*: the rounds it has not applied yet, then the delta of what
//! changed since the last round. When anything breaks the chain (no delta against the
//! pre-copied checkpoint, a round missing), the copy is dropped and the whole
//! snapshots at the barrier are loaded, as without pre-copy: slower, never wrong.
//!
//! The predecessor side is in `pe.rs` and [`Rounds`]: a window armed to drain ships
//! rounds while it waits; at the barrier it stores its envelope (locally) before it
//! forwards the barrier, and its whole snapshot, which checkpoint `K` needs for
//! recovery, after.
//!
//! Envelope layout (rounds and the barrier's alike): `b"WH"`, `u8` version 1, `u8`
//! tag: 0 (no delta: load the whole snapshot) | 1 (a delta) | 2 (a round that left
//! changes for later rounds) | 3 and 4 (as 1 and 2, with when it was shipped), then
//! `u64` base checkpoint, `u64` rounds shipped before it, for tags 3 and 4 `u64`
//! milliseconds since the Unix epoch on its PE's clock when it was shipped (all little
//! endian), and the delta in the kernel's snapshot layout. Tags 1 and 2 are what
//! workers before 2026-12-07 wrote, and are still read.

use super::checkpoint::Ckpt;
use super::checkpoint::{CheckpointEnv, Loaded, PieceState};
use super::kernel::Kernel;
use super::status::Stopped;
use super::status::{PeRunState, PeStatus};
use crate::background::Priority;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use weir_proto::v1 as pb;

const MAGIC: &[u8; 2] = b"WH";
const VERSION: u8 = 1;

/// How often an old window armed to drain ships a round, at most: small rounds often
/// rather than large ones seldom, for the same slots per second ([`ROUND_SLOTS`]).
const ROUND_EVERY: Duration = Duration::from_millis(5);

/// Slots per round, at most: a round costs its PE a few milliseconds between batches
/// (each listed slot looked up), and its successors as much to apply. 32 Ki until
/// 2026-12-06: at 10 MB of state, where the changes since the last checkpoint are
/// about the whole state, the first rounds of two old windows and their three
/// successors took both cores of the dev box for ~100 ms as a replacement began (a
/// stall of 75-81 ms); with 8 Ki, 16-33 ms (BENCHMARKS.md, issue 22). 8 Ki every
/// 20 ms until 2026-12-06 (evening): building one took its PE 4-8 ms, and the records
/// behind it in that time were the slowest of a 10 MB upgrade (p99 during it 7-12 ms
/// against 3-4 steady); 2 Ki every 5 ms take 0.2 ms (median) to 0.8 ms (p90), and
/// p99 stayed within twice steady in 12 of 14 upgrades (BENCHMARKS.md, "Rounds small
/// and often"). Two old windows still ship ~800 K slots/s between them, over twice
/// what 300,000 records/s change.
const ROUND_SLOTS: usize = 1 << 11;

/// Rounds a successor applies from one predecessor before it looks at the others
/// again: it drains what is there instead of taking one round per pass, so fewer are
/// left for after the switch.
const ROUNDS_PER_PASS: u64 = 64;

/// Rounds fetched ahead of the one being applied (each at most [`ROUND_SLOTS`] slots,
/// under 100 KB at 10 MB of state): their fetches overlap instead of queueing one
/// behind the other, after the switch while the stream waits, and before it while a
/// successor is behind.
const PREFETCH: usize = 8;

/// How long a successor catches up on rounds before it reports running anyway (the
/// switch then moves what is left), or as long as its pre-copy took if that was
/// longer: the rounds waiting were shipped while it loaded, so a large state has more
/// to catch up on (at 1 GB on the dev box, 20 s of loading left ~180 rounds; cut at
/// 2 s, 144 MB were still waiting at the switch and the stream stalled 1.2 s). A
/// successor that is losing ground stops whatever the limit ([`Pace::judge`]). Never
/// more than [`MAX_CATCH_UP`], or [`MAX_GAINING`] while it gains: the master gives
/// prepare 30 s, a second more per 50 MiB pre-copied and `MAX_GAINING` more.
const CATCH_UP: Duration = Duration::from_secs(2);

/// The piece bytes from which a pre-copy loads at the background priority
/// ([`crate::background`]). The predecessors carry the stream meanwhile, and three
/// successors each loading 0.5-1 GB at the normal priority took the cores from them
/// on the 2-core box (gaps of 210-275 ms at the sink); niced, the pre-copy takes
/// longer rather than taking their cores (the catch-up then has more rounds to apply,
/// each small). From 1 MiB: at 10 MB of state, pieces of 3-19 MB loaded at the
/// normal priority still held the sink 47-53 ms as the pre-copy began (24-26 ms
/// niced; BENCHMARKS.md, 2026-12-06). Not for tiny pieces, which take the cores for
/// moments: a niced thread beside busy cores can wait to be scheduled at all.
pub const BACKGROUND_FROM: u64 = 1 << 20;

/// The longest a successor catches up, however long its pre-copy took, unless it is
/// gaining ([`MAX_GAINING`]).
const MAX_CATCH_UP: Duration = Duration::from_secs(10);

/// The longest a successor that is gaining on its predecessors catches up
/// ([`readiness`], `Pace::due`). The master's limit for a prepare grows by as much
/// when there is something to pre-copy (its `CATCH_UP_MS`), on top of 30 s and a
/// second per 50 MiB pre-copied. At 1 GB on the dev box the
/// rescale's successor that takes half of each predecessor's piece loaded for 20-25
/// s; with 10 s to catch up on the rounds shipped meanwhile it once still had 76 MB
/// left for the switch, a stall of 1,077 ms (BENCHMARKS.md, issue 22).
const MAX_GAINING: Duration = Duration::from_secs(20);

/// The longest one pass over a predecessor's rounds asks for more before the successor
/// judges where it stands again ([`readiness`]): one judgement's span, so a successor
/// of one predecessor is judged about each second (of several, once a pass over each
/// has ended: their passes run one after another). Bounded only by its count ([`ROUNDS_PER_PASS`]), a pass could outlast
/// the whole catch-up: in the demo (a debug build beside a CPU hog, each round fetched
/// from the other worker over a new mutual-TLS connection, 5-12 a second, while the
/// predecessor shipped one every 5 ms) a successor's first pass had not ended after
/// 17 s, it never found itself out of time, the finite source ended first, and the
/// upgrade rolled back. Bounded at 250 ms, which cuts the passes of a 1 GB catch-up
/// (64 rounds take longer), a 1 GB rescale's successor of two predecessors ran out of
/// its 20 s in the one run tried, 134 MB left for the switch (a 2.8 s stall; the box
/// was noisy then; BENCHMARKS.md, issue 22): a second keeps those passes whole.
const PASS_FOR: Duration = JUDGE_AFTER;

/// Whether a successor that applied `applied` rounds of one predecessor in `took` is
/// gaining on it: that predecessor shipped at most one round per [`ROUND_EVERY`]
/// meanwhile (and one more).
fn gaining(applied: u64, took: Duration) -> bool {
    let shipped_at_most = (took.as_micros() / ROUND_EVERY.as_micros()) as u64 + 1;
    applied > shipped_at_most
}

/// The bytes pre-copied from which a successor asks for [`PREFETCH`] rounds at once
/// from the start of its catch-up, not only after [`JUDGE_AFTER`]. A large pre-copy
/// loads for long (5-25 s at 1 GB on the dev box), so hundreds of rounds wait when it
/// ends; asked for one at a time, each an exchange with a busy predecessor's worker
/// (~12 ms), a replacement's successors applied ~85 rounds in their first second,
/// fewer than their predecessors shipped, were judged losing, and the switch moved
/// 8-54 MB while the stream waited up to 1.9 s (BENCHMARKS.md, issue 22). Small
/// pre-copies keep the gentler start (see the catch-up loop). Either way only while
/// rounds are known to wait ([`Pace::deep`]).
const DEEP_FROM: u64 = 256 << 20;

/// How long a successor catches up before it judges whether it gains at all, and
/// then how often it judges again ([`Pace::judge`]).
const JUDGE_AFTER: Duration = Duration::from_secs(1);

/// How much younger the state a successor has applied must get over [`JUDGE_AFTER`]
/// for it to count as gaining on its predecessor ([`Pace::judge`]): a tenth of its
/// time spent gaining, or it stops waiting (one that gains less would take over ten
/// times its lag to catch up). Also what a lag of a few round trips counts as: at
/// the head of a predecessor's rounds the age stays there and is not "gaining".
const GAIN: Duration = Duration::from_millis(100);

/// Whether a successor still behind a predecessor, `applied` rounds of it since it
/// began catching up `since` ago, is losing by the bound on what the predecessor can
/// ship ([`gaining`]), once it has run [`JUDGE_AFTER`]: the judgement for rounds that
/// do not say when they were shipped (from workers before 2026-12-07; see
/// [`Pace::judge`] for the rest). Judged on the whole catch-up, not on one pass: at
/// 1 GB on the dev box one slow pass of 16 rounds (a busy moment on two cores) read
/// as losing, the switch came with 20-37 MB of rounds still waiting and the stream
/// stalled 1.5 s while the successors applied them (BENCHMARKS.md, 2026-12-06).
fn losing(applied: u64, since: Duration) -> bool {
    since >= JUDGE_AFTER && !gaining(applied, since)
}

/// Now, in milliseconds since the Unix epoch: when a round is shipped, and how old the
/// last one applied is ([`Pace::judge`]).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where a PE's hand-off envelope is stored: beside its snapshots, under a name no PE
/// id can have (operator names are `[a-z][a-z0-9_-]*`, revisions hex).
pub fn envelope_name(pe: &str) -> String {
    format!("{pe}{}", crate::checkpoint::store::HANDOFF_MARK)
}

/// Where a PE's rounds against the full snapshot at checkpoint `base` are stored (as
/// ids 1, 2, ...).
pub fn round_name(pe: &str, base: u64) -> String {
    format!("{pe}{}{base}", crate::checkpoint::store::ROUND_MARK)
}

/// A delta in an envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Delta<'a> {
    /// The checkpoint whose full snapshot it is against.
    pub base: u64,
    /// Rounds against `base` shipped before it: a successor applies those first.
    pub after: u64,
    /// A round that left changed slots for later rounds (the successor is behind).
    pub more: bool,
    /// When it was shipped, in milliseconds since the Unix epoch on its PE's clock
    /// (`None` from workers before 2026-12-07).
    pub shipped_ms: Option<u64>,
    /// The delta, in the kernel's snapshot layout.
    pub state: &'a [u8],
}

/// The most bytes an envelope puts before its delta: magic, version, tag, `base`,
/// `after` and the shipped time.
const HEADER: usize = 4 + 3 * 8;

/// An envelope: a round, or a drained window's hand-off. `None`: no delta (the
/// successor must load the whole snapshot).
pub fn envelope(delta: Option<Delta<'_>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + delta.as_ref().map_or(0, |d| d.state.len()));
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    match delta {
        None => out.push(0),
        Some(d) => {
            let timed = if d.shipped_ms.is_some() { 2 } else { 0 };
            out.push(timed + if d.more { 2 } else { 1 });
            out.extend_from_slice(&d.base.to_le_bytes());
            out.extend_from_slice(&d.after.to_le_bytes());
            if let Some(ms) = d.shipped_ms {
                out.extend_from_slice(&ms.to_le_bytes());
            }
            out.extend_from_slice(d.state);
        }
    }
    out
}

/// Reads an envelope (`None`: no delta); malformed bytes are an error, never a panic.
pub fn open(b: &[u8]) -> Result<Option<Delta<'_>>, String> {
    let u64_at = |b: &[u8]| -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    };
    match b {
        [m0, m1, VERSION, 0] if [*m0, *m1] == *MAGIC => Ok(None),
        // Tags 1 and 2 (workers before 2026-12-07) carry no shipped time; 3 and 4 do.
        [m0, m1, VERSION, tag @ 1..=4, rest @ ..]
            if [*m0, *m1] == *MAGIC && rest.len() >= if *tag > 2 { 24 } else { 16 } =>
        {
            let (shipped_ms, state) = if *tag > 2 {
                (Some(u64_at(&rest[16..24])), &rest[24..])
            } else {
                (None, &rest[16..])
            };
            Ok(Some(Delta {
                base: u64_at(&rest[..8]),
                after: u64_at(&rest[8..16]),
                more: *tag % 2 == 0,
                shipped_ms,
                state,
            }))
        }
        _ => Err(format!(
            "not a hand-off envelope ({} bytes, starting {:02x?})",
            b.len(),
            &b[..b.len().min(4)]
        )),
    }
}

/// An old window's rounds while it is armed to drain: listed slots shipped a bounded
/// number at a time, so that its successors, following them, are close behind when
/// the switch comes.
#[derive(Debug)]
pub(crate) struct Rounds {
    /// The checkpoint the rounds are against, and how many were shipped.
    base: Option<(u64, u64)>,
    last: Instant,
}

impl Rounds {
    pub(crate) fn new() -> Self {
        Self {
            base: None,
            last: Instant::now(),
        }
    }

    /// Whether a round may be due (cheap: checked between batches).
    pub(crate) fn due(&self) -> bool {
        self.last.elapsed() >= ROUND_EVERY
    }

    /// Ships a round of a window armed to drain (nothing without listed changes).
    pub(crate) async fn ship(&mut self, kernel: &mut Kernel, ckpt: &Ckpt) -> Result<(), String> {
        self.last = Instant::now();
        let Some((base, state, more)) = kernel.handoff_round(ckpt.key_groups, ROUND_SLOTS) else {
            return Ok(());
        };
        let built_us = self.last.elapsed().as_micros() as u64;
        let after = self.after(base);
        let bytes = envelope(Some(Delta {
            base,
            after,
            more,
            shipped_ms: Some(unix_ms()),
            state: &state,
        }));
        ckpt.env
            .put_local(&ckpt.app, &round_name(&ckpt.pe, base), after + 1, bytes)
            .await?;
        tracing::trace!(pe = %ckpt.pe, round = after + 1, bytes = state.len(), more, built_us, "round shipped");
        self.base = Some((base, after + 1));
        Ok(())
    }

    /// Rounds shipped against `base` (a later full snapshot starts again from 0).
    pub(crate) fn after(&self, base: u64) -> u64 {
        match self.base {
            Some((b, n)) if b == base => n,
            _ => 0,
        }
    }
}

/// How long a successor waits for its predecessors' envelopes (as for their
/// snapshots without pre-copy).
const WAIT: Duration = Duration::from_secs(120);

/// Loads a PE's starting state into `kernel`: with pre-copy where its pieces ask for
/// it and its kernel can take deltas, else as [`Ckpt::load`] does. On failure the PE
/// has reported why and must stop.
pub(crate) async fn restore(
    ckpt: &Ckpt,
    kernel: &mut Kernel,
    status: &PeStatus,
) -> Result<(), Stopped> {
    let precopy = !ckpt.pieces.is_empty()
        && kernel.takes_deltas()
        && ckpt.pieces.iter().all(|p| p.precopy_checkpoint_id > 0);
    if precopy && with_precopy(ckpt, kernel, status).await? {
        seed(ckpt, kernel, status.precopied_bytes.load(Ordering::Relaxed));
        return Ok(());
    }
    let parts = ckpt.load(status).await?;
    let bytes: u64 = parts.iter().map(PieceState::bytes).sum();
    if let Err(e) = kernel
        .restore(&parts, ckpt.handoff(), Priority::Stream)
        .await
    {
        status
            .restore_failed
            .store(ckpt.restore.as_ref().map_or(0, |r| r.id), Ordering::Release);
        status.fail(format!("restoring state: {e}"));
        return Err(Stopped::Failed);
    }
    if ckpt.handoff().is_some() {
        status.barrier_bytes.fetch_add(bytes, Ordering::Relaxed);
        seed(ckpt, kernel, bytes);
    }
    Ok(())
}

/// A successor whose state is now its predecessors' at the one checkpoint all its
/// pieces were taken at (an upgrade's switch, or a recovery to it): its first
/// increments build on their snapshots there. The leader records those as the
/// increments' seed (it finds the PE in that checkpoint's hand-off); until the PE's
/// worker knows the checkpoint complete its snapshots stay whole. `bytes`: about what a
/// restore of the seed loads, which bounds the increments on it as a whole snapshot
/// would.
fn seed(ckpt: &Ckpt, kernel: &mut Kernel, bytes: u64) {
    let Some(at) = ckpt.pieces.first().map(|p| p.checkpoint_id) else {
        return;
    };
    if ckpt.pieces.iter().all(|p| p.checkpoint_id == at) {
        kernel.seed(at, bytes);
    }
}

/// Where a pre-copy of `bytes` is read and loaded ([`BACKGROUND_FROM`]).
fn at_priority(bytes: u64) -> Priority {
    if bytes >= BACKGROUND_FROM {
        Priority::Background
    } else {
        Priority::Stream
    }
}

/// The bytes a predecessor's pre-copy piece loads, as its locations record them (the
/// largest copy of each snapshot: a hand-off location may record none).
fn precopy_bytes(p: &pb::RestorePiece) -> u64 {
    let largest = |ls: &[pb::SnapshotLocation]| ls.iter().map(|l| l.size_bytes).max().unwrap_or(0);
    let links = p.precopy_chain.iter().map(|l| largest(&l.locations));
    let seed = p.precopy_seed.iter().map(|s| largest(&s.locations));
    largest(&p.precopy_locations).saturating_add(links.chain(seed).fold(0, u64::saturating_add))
}

/// What a successor knows of one predecessor while it catches up.
struct Follow<'a> {
    piece: &'a pb::RestorePiece,
    /// How far its rounds are followed.
    pace: Pace,
    /// The envelope it stored at the switch barrier, once there.
    at_barrier: Option<bytes::Bytes>,
}

/// How far a successor has followed one predecessor's rounds.
#[derive(Debug, Default, Clone, Copy)]
struct Pace {
    /// Rounds applied.
    applied: u64,
    /// The last round applied said its predecessor had left changes for later rounds.
    more: bool,
    /// Rounds of it were left stored: the last pass stopped at its limit, not for
    /// want of the next round (before the first pass: presumed, a pre-copy's rounds
    /// pile up while it loads).
    waiting: bool,
    /// When the predecessor shipped the last round applied, in milliseconds since the
    /// Unix epoch on its clock (`None` before the first, or from a worker whose rounds
    /// do not say).
    shipped_ms: Option<u64>,
    /// The judgement of whether it is losing ground, and what it reckoned
    /// ([`Pace::judge`]).
    judgement: Judgement,
}

/// Where the judgement of a successor against one predecessor stands
/// ([`Pace::judge`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    /// None under way: caught up with it, or no round applied yet that says when it
    /// was shipped.
    #[default]
    Unread,
    /// Under way since the successor last fell behind.
    Judging {
        /// Where the judgement under way began.
        window: Reading,
        /// Where the one before it began (since the successor last fell behind).
        prior: Option<Reading>,
        /// When, into the catch-up, it would be caught up at the pace of the last
        /// judgement, if that gained, and within [`MAX_GAINING`].
        due: Option<Duration>,
    },
    /// Losing ground on it; final.
    Losing,
}

/// Where a successor stood with one predecessor at a moment of its catch-up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Reading {
    /// How far into the catch-up (the successor's monotonic clock).
    at: Duration,
    /// When the last round applied was shipped (the predecessor's clock, ms).
    shipped_ms: u64,
}

impl Reading {
    /// How much younger (ms; negative: older) the state applied got from this reading
    /// to `now`: the time its rounds applied meanwhile span, on the predecessor's
    /// clock, less the time that passed, on the successor's. Neither clock is compared
    /// with the other, so an offset between them does not count, nor does a step of
    /// the successor's wall clock.
    fn gained(&self, now: Reading) -> i64 {
        let passed = now.at.saturating_sub(self.at).as_millis() as i64;
        let spanned = i128::from(now.shipped_ms) - i128::from(self.shipped_ms);
        let spanned = spanned.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        spanned.saturating_sub(passed)
    }
}

impl Pace {
    /// After a pass over the rounds stored; `drained`: it stopped because none was
    /// left, not at its limit.
    ///
    /// A pass that stops at its limit leaves rounds stored and not applied. (Each
    /// round applied used to clear `behind`, so one pass of 16 rounds read as caught up
    /// with dozens still waiting, and those moved after the switch.) A predecessor
    /// whose last round left changes for later rounds is behind even when none is
    /// waiting yet: it ships the next within `ROUND_EVERY`. (Until 2026-12-06 a pass
    /// that found nothing new counted as caught up: at 10 MB of state a rescale's
    /// switch came 60-170 ms after the pre-copy, with the second of changes listed
    /// since the checkpoint mostly unshipped, and 1.8-3.9 MB per successor moved at
    /// the barrier.)
    fn passed(&mut self, drained: bool) {
        self.waiting = !drained;
    }

    /// Whether rounds of it may still be waiting or to come: the last pass stopped at
    /// its limit ([`Pace::passed`]), or the last round applied left more.
    fn behind(&self) -> bool {
        self.waiting || self.more
    }

    /// Judges, `since` into the catch-up and at `now_ms` (the successor's wall clock,
    /// ms since the Unix epoch), whether the successor is losing ground on this
    /// predecessor. From when its rounds were shipped: the state applied is as old as
    /// the last round applied, and the successor gains while that age falls by
    /// [`GAIN`] or more in each [`JUDGE_AFTER`] ([`Reading::gained`]; a new judgement
    /// starts each time it does). A second that gains less is not enough to call it
    /// losing if it and the second before gained [`GAIN`] a second together: a busy
    /// moment on a small machine is not a trend (judged on one pass until 2026-12-06,
    /// one slow pass at 1 GB let a switch come with 20-37 MB of rounds waiting). The
    /// first judgement has no second before it: at a predecessor's head, judged
    /// after one second as before. Rounds that do not
    /// say when they were shipped are judged by the bound on how many could be
    /// ([`losing`]).
    ///
    /// A successor that gains also reckons when it will be caught up at that pace
    /// (`due`), from the age of its state (`now_ms` less the shipped time: here the two
    /// clocks are compared, and an offset between them moves `due`): the catch-up may
    /// run until then, past its usual limit, if that is within [`MAX_GAINING`]
    /// ([`readiness`]).
    ///
    /// Until 2026-12-07 every round was judged by that bound: at most one round per
    /// [`ROUND_EVERY`], 200 a second, which a busy predecessor never ships. On the dev
    /// box a 100 MB replacement's successor that applied 7 MB of rounds in its first
    /// 1.3 s, whose copy had loaded last (2.1 s, behind a neighbour's), was judged
    /// losing; the switch came at once, 12 MB of rounds still waited, and the stream
    /// stalled 595 ms while it applied them (BENCHMARKS.md, issue 22).
    fn judge(&mut self, since: Duration, now_ms: u64) {
        if self.judgement == Judgement::Losing {
            return;
        }
        if !self.behind() {
            self.judgement = Judgement::Unread;
            return;
        }
        let Some(shipped_ms) = self.shipped_ms else {
            if losing(self.applied, since) {
                self.judgement = Judgement::Losing;
            }
            return;
        };
        let now = Reading {
            at: since,
            shipped_ms,
        };
        let Judgement::Judging { window, prior, .. } = self.judgement else {
            self.judgement = Judgement::Judging {
                window: now,
                prior: None,
                due: None,
            };
            return;
        };
        if since < window.at + JUDGE_AFTER {
            return;
        }
        let gain = GAIN.as_millis() as i64;
        let gained = window.gained(now);
        let per_second = |from: Reading| {
            let took = since.saturating_sub(from.at).as_millis() as i64;
            gain.saturating_mul(took) / JUDGE_AFTER.as_millis() as i64
        };
        self.judgement = if gained >= gain {
            // Gained `gained` in `took`: the age left takes `age * took / gained`.
            let took = since.saturating_sub(window.at).as_millis() as u64;
            let age = now_ms.saturating_sub(shipped_ms);
            let left = age.saturating_mul(took) / gained as u64;
            let due = since.saturating_add(Duration::from_millis(left));
            Judgement::Judging {
                window: now,
                prior: Some(window),
                due: (due <= MAX_GAINING).then_some(due),
            }
        } else if prior.is_some_and(|p| p.gained(now) >= per_second(p)) {
            // A slow second after one that gained enough for both: judged afresh,
            // nothing reckoned.
            Judgement::Judging {
                window: now,
                prior: Some(window),
                due: None,
            }
        } else {
            Judgement::Losing
        };
    }

    /// Judged losing ground on it ([`Pace::judge`]); final.
    fn is_losing(&self) -> bool {
        self.judgement == Judgement::Losing
    }

    /// When, into the catch-up, it would be caught up at the pace of its last
    /// judgement that gained ([`Pace::judge`]); `None` if that did not gain, the
    /// reckoning passed [`MAX_GAINING`], or no judgement is under way.
    fn due(&self) -> Option<Duration> {
        match self.judgement {
            Judgement::Judging { due, .. } => due,
            Judgement::Unread | Judgement::Losing => None,
        }
    }

    /// Whether the next pass asks for [`PREFETCH`] rounds at once (once `deep` says
    /// the catch-up may): only while rounds are known to wait (or before the first
    /// pass). At the head of a predecessor still shipping its backlog (its rounds
    /// say more are to come), one round is there every [`ROUND_EVERY`] at most, and
    /// asking for 8 on every pass (a pass every 1-2 ms) sent thousands of fetches a
    /// second that found nothing: at 1 GB a successor that pre-copied 0.5 GB and
    /// asked deep from its start held the in-process master and workers' async threads
    /// for 6 s and the stream for 15 s (BENCHMARKS.md, issue 22).
    fn deep(&self, deep: bool) -> bool {
        deep && self.waiting
    }
}

/// Whether a successor may let the switch begin: with each predecessor it is caught
/// up, or judged losing ground ([`Pace::judge`]).
fn caught_up<'a>(paces: impl IntoIterator<Item = &'a Pace>) -> bool {
    paces.into_iter().all(|p| !p.behind() || p.is_losing())
}

/// Why a successor catching up lets the switch begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ready {
    /// No round waits, and none is announced, from any predecessor.
    CaughtUp,
    /// At the head of every predecessor's rounds (it applied each one stored), but a
    /// predecessor still announces more and ships them no faster than it applies
    /// them ([`Pace::judge`]): the predecessor's backlog, not this
    /// successor, is behind, and waiting would not shrink it. Each of five 100 MB
    /// rescales on the dev box on 2026-12-07 ended its catch-up so, which until then
    /// read as losing ground (BENCHMARKS.md, issue 22).
    AtHead,
    /// Still behind a predecessor, with its rounds waiting, and losing ground on it
    /// ([`Pace::judge`]): waiting longer would leave more, not less, for the barrier.
    Losing,
    /// Still behind after its catch-up time.
    OutOfTime,
}

impl Ready {
    /// What the PE's status and log say when it is not caught up.
    fn behind(self) -> Option<&'static str> {
        match self {
            Ready::CaughtUp => None,
            Ready::AtHead => Some("at the head of its predecessors' rounds, which announce more"),
            Ready::Losing => Some("losing ground on its predecessors' rounds"),
            Ready::OutOfTime => Some("out of catch-up time"),
        }
    }
}

/// Whether a successor that began catching up `since` ago, with `limit` to catch up,
/// lets the switch begin, and why (its paces judged: [`Pace::judge`]); `None`: it
/// keeps catching up. While it gains on every predecessor it is behind and not losing
/// ground on, the limit stretches to when it would be caught up with the last of them
/// (`Pace::due`, within [`MAX_GAINING`]): on the dev box on 2026-12-07, 100 MB replacements' successors
/// still gaining when their 2 s ran out left 2-5 MB each for the switch, and the
/// stream stalled up to 281 ms while they applied it (BENCHMARKS.md, issue 22).
fn readiness(paces: &[&Pace], since: Duration, limit: Duration) -> Option<Ready> {
    let due = paces
        .iter()
        .filter(|p| p.behind() && !p.is_losing())
        .map(|p| p.due())
        .collect::<Option<Vec<_>>>()
        .and_then(|d| d.into_iter().max());
    let limit = due.map_or(limit, |d| d.min(MAX_GAINING).max(limit));
    if paces.iter().all(|p| !p.behind()) {
        Some(Ready::CaughtUp)
    } else if caught_up(paces.iter().copied()) {
        if paces.iter().all(|p| !p.waiting) {
            Some(Ready::AtHead)
        } else {
            Some(Ready::Losing)
        }
    } else if since > limit {
        Some(Ready::OutOfTime)
    } else {
        None
    }
}

/// Why pre-copy gave up: fall back to the whole snapshots at the barrier.
struct GiveUp(String);

/// Pre-copy, rounds, then the deltas at the barrier. `Ok(false)`: no usable
/// pre-copy or delta; the kernel holds no state and the caller loads the whole
/// snapshots.
async fn with_precopy(
    ckpt: &Ckpt,
    kernel: &mut Kernel,
    status: &PeStatus,
) -> Result<bool, Stopped> {
    match precopy_then_deltas(ckpt, kernel, status).await {
        Ok(r) => r,
        Err(GiveUp(why)) => {
            tracing::info!(pe = %ckpt.pe, %why, "pre-copy given up: the whole state moves at the switch");
            kernel.clear_state();
            status.precopied_bytes.store(0, Ordering::Relaxed);
            Ok(false)
        }
    }
}

async fn precopy_then_deltas(
    ckpt: &Ckpt,
    kernel: &mut Kernel,
    status: &PeStatus,
) -> Result<Result<bool, Stopped>, GiveUp> {
    let env: &CheckpointEnv = &ckpt.env;
    let groups = ckpt.key_groups;
    let base = ckpt.pieces[0].precopy_checkpoint_id;
    // One predecessor's piece at a time: fetched, loaded (keeping this PE's key groups)
    // and dropped, so a successor of several predecessors never holds all their pieces
    // at once beside the state it builds. A large piece is read (here and where its
    // copies are) and loaded at the background priority ([`BACKGROUND_FROM`]).
    let mut copied = 0u64;
    let loading = Instant::now();
    for p in &ckpt.pieces {
        let started = Instant::now();
        let lost = |e: String| {
            GiveUp(format!(
                "checkpoint {} of {}: {e}",
                p.precopy_checkpoint_id, p.pe
            ))
        };
        let (part, _) = env
            .load_chain(
                &ckpt.app,
                &p.pe,
                p.precopy_checkpoint_id,
                &p.precopy_locations,
                (&p.precopy_chain, &p.precopy_seed),
                at_priority(precopy_bytes(p)),
            )
            .await
            .map_err(lost)?
            .ok_or_else(|| lost("no copy known".into()))?;
        copied += part.bytes();
        // Reported as it goes: an upgrade's progress shows the pre-copy advancing.
        status.precopied_bytes.store(copied, Ordering::Relaxed);
        let fetched_ms = started.elapsed().as_millis() as u64;
        kernel
            .restore(
                std::slice::from_ref(&part),
                Some(groups),
                at_priority(part.bytes()),
            )
            .await
            .map_err(|e| GiveUp(e.to_string()))?;
        let loaded_ms = started.elapsed().as_millis() as u64 - fetched_ms;
        tracing::debug!(pe = %ckpt.pe, from = %p.pe, bytes = part.bytes(), fetched_ms, loaded_ms, "piece pre-copied");
    }
    tracing::info!(pe = %ckpt.pe, bytes = copied, checkpoint = base, "state pre-copied; catching up");
    let mut follows: Vec<Follow<'_>> = ckpt
        .pieces
        .iter()
        .map(|piece| Follow {
            piece,
            pace: Pace {
                waiting: true,
                ..Pace::default()
            },
            at_barrier: None,
        })
        .collect();
    let started = Instant::now();
    let catch_up = CATCH_UP.max(loading.elapsed()).min(MAX_CATCH_UP);
    let mut running = false;
    // Set when the switch may begin while it is still behind: said in its status.
    let mut behind = None;
    let mut rounds_bytes = 0u64;
    // Catching up: running (so the switch may begin) once caught up with every
    // predecessor (no round waiting) or losing ground on it, or after `catch_up`. No
    // envelope is stored before: the switch begins once every successor runs.
    while !running {
        let mut progressed = false;
        for f in &mut follows {
            // Still behind after [`JUDGE_AFTER`], the next rounds are asked for side by
            // side: one at a time, each an exchange with the predecessor's worker, a
            // successor fell behind rounds of 2 Ki slots at 1 GB (10 s of catch-up left
            // 62 MB for the switch, a stall of 707 ms). Before, one at a time: in one
            // run each, short catch-ups (10 and 100 MB) asking for 8 at once from the
            // start held the stream longer (p99 during the upgrade 7-27 ms, not 5-8).
            // After a large pre-copy ([`DEEP_FROM`]) from the start. Only while rounds
            // are known to wait ([`Pace::deep`]).
            let deep = started.elapsed() >= JUDGE_AFTER || copied >= DEEP_FROM;
            let depth = if f.pace.deep(deep) {
                PREFETCH as u64
            } else {
                1
            };
            let mut ahead = Ahead::default();
            let (mut next, last) = (f.pace.applied + 1, f.pace.applied + ROUNDS_PER_PASS);
            let mut drained = false;
            let pass = Instant::now();
            while f.pace.applied < last {
                // Past `PASS_FOR` no round is asked for; those asked for are applied
                // (not fetched again next pass), then the pass ends as at its limit.
                let asking = pass.elapsed() < PASS_FOR;
                while asking && next <= last && next < f.pace.applied + 1 + depth {
                    ahead
                        .0
                        .push_back(fetch_round(ckpt, f.piece, base, next, Duration::ZERO));
                    next += 1;
                }
                let fetched = match ahead.0.pop_front() {
                    Some(task) => task.await.map_err(|e| e.to_string()).and_then(|r| r),
                    // Rounds may be waiting: not drained.
                    None if !asking => break,
                    None => Err("nothing fetched".to_string()),
                };
                match fetched {
                    Ok(l) => {
                        rounds_bytes += apply_round(kernel, &l.bytes, base, f, groups).await?;
                        progressed = true;
                    }
                    Err(_) => {
                        drained = true;
                        break;
                    }
                }
            }
            f.pace.passed(drained);
        }
        let (since, now_ms) = (started.elapsed(), unix_ms());
        for f in &mut follows {
            f.pace.judge(since, now_ms);
        }
        let paces: Vec<&Pace> = follows.iter().map(|f| &f.pace).collect();
        let ready = readiness(&paces, since, catch_up);
        if !progressed && ready.is_none() {
            // Nothing new: wait for the next round rather than ask again at once.
            tokio::time::sleep(ROUND_EVERY / 4).await;
        }
        if let Some(ready) = ready {
            running = true;
            behind = ready.behind();
            if let Some(why) = behind {
                // Before it reports running: the master's operation names it with the
                // report that lets the switch begin.
                let _ = status.behind.set(why);
            }
            // Ready: the switch may begin. Records that reach it meanwhile wait in its
            // queues.
            status.set(PeRunState::Running);
            match behind {
                None => {
                    tracing::info!(pe = %ckpt.pe, rounds_bytes, "caught up; waiting for the switch")
                }
                Some(why) => {
                    tracing::warn!(pe = %ckpt.pe, rounds_bytes, %why, "still behind its predecessors; what it has not applied moves at the switch");
                    status.note(format!(
                        "pre-copied, still behind its predecessors ({why}): what it has not applied moves at the switch"
                    ));
                }
            }
        }
    }
    let deadline = tokio::time::Instant::from_std(started + WAIT);
    match until_switch(ckpt, kernel, &mut follows, (base, groups), deadline).await? {
        Ok(bytes) => rounds_bytes += bytes,
        Err(i) => {
            let f = follows[i].piece.pe.as_str();
            tracing::error!(pe = %ckpt.pe, from = %f, "no hand-off from a predecessor");
            status
                .restore_failed
                .store(ckpt.pieces[0].checkpoint_id, Ordering::Release);
            status.fail(format!(
                "hand-off of {f}: nothing after {} s",
                WAIT.as_secs()
            ));
            return Ok(Err(Stopped::Failed));
        }
    }
    // The switch: the rounds each predecessor shipped before it, then its delta.
    let switched = Instant::now();
    let mut at_barrier = 0u64;
    let mut deltas = Vec::with_capacity(follows.len());
    for f in &follows {
        let bytes = f.at_barrier.as_ref().map(|b| &b[..]).unwrap_or_default();
        let d = open(bytes)
            .map_err(GiveUp)?
            .ok_or_else(|| GiveUp(format!("{} had no delta", f.piece.pe)))?;
        if d.base != base {
            return Err(GiveUp(format!(
                "{}'s delta is against checkpoint {}, not {base}",
                f.piece.pe, d.base
            )));
        }
        deltas.push((f, d.after));
    }
    for (f, after) in &deltas {
        let mut applied = f.pace.applied;
        // Fetched up to PREFETCH ahead, applied in order.
        let mut ahead = Ahead::default();
        let mut next = applied + 1;
        while applied < *after {
            while next <= *after && ahead.0.len() < PREFETCH {
                ahead.0.push_back(fetch_round(
                    ckpt,
                    f.piece,
                    base,
                    next,
                    Duration::from_secs(10),
                ));
                next += 1;
            }
            let fetched = match ahead.0.pop_front() {
                Some(task) => task.await.map_err(|e| e.to_string()).and_then(|r| r),
                None => Err("nothing fetched".to_string()),
            };
            let l = fetched
                .map_err(|e| GiveUp(format!("round {} of {}: {e}", applied + 1, f.piece.pe)))?;
            let mut at = Follow {
                piece: f.piece,
                pace: Pace {
                    applied,
                    ..Pace::default()
                },
                at_barrier: None,
            };
            at_barrier += apply_round(kernel, &l.bytes, base, &mut at, groups).await?;
            applied = at.pace.applied;
        }
    }
    let rounds_ms = switched.elapsed().as_millis() as u64;
    let states: Vec<Vec<u8>> = follows
        .iter()
        .filter_map(|f| {
            open(f.at_barrier.as_deref()?)
                .ok()
                .flatten()
                .map(|d| d.state.to_vec())
        })
        .collect();
    at_barrier += states.iter().map(|s| s.len() as u64).sum::<u64>();
    kernel
        .apply_deltas(states, groups)
        .await
        .map_err(|e| GiveUp(e.to_string()))?;
    status.barrier_bytes.store(at_barrier, Ordering::Relaxed);
    // Times from the last envelope in: the rounds left, then the deltas applied.
    let (rounds_ms, taken_ms) = (rounds_ms, switched.elapsed().as_millis() as u64);
    tracing::info!(pe = %ckpt.pe, precopied = copied, rounds_bytes, at_barrier, rounds_ms, taken_ms, "state taken over");
    status.note(format!(
        "state taken over: {copied} bytes pre-copied from checkpoint {base}, {rounds_bytes} in rounds, {at_barrier} at barrier {}{}",
        ckpt.pieces[0].checkpoint_id,
        behind.map_or(String::new(), |why| format!(" (ready while still behind: {why})"))
    ));
    Ok(Ok(true))
}

/// What a successor waiting for the switch got from predecessor `.0` (its index).
enum Got {
    /// Its envelope (an error: none before the deadline).
    Envelope(usize, Result<Loaded, String>),
    /// Its round `.1`.
    Round(usize, u64, Result<Loaded, String>),
}

/// Waits for every predecessor's envelope, following their rounds meanwhile; the
/// bytes of rounds applied, or `Err(i)`: predecessor `i` stored no envelope by
/// `deadline`.
///
/// Each predecessor's envelope and its next round are asked for at once, each woken
/// as soon as it is stored ([`crate::checkpoint::store::SnapshotStore::wait_for`]).
/// The round a predecessor ships just before the switch is then usually applied by
/// the time its envelope is in. (Until 2026-12-06 a successor waited up to 10 ms for
/// each envelope in turn and then asked for the rounds: at 10 MB of state, the round
/// shipped in the last milliseconds before the barrier was fetched after the
/// envelope, one more exchange with the predecessor's worker, 4-6 ms, while the
/// stream waited.) Several rounds are asked for at once while a predecessor has more
/// to ship, so a successor still behind keeps gaining.
async fn until_switch(
    ckpt: &Ckpt,
    kernel: &mut Kernel,
    follows: &mut [Follow<'_>],
    (base, groups): (u64, weir_common::keygroup::KeyGroupRange),
    deadline: tokio::time::Instant,
) -> Result<Result<u64, usize>, GiveUp> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Dropped on return: what is still being fetched is aborted.
    let mut fetches = tokio::task::JoinSet::new();
    let fetch = |fetches: &mut tokio::task::JoinSet<()>,
                 (i, piece): (usize, &pb::RestorePiece),
                 round: Option<u64>| {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let part = round.map_or(Part::Envelope, Part::Round);
        let (load, tx) = (load_part(ckpt, piece, base, part, wait), tx.clone());
        fetches.spawn(async move {
            let got = load.await;
            let _ = tx.send(match round {
                Some(id) => Got::Round(i, id, got),
                None => Got::Envelope(i, got),
            });
        });
    };
    // Rounds left before a predecessor's envelope, once it is in.
    let left = |f: &Follow<'_>| {
        f.at_barrier.as_deref().map(|b| match open(b) {
            Ok(Some(d)) => d.after.saturating_sub(f.pace.applied),
            // Given up on at the switch.
            _ => 0,
        })
    };
    // Rounds asked for ahead of the last applied: several while a predecessor has
    // more to ship, else two (each waiting fetch is woken by every file stored).
    let depth = |f: &Follow<'_>| {
        if f.pace.more || left(f).is_some_and(|n| n > 0) {
            PREFETCH as u64
        } else {
            2
        }
    };
    // The last round asked for, and those fetched out of order, per predecessor.
    let mut asked: Vec<u64> = follows.iter().map(|f| f.pace.applied).collect();
    let mut early: Vec<std::collections::BTreeMap<u64, bytes::Bytes>> =
        vec![Default::default(); follows.len()];
    for (i, f) in follows.iter().enumerate() {
        fetch(&mut fetches, (i, f.piece), None);
    }
    let mut bytes = 0;
    loop {
        for (i, f) in follows.iter().enumerate() {
            while asked[i] < f.pace.applied + depth(f) {
                asked[i] += 1;
                fetch(&mut fetches, (i, f.piece), Some(asked[i]));
            }
        }
        // The rounds left are being fetched, or there are more than are fetched at
        // once after the switch.
        if follows
            .iter()
            .all(|f| left(f).is_some_and(|n| n == 0 || n > PREFETCH as u64))
        {
            return Ok(Ok(bytes));
        }
        match rx.recv().await {
            Some(Got::Envelope(i, Ok(l))) => follows[i].at_barrier = Some(l.bytes),
            Some(Got::Envelope(i, Err(_))) => return Ok(Err(i)),
            Some(Got::Round(i, id, Ok(l))) => {
                early[i].insert(id, l.bytes);
                while let Some(b) = early[i].remove(&(follows[i].pace.applied + 1)) {
                    bytes += apply_round(kernel, &b, base, &mut follows[i], groups).await?;
                }
            }
            // Not there by the deadline: the envelope's wait ends then too.
            Some(Got::Round(..)) => {}
            None => return Err(GiveUp("hand-off fetches ended".into())),
        }
    }
}

/// What a successor fetches of one predecessor's hand-off.
#[derive(Clone, Copy, Debug)]
enum Part {
    /// Round `.0` against the pre-copy's checkpoint.
    Round(u64),
    /// The envelope it stored at the switch barrier.
    Envelope,
}

/// Loads `part` of `piece`'s predecessor (rounds against `base`), waiting up to `wait`
/// for it to be stored: a future that owns what it needs, to be spawned.
fn load_part(
    ckpt: &Ckpt,
    piece: &pb::RestorePiece,
    base: u64,
    part: Part,
    wait: Duration,
) -> impl std::future::Future<Output = Result<Loaded, String>> + Send + 'static {
    let (env, app, from) = (ckpt.env.clone(), ckpt.app.clone(), piece.locations.clone());
    let (name, id) = match part {
        Part::Round(id) => (round_name(&piece.pe, base), id),
        Part::Envelope => (envelope_name(&piece.pe), piece.checkpoint_id),
    };
    async move { env.load_piece(&app, &name, id, &from, wait).await }
}

/// Fetches round `id` of `piece`'s predecessor against `base`, waiting up to `wait`
/// for it to be stored.
fn fetch_round(
    ckpt: &Ckpt,
    piece: &pb::RestorePiece,
    base: u64,
    id: u64,
    wait: Duration,
) -> tokio::task::JoinHandle<Result<Loaded, String>> {
    tokio::spawn(load_part(ckpt, piece, base, Part::Round(id), wait))
}

/// Round fetches under way, in order; dropped (on an error), they are aborted.
#[derive(Default)]
struct Ahead(std::collections::VecDeque<tokio::task::JoinHandle<Result<Loaded, String>>>);

impl Drop for Ahead {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Applies round `f.pace.applied + 1` of `f`'s predecessor; returns its size.
async fn apply_round(
    kernel: &mut Kernel,
    bytes: &[u8],
    base: u64,
    f: &mut Follow<'_>,
    groups: weir_common::keygroup::KeyGroupRange,
) -> Result<u64, GiveUp> {
    match open(bytes).map_err(GiveUp)? {
        Some(d) if d.base == base && d.after == f.pace.applied => {
            kernel
                .apply_round(d.state.to_vec(), groups)
                .await
                .map_err(|e| GiveUp(e.to_string()))?;
            f.pace.applied += 1;
            f.pace.more = d.more;
            f.pace.shipped_ms = d.shipped_ms;
            Ok(bytes.len() as u64)
        }
        other => Err(GiveUp(format!(
            "round {} of {} is not the next against checkpoint {base}: {:?}",
            f.pace.applied + 1,
            f.piece.pe,
            other.map(|d| (d.base, d.after))
        ))),
    }
}

/// Stores a drained PE's envelope under [`envelope_name`], on this worker only: a
/// successor fetches it from here, and if this worker is lost the upgrade rolls back
/// anyway.
pub(crate) async fn store_envelope(
    env: &CheckpointEnv,
    app: &str,
    pe: &str,
    id: u64,
    bytes: Vec<u8>,
) -> Result<(), String> {
    env.put_local(app, &envelope_name(pe), id, bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_read_back_and_garbage_is_an_error() {
        assert_eq!(open(&envelope(None)), Ok(None));
        for (more, shipped_ms) in [false, true]
            .into_iter()
            .flat_map(|m| [None, Some(1_796_645_000_123)].map(|s| (m, s)))
        {
            let d = || Delta {
                base: 7,
                after: 2,
                more,
                shipped_ms,
                state: &[1, 2, 3],
            };
            let e = envelope(Some(d()));
            assert_eq!(open(&e), Ok(Some(d())));
            // The buffer reserved holds the header: a round is not copied to grow it
            // (reserving 20 bytes, a timed one grew to 46).
            assert!(e.len() <= HEADER + 3, "{} header bytes", e.len() - 3);
            assert_eq!(e.capacity(), HEADER + 3);
        }
        // What a worker before 2026-12-07 wrote: no shipped time.
        let old = b"WH\x01\x02\x07\0\0\0\0\0\0\0\x02\0\0\0\0\0\0\0\x09";
        let d = open(old).unwrap().unwrap();
        assert_eq!(
            (d.base, d.after, d.more, d.shipped_ms, d.state),
            (7, 2, true, None, &[9][..])
        );
        for bad in [
            &b""[..],
            b"WH",
            b"WH\x01",
            b"WH\x02\x00",
            b"XX\x01\x00",
            b"WH\x01\x01\x07\0\0\0\0\0\0\0",
            // A shipped time cut short.
            b"WH\x01\x03\x07\0\0\0\0\0\0\0\x02\0\0\0\0\0\0\0\x01\0",
            b"WH\x01\x05",
        ] {
            assert!(open(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_successor_gains_only_by_applying_more_rounds_than_could_be_shipped() {
        // 16 rounds in 4 round intervals: at most 5 shipped meanwhile.
        assert!(gaining(16, ROUND_EVERY * 4));
        // 16 in 20: up to 21 shipped, it may be losing ground.
        assert!(!gaining(16, ROUND_EVERY * 20));
        assert!(!gaining(0, Duration::ZERO));
    }

    #[test]
    fn a_successor_is_losing_only_when_its_whole_catch_up_did_not_gain() {
        // A slow start is not judged.
        assert!(!losing(16, Duration::from_millis(400)));
        assert!(!losing(0, Duration::from_millis(900)));
        // In 2 s at most 401 rounds are shipped (one per 5 ms, and one more): 500
        // applied is gaining, whatever one pass took; 300 is not.
        assert_eq!(ROUND_EVERY, Duration::from_millis(5));
        assert!(!losing(500, Duration::from_secs(2)));
        assert!(losing(300, Duration::from_secs(2)));
    }

    #[test]
    fn a_successor_is_caught_up_only_when_no_predecessor_has_rounds_to_come() {
        let early = Duration::from_millis(100);
        let after_pass = |more, drained| {
            let mut p = Pace {
                applied: 3,
                more,
                ..Pace::default()
            };
            p.passed(drained);
            p
        };
        let judged = |mut p: Pace, since| {
            p.judge(since, 0);
            p
        };
        let done = after_pass(false, true);
        assert!(caught_up([&done, &done].map(|p| judged(*p, early)).iter()));
        // None waiting, but its last round said more were to come.
        let more = after_pass(true, true);
        assert!(!caught_up([&done, &judged(more, early)]));
        // The pass stopped at its limit, rounds may be waiting.
        let limit = after_pass(false, false);
        assert!(!caught_up([&judged(limit, early), &done]));
        // Losing ground on it after a whole second: the switch may begin anyway.
        let late = Duration::from_secs(2);
        assert!(caught_up([&judged(more, late), &judged(limit, late)]));
        // Gaining on it: keep catching up.
        let gaining = Pace {
            applied: 500,
            ..more
        };
        assert!(!caught_up([&judged(gaining, late)]));
    }

    #[test]
    fn a_successor_gains_while_the_state_it_applied_gets_younger() {
        let t = |ms| Duration::from_millis(ms);
        let at = |at, shipped_ms| Reading { at, shipped_ms };
        let window = |p: &Pace| match p.judgement {
            Judgement::Judging { window, .. } => Some(window),
            Judgement::Unread | Judgement::Losing => None,
        };
        // Rounds that say when they were shipped: 3 s behind when the catch-up began.
        let mut p = Pace {
            applied: 1,
            more: true,
            waiting: true,
            shipped_ms: Some(10_000),
            ..Pace::default()
        };
        p.judge(t(20), 13_000);
        assert_eq!(window(&p), Some(at(t(20), 10_000)));
        // A second on, few rounds applied (by the bound on what could be shipped it
        // would be losing), but they span 2.2 s: the state is 1.2 s younger (1.8 s
        // old), gaining, judged afresh.
        p.applied = 60;
        p.shipped_ms = Some(12_200);
        p.judge(t(1_020), 14_000);
        assert!(!p.is_losing());
        assert!(losing(p.applied, t(1_020)), "the old bound says losing");
        assert_eq!(window(&p), Some(at(t(1_020), 12_200)));
        // 1.8 s left at 1.2 s a second: caught up 1.5 s on, at 2.52 s. Its catch-up
        // may run past a 2 s limit until then, not after; also beside a predecessor
        // judged losing (whose rounds move at the switch anyway).
        assert_eq!(p.due(), Some(t(2_520)));
        assert_eq!(readiness(&[&p], t(2_200), t(2_000)), None);
        assert_eq!(readiness(&[&p], t(2_600), t(2_000)), Some(Ready::OutOfTime));
        let lost = Pace {
            waiting: true,
            judgement: Judgement::Losing,
            ..Pace::default()
        };
        assert_eq!(readiness(&[&lost, &p], t(2_200), t(2_000)), None);
        // Nor when the reckoning goes past MAX_GAINING: gaining 100 ms a second, 20 s
        // behind.
        let mut slow = Pace {
            judgement: Judgement::Judging {
                window: at(t(0), 11_100),
                prior: None,
                due: None,
            },
            ..p
        };
        slow.judge(t(1_000), 12_200 + 20_000);
        assert!(!slow.is_losing());
        assert_eq!(slow.due(), None);
        assert_eq!(
            readiness(&[&slow], t(2_100), t(2_000)),
            Some(Ready::OutOfTime)
        );
        // The verdict reads only differences: the successor's wall clock stepped an
        // hour on changes nothing but the reckoning (the state now reads an hour old).
        let mut stepped = Pace {
            shipped_ms: Some(10_000),
            judgement: Judgement::Unread,
            ..p
        };
        stepped.judge(t(20), 13_000);
        stepped.shipped_ms = Some(12_200);
        stepped.judge(t(1_020), 14_000 + 3_600_000);
        assert!(!stepped.is_losing());
        assert_eq!(stepped.due(), None);
        // Half a second on: not judged before a whole second.
        p.shipped_ms = Some(12_600);
        p.judge(t(1_520), 14_500);
        assert_eq!(window(&p), Some(at(t(1_020), 12_200)));
        // A slow second (0.8 s of rounds in 1.01 s) after one that gained enough for
        // both: not losing, judged afresh, nothing reckoned (the limit no longer
        // stretches).
        p.shipped_ms = Some(13_000);
        p.judge(t(2_030), 15_010);
        assert!(!p.is_losing());
        assert_eq!(p.due(), None);
        assert_eq!(readiness(&[&p], t(2_100), t(2_000)), Some(Ready::OutOfTime));
        // A second slow second: losing, and it stays so.
        p.shipped_ms = Some(13_500);
        p.judge(t(3_040), 16_020);
        assert!(p.is_losing());
        assert!(caught_up([&p]));
        p.shipped_ms = Some(16_000);
        p.judge(t(4_100), 17_080);
        assert!(p.is_losing());

        // An offset between the two clocks cancels in the verdict: the predecessor's
        // an hour ahead of the successor's.
        let hour = 3_600_000;
        let mut q = Pace {
            applied: 1,
            waiting: true,
            shipped_ms: Some(hour + 5_000),
            ..Pace::default()
        };
        q.judge(t(0), 8_000);
        q.shipped_ms = Some(hour + 6_100);
        q.judge(t(1_000), 9_000);
        assert!(!q.is_losing(), "1.1 s of rounds in 1 s: gaining by 100 ms");
        // Its state reads younger than new: due at once, no later than without the
        // reckoning.
        assert_eq!(q.due(), Some(t(1_000)));
        q.shipped_ms = Some(hour + 7_150);
        q.judge(t(2_000), 10_000);
        assert!(
            q.is_losing(),
            "then 50 ms gained, 150 ms in two seconds: under GAIN"
        );

        // Caught up (nothing waiting or announced): no judgement runs, and the next
        // one starts afresh when it falls behind again.
        let mut r = Pace {
            applied: 5,
            shipped_ms: Some(1_000),
            ..Pace::default()
        };
        r.judge(t(0), 1_010);
        assert_eq!(window(&r), None);
        r.more = true;
        r.judge(t(1_500), 2_000);
        assert_eq!(window(&r), Some(at(t(1_500), 1_000)));
        assert!(!r.is_losing());
    }

    #[test]
    fn a_successor_says_why_it_lets_the_switch_begin() {
        let after_pass = |applied, more, drained| {
            let mut p = Pace {
                applied,
                more,
                ..Pace::default()
            };
            p.passed(drained);
            p
        };
        let (done, more) = (after_pass(3, false, true), after_pass(3, true, true));
        let (early, limit) = (Duration::from_millis(100), Duration::from_secs(2));
        // Each pace judged at `since` (rounds without a shipped time: by the bound).
        let ready = |paces: &[Pace], since| {
            let judged: Vec<Pace> = paces
                .iter()
                .map(|p| {
                    let mut p = *p;
                    p.judge(since, 0);
                    p
                })
                .collect();
            readiness(&judged.iter().collect::<Vec<_>>(), since, limit)
        };
        let ms = Duration::from_millis;
        assert_eq!(ready(&[done, done], early), Some(Ready::CaughtUp));
        // Behind one of them and gaining: keep catching up until the limit.
        let gaining = after_pass(500, true, true);
        assert_eq!(ready(&[done, more], early), None);
        assert_eq!(ready(&[done, gaining], ms(1_500)), None);
        assert_eq!(ready(&[done, gaining], ms(2_001)), Some(Ready::OutOfTime));
        // At a predecessor's head that announces more after a second: now, whatever
        // the limit; its backlog, not the successor, is behind.
        assert_eq!(ready(&[done, more], ms(1_500)), Some(Ready::AtHead));
        // With its rounds waiting and losing ground on them: now too.
        let waiting = after_pass(3, true, false);
        assert_eq!(ready(&[done, waiting], ms(1_500)), Some(Ready::Losing));
        assert_eq!(ready(&[more, waiting], ms(1_500)), Some(Ready::Losing));
        assert_eq!(Ready::CaughtUp.behind(), None);
        assert!(Ready::AtHead.behind().is_some_and(|w| w.contains("head")));
        assert!(Ready::Losing.behind().is_some_and(|w| w.contains("losing")));
    }

    #[test]
    fn rounds_are_asked_for_eight_at_once_only_while_some_are_known_to_wait() {
        // Before the first pass they are presumed to (a pre-copy's pile up).
        let start = Pace {
            waiting: true,
            ..Pace::default()
        };
        assert!(start.deep(true));
        // Never before the catch-up may.
        assert!(!start.deep(false));
        // A pass that stopped at its limit left some.
        let mut p = start;
        p.passed(false);
        assert!(p.deep(true));
        // At the head of a predecessor that says more are to come: behind, but one at
        // a time (the next is at most one round interval away).
        p.more = true;
        p.passed(true);
        assert!(p.behind() && !p.deep(true));
    }

    #[test]
    fn stored_names_cannot_be_pe_ids_or_each_other() {
        assert_eq!(envelope_name("win@0badf00d#1"), "win@0badf00d#1+handoff");
        assert_eq!(round_name("win@0badf00d#1", 12), "win@0badf00d#1+round12");
        // The store's garbage collection keeps a series with its base checkpoint.
        assert_eq!(
            crate::checkpoint::store::series_base(&round_name("win@0badf00d#1", 12)),
            Some(12)
        );
        // Fetched hand-offs are neither kept nor warned about while missing.
        use crate::checkpoint::store::is_handoff;
        assert!(is_handoff(&round_name("win@0badf00d#1", 12)));
        assert!(is_handoff(&envelope_name("win@0badf00d#1")));
        assert!(!is_handoff("win@0badf00d#1"));
    }
}
