//! `source.nexmark`: the Nexmark benchmark's persons, auctions and bids.
//!
//! Events are numbered 0, 1, 2, ... over the whole source; event `n` is a person, an
//! auction or a bid by `n % 50` (1:3:46) and is made from the seed and `n` alone
//! ([`events`]). PE `index` of `parallelism` owns the event numbers `index + k *
//! parallelism` and emits those of its table, in order; a record's `seq` is its
//! position among them (0, 1, 2, ...: gap-free, as `sink.verify` expects), and that
//! position is the state a checkpoint records. So the PEs together emit exactly the
//! records one PE would, whatever the parallelism.
//!
//! Fields (every value of a column has the same type, none absent): bids `auction`,
//! `bidder`, `price`, `channel`, `url`, `date_time`, `extra`; auctions `id`,
//! `item_name`, `description`, `initial_bid`, `reserve`, `date_time`, `expires`,
//! `seller`, `category`, `extra`; persons `id`, `name`, `email_address`,
//! `credit_card`, `city`, `state`, `date_time`, `extra`. Ids, prices and times are
//! i64 (times in Unix ms), the rest text. The event time is `date_time`; the key is the
//! auction id (bids, auctions) or the person id (persons), as text.

pub mod events;
mod rng;
#[cfg(test)]
mod tests;

pub use events::{Auction, Bid, Channels, Person};

use weir_common::record::{Batch, ColumnValues, Columns};
use weir_common::spec::{NexmarkParams, NexmarkTable, MAX_NEXMARK_EVENTS};

/// Which of a PE's event numbers are of its table, over one period of the pattern.
///
/// PE `index` of `p` sees event `index + k * p` at its position `k`; the kind depends on
/// that number mod 50, which repeats every `50 / gcd(p, 50)` positions. Listing the
/// offsets of the matching positions within one period turns "the j-th record" into an
/// event number, and "positions below k" into a record count, in constant time.
#[derive(Clone, Debug)]
struct Pattern {
    index: u64,
    parallelism: u64,
    /// Positions per period.
    period: u64,
    /// The offsets, within a period, of positions holding events of the table.
    slots: Vec<u64>,
}

impl Pattern {
    fn new(table: NexmarkTable, index: u32, parallelism: u32) -> Self {
        let (index, parallelism) = (u64::from(index), u64::from(parallelism.max(1)));
        let period =
            events::PROPORTION_DENOMINATOR / gcd(parallelism, events::PROPORTION_DENOMINATOR);
        let slots = (0..period)
            .filter(|k| events::kind_of(index + k * parallelism) == table)
            .collect();
        Self {
            index,
            parallelism,
            period,
            slots,
        }
    }

    /// The event number of this PE's record `seq` (`None` when the PE has no events
    /// of its table, or the number would overflow).
    fn event(&self, seq: u64) -> Option<u64> {
        let per = self.slots.len() as u64;
        let slot = *self
            .slots
            .get(usize::try_from(seq.checked_rem(per)?).ok()?)?;
        let k = (seq / per).checked_mul(self.period)?.checked_add(slot)?;
        k.checked_mul(self.parallelism)?.checked_add(self.index)
    }

