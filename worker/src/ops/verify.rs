//! `sink.verify`: accounts for every record by its origin `(source, seq)`.
//!
//! Per source, a bitset of the seqs seen tells duplicates apart exactly at about one bit
//! per record. The bitset is kept in chunks of 65,536 seqs so that a stray huge seq costs
//! one chunk instead of a bitset reaching up to it.

#[cfg(test)]
mod tests;

use super::codec::{Dec, Enc};
use super::StateError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use weir_common::record::Batch;

const KIND: u8 = b'V';
const CHUNK_WORDS: usize = 1024;
const CHUNK_BITS: u64 = CHUNK_WORDS as u64 * 64;

/// What one source delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceReport {
    /// Source ordinal.
    pub source: u32,
    /// Distinct seqs received.
    pub distinct: u64,
    /// Records received again after their seq had been seen.
    pub duplicates: u64,
    /// The largest seq received.
    pub max_seq: Option<u64>,
    /// Seqs below `max_seq` never received: loss, when nothing upstream filters.
    pub missing_below_max: u64,
    /// Seqs never received at or below the highest seq seen a second or more ago
    /// (records still in flight on another channel do not count).
    pub missing_settled: u64,
}

/// What a verify sink received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Records received, duplicates included.
    pub records: u64,
    /// Distinct `(source, seq)` pairs received.
    pub distinct: u64,
    /// Records whose `(source, seq)` had already been received.
    pub duplicates: u64,
    /// Distinct records expected, if configured.
    pub expected: Option<u64>,
    /// Whether `distinct` equals `expected` (false when nothing is expected).
    pub complete: bool,
    /// Per source, by source ordinal.
    pub sources: Vec<SourceReport>,
}

/// The seqs seen from one source.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// Chunk index -> `CHUNK_WORDS` words of bits.
    chunks: BTreeMap<u64, Vec<u64>>,
    distinct: u64,
    duplicates: u64,
}

impl Seen {
    fn insert(&mut self, seq: u64) {
        let words = self
            .chunks
            .entry(seq / CHUNK_BITS)
            .or_insert_with(|| vec![0; CHUNK_WORDS]);
        let bit = seq % CHUNK_BITS;
        let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
        if words[word] & mask == 0 {
            words[word] |= mask;
            self.distinct += 1;
        } else {
            self.duplicates += 1;
        }
    }

    /// Seqs in `0..=mark` never received.
    fn missing_upto(&self, mark: u64) -> u64 {
        let mut ones = 0u64;
        for (index, words) in self.chunks.range(..=mark / CHUNK_BITS) {
            let base = index * CHUNK_BITS;
            if base + CHUNK_BITS - 1 <= mark {
                ones += words.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
            } else {
                let bits = mark - base + 1;
                let (full, rest) = ((bits / 64) as usize, bits % 64);
                ones += words[..full]
                    .iter()
                    .map(|w| u64::from(w.count_ones()))
                    .sum::<u64>();
                if rest > 0 {
                    ones += u64::from((words[full] & ((1u64 << rest) - 1)).count_ones());
                }
            }
        }
        (mark + 1).saturating_sub(ones)
    }

    fn max_seq(&self) -> Option<u64> {
        let (index, words) = self
            .chunks
            .iter()
            .rev()
            .find(|(_, w)| w.iter().any(|x| *x != 0))?;
        let (i, w) = words.iter().enumerate().rev().find(|(_, x)| **x != 0)?;
        Some(index * CHUNK_BITS + i as u64 * 64 + u64::from(63 - w.leading_zeros()))
    }

    /// ORs `other` in; seqs present in both were received twice.
    fn merge(&mut self, other: Seen) {
        self.duplicates += other.duplicates;
        for (index, theirs) in other.chunks {
            let mine = self
                .chunks
                .entry(index)
                .or_insert_with(|| vec![0; CHUNK_WORDS]);
            for (m, t) in mine.iter_mut().zip(&theirs) {
                let both = u64::from((*m & t).count_ones());
                self.duplicates += both;
                self.distinct += u64::from(t.count_ones()) - both;
                *m |= t;
            }
        }
    }
}

/// A `sink.verify` PE.
#[derive(Clone, Debug, Default)]
pub struct Verify {
    expect: Option<u64>,
    sources: BTreeMap<u32, Seen>,
    /// Per source, the highest seq seen at the last two marks (a second apart).
    marks: BTreeMap<u32, (Option<u64>, Option<u64>)>,
    marked_at: Option<std::time::Instant>,
}