    /// Records among the events below `events` (over all PEs).
    fn records_below(&self, events: u64) -> u64 {
        let positions = if events > self.index {
            (events - self.index).div_ceil(self.parallelism)
        } else {
            0
        };
        let rest = positions % self.period;
        (positions / self.period) * self.slots.len() as u64
            + self.slots.iter().filter(|s| **s < rest).count() as u64
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Most records in one batch: far below what the batch format can carry (events are
/// a few hundred bytes), whatever a caller asks for.
const MAX_BATCH: usize = 1 << 16;

/// One `source.nexmark` PE.
#[derive(Clone, Debug)]
pub struct Nexmark {
    params: NexmarkParams,
    source: u32,
    pattern: Pattern,
    /// Records this PE emits in all (unbounded sources stop at `MAX_NEXMARK_EVENTS`).
    total: u64,
    /// Made once, and only for bids.
    channels: Option<Channels>,
    /// Next position to emit (the state a checkpoint records).
    pub next_seq: u64,
}

impl Nexmark {
    /// PE `index` of `parallelism`, emitting as source ordinal `source`.
    pub fn new(params: NexmarkParams, source: u32, index: u32, parallelism: u32) -> Self {
        let pattern = Pattern::new(params.table, index, parallelism);
        let total = pattern.records_below(params.events.unwrap_or(MAX_NEXMARK_EVENTS));
        let channels = (params.table == NexmarkTable::Bid).then(|| Channels::new(params.seed));
        Self {
            params,
            source,
            pattern,
            total,
            channels,
            next_seq: 0,
        }
    }

    /// Records this PE emits in total.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The event number of this PE's record `seq`, if it emits one.
    pub fn event_of(&self, seq: u64) -> Option<u64> {
        (seq < self.total)
            .then(|| self.pattern.event(seq))
            .flatten()
    }

    /// The next batch of at most `max` records, or `None` when done.
    pub fn next_batch(&mut self, max: usize) -> Option<Batch> {
        if self.next_seq >= self.total {
            return None;
        }
        let max = max.clamp(1, MAX_BATCH) as u64;
        let end = self.total.min(self.next_seq.saturating_add(max));
        let seqs: Vec<u64> = (self.next_seq..end).collect();
        // Every seq below `total` has an event (`total` counts them), so none is lost.
        let numbers: Vec<u64> = seqs.iter().filter_map(|s| self.pattern.event(*s)).collect();
        let seqs = &seqs[..numbers.len()];
        let (seed, eps) = (self.params.seed, self.params.events_per_second);
        let sources = vec![self.source; numbers.len()];
        let batch = match (&self.params.table, &self.channels) {
            (NexmarkTable::Bid, Some(channels)) => {
                let bids: Vec<Bid<'_>> = numbers
                    .iter()
                    .map(|n| events::bid(seed, *n, eps, channels))
                    .collect();
                bid_batch(&bids, &sources, seqs)
            }
            (NexmarkTable::Auction, _) => {
                let auctions: Vec<Auction> = numbers
                    .iter()
                    .map(|n| events::auction(seed, *n, eps))
                    .collect();
                auction_batch(&auctions, &sources, seqs)
            }
            _ => {
                let people: Vec<Person> = numbers
                    .iter()
                    .map(|n| events::person(seed, *n, eps))
                    .collect();
                person_batch(&people, &sources, seqs)
            }
        };
        self.next_seq = end;
        Some(batch)
    }
}

/// A column of one field of every event.
fn col<'a, T, U>(events: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    events.iter().map(f).collect()
}

/// Keys as text, and the byte slices the batch takes.
fn keys(ids: &[i64]) -> Vec<String> {
    ids.iter().map(i64::to_string).collect()
}

fn batch(
    sources: &[u32],
    seqs: &[u64],
    times: &[i64],
    keys: &[String],
    fields: &[(&str, ColumnValues<'_>)],
) -> Batch {
    let keys: Vec<&[u8]> = keys.iter().map(String::as_bytes).collect();
    Batch::from_columns(&Columns {
        sources,
        seqs,
        times,
        keys: &keys,
        fields,
    })
    // At most MAX_BATCH events of well under 1 KiB each, keys of at most 20 digits.
    .expect("nexmark records fit the batch format")
}

fn bid_batch(bids: &[Bid<'_>], sources: &[u32], seqs: &[u64]) -> Batch {
    let auction = col(bids, |b| b.auction);
    let times = col(bids, |b| b.date_time);
    batch(
        sources,
        seqs,
        &times,
        &keys(&auction),
        &[
            ("auction", ColumnValues::I64(&auction)),
            ("bidder", ColumnValues::I64(&col(bids, |b| b.bidder))),
            ("price", ColumnValues::I64(&col(bids, |b| b.price))),
            ("channel", ColumnValues::Str(&col(bids, |b| b.channel))),
            ("url", ColumnValues::Str(&col(bids, |b| b.url))),
            ("date_time", ColumnValues::I64(&times)),
            ("extra", ColumnValues::Str(&col(bids, |b| b.extra.as_str()))),
        ],
    )
}

fn auction_batch(auctions: &[Auction], sources: &[u32], seqs: &[u64]) -> Batch {
    let id = col(auctions, |a| a.id);
    let times = col(auctions, |a| a.date_time);
    batch(
        sources,
        seqs,
        &times,
        &keys(&id),
        &[
            ("id", ColumnValues::I64(&id)),
            (
                "item_name",
                ColumnValues::Str(&col(auctions, |a| a.item_name.as_str())),
            ),
            (
                "description",
                ColumnValues::Str(&col(auctions, |a| a.description.as_str())),
            ),
            (
                "initial_bid",
                ColumnValues::I64(&col(auctions, |a| a.initial_bid)),
            ),
            ("reserve", ColumnValues::I64(&col(auctions, |a| a.reserve))),
            ("date_time", ColumnValues::I64(&times)),
            ("expires", ColumnValues::I64(&col(auctions, |a| a.expires))),
            ("seller", ColumnValues::I64(&col(auctions, |a| a.seller))),
            (
                "category",
                ColumnValues::I64(&col(auctions, |a| a.category)),
            ),
            (
                "extra",
                ColumnValues::Str(&col(auctions, |a| a.extra.as_str())),
            ),
        ],
    )
}

fn person_batch(people: &[Person], sources: &[u32], seqs: &[u64]) -> Batch {
    let id = col(people, |p| p.id);
    let times = col(people, |p| p.date_time);
    batch(
        sources,
        seqs,
        &times,
        &keys(&id),
        &[
            ("id", ColumnValues::I64(&id)),
            ("name", ColumnValues::Str(&col(people, |p| p.name.as_str()))),
            (
                "email_address",
                ColumnValues::Str(&col(people, |p| p.email_address.as_str())),
            ),
            (
                "credit_card",
                ColumnValues::Str(&col(people, |p| p.credit_card.as_str())),
            ),
            ("city", ColumnValues::Str(&col(people, |p| p.city.as_str()))),
            (
                "state",
                ColumnValues::Str(&col(people, |p| p.state.as_str())),
            ),
            ("date_time", ColumnValues::I64(&times)),
            (
                "extra",
                ColumnValues::Str(&col(people, |p| p.extra.as_str())),
            ),
        ],
    )
}