/// How far apart the marks behind `missing_settled` are.
const MARK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Verify {
    /// A verifier expecting `expect` distinct records in total, if given.
    pub fn new(expect: Option<u64>) -> Self {
        Self {
            expect,
            sources: BTreeMap::new(),
            marks: BTreeMap::new(),
            marked_at: None,
        }
    }

    /// Records the origin of every record of `batch`.
    pub fn apply(&mut self, batch: &Batch) {
        for r in batch.iter() {
            // A lookup in a map of a few sources costs little next to parsing the record.
            self.sources.entry(r.source).or_default().insert(r.seq);
        }
        let now = std::time::Instant::now();
        if self
            .marked_at
            .is_none_or(|t| now.duration_since(t) >= MARK_EVERY)
        {
            self.marked_at = Some(now);
            for (source, s) in &self.sources {
                let m = self.marks.entry(*source).or_default();
                *m = (m.1, s.max_seq());
            }
        }
    }

    /// What was received so far.
    pub fn report(&self) -> VerifyReport {
        let sources: Vec<SourceReport> = self
            .sources
            .iter()
            .map(|(source, s)| {
                let max_seq = s.max_seq();
                SourceReport {
                    source: *source,
                    distinct: s.distinct,
                    duplicates: s.duplicates,
                    max_seq,
                    missing_below_max: max_seq
                        .map_or(0, |m| m.saturating_sub(s.distinct.saturating_sub(1))),
                    missing_settled: self
                        .marks
                        .get(source)
                        .and_then(|m| m.0)
                        .map_or(0, |mark| s.missing_upto(mark)),
                }
            })
            .collect();
        let distinct = sources.iter().map(|s| s.distinct).sum();
        let duplicates = sources.iter().map(|s| s.duplicates).sum();
        VerifyReport {
            records: distinct + duplicates,
            distinct,
            duplicates,
            expected: self.expect,
            complete: self.expect == Some(distinct),
            sources,
        }
    }

    /// Bytes held by the bitsets (what the sink costs per record received).
    pub fn state_bytes(&self) -> usize {
        self.sources
            .values()
            .map(|s| s.chunks.len() * (CHUNK_WORDS * 8 + 48) + 64)
            .sum()
    }

    /// The state, for checkpoints and the upgrade hand-off. Layout after the version
    /// byte and kind byte `V`: `u64` sources, per source `u32 source | u64 duplicates |
    /// u64 chunks`, per chunk `u64 index | 1024 x u64 words` (little endian).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut e = Enc::new(KIND);
        e.u64(self.sources.len() as u64);
        for (source, s) in &self.sources {
            e.u32(*source);
            e.u64(s.duplicates);
            e.u64(s.chunks.len() as u64);
            for (index, words) in &s.chunks {
                e.u64(*index);
                words.iter().for_each(|w| e.u64(*w));
            }
        }
        e.0
    }

    /// Merges a snapshot into this state: the seqs seen are united, a seq present on
    /// both sides counts as a duplicate, duplicate counts add. The whole snapshot is
    /// checked first: on error nothing changes. `expect` is configuration, not state.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        let mut d = Dec::new(bytes, KIND, "a verify sink")?;
        let n = d.count(4 + 8 + 8)?;
        let mut parts = Vec::with_capacity(n);
        for _ in 0..n {
            let at = d.at();
            let source = d.u32()?;
            if parts.last().is_some_and(|(s, _)| *s >= source) {
                return Err(StateError::Invalid {
                    what: "sources not in increasing order",
                    at,
                });
            }
            let mut seen = Seen {
                duplicates: d.u64()?,
                ..Seen::default()
            };
            let chunks = d.count(8 + CHUNK_WORDS * 8)?;
            for _ in 0..chunks {
                let at = d.at();
                let index = d.u64()?;
                if index > u64::MAX / CHUNK_BITS
                    || seen
                        .chunks
                        .last_key_value()
                        .is_some_and(|(i, _)| *i >= index)
                {
                    return Err(StateError::Invalid {
                        what: "chunk index out of order or range",
                        at,
                    });
                }
                let words = (0..CHUNK_WORDS)
                    .map(|_| d.u64())
                    .collect::<Result<Vec<_>, _>>()?;
                seen.distinct += words.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
                seen.chunks.insert(index, words);
            }
            parts.push((source, seen));
        }
        d.finish()?;
        for (source, seen) in parts {
            self.sources.entry(source).or_default().merge(seen);
        }
        Ok(())
    }
}
