//! `source.generator`: deterministic records, so tests can account for every one.
//!
//! PE `index` of `parallelism` emits ids `index, index + p, index + 2p, ...` below
//! `count` (all ids when unbounded). Record `seq` at this source is `k` (0, 1, 2, ...),
//! the position in that sequence; the id is derivable from it. Fields: `id`, `value`
//! (`(id * 7919 + seed) % 1000`), `payload` (`payload_bytes` bytes); key
//! `k<id % keys>`; event time `base + id` ms, so windows are reproducible.

use weir_common::record::{Batch, ColumnValues, Columns};
use weir_common::spec::GeneratorParams;

/// Event time of id 0.
pub const BASE_EVENT_TIME_MS: i64 = 1_700_000_000_000;

/// The id a generator PE emits at position `seq`.
pub fn id_at(index: u32, parallelism: u32, seq: u64) -> u64 {
    u64::from(index) + seq * u64::from(parallelism.max(1))
}

/// The `value` field of record `id` (the deterministic number filters are tested on).
pub fn value_of(id: u64, seed: u64) -> i64 {
    ((id.wrapping_mul(7919).wrapping_add(seed)) % 1000) as i64
}

/// One generator PE.
#[derive(Clone, Debug)]
pub struct Generator {
    params: GeneratorParams,
    source: u32,
    index: u32,
    parallelism: u32,
    /// Next position to emit (the state a checkpoint records).
    pub next_seq: u64,
    payload: Vec<u8>,
    /// The key of each key number, written once (when there are not too many).
    keys: Vec<String>,
}

/// Up to this many keys are written once and reused.
const KEY_TABLE: u64 = 1 << 16;

impl Generator {
    /// PE `index` of `parallelism`, emitting as source ordinal `source`.
    pub fn new(params: GeneratorParams, source: u32, index: u32, parallelism: u32) -> Self {
        let payload = vec![b'x'; params.payload_bytes as usize];
        let keys = if params.keys.max(1) <= KEY_TABLE {
            (0..params.keys.max(1)).map(|k| format!("k{k}")).collect()
        } else {
            Vec::new()
        };
        Self {
            keys,
            params,
            source,
            index,
            parallelism,
            next_seq: 0,
            payload,
        }
    }

    /// Records this PE emits in total, if bounded.
    pub fn total(&self) -> Option<u64> {
        let count = self.params.count?;
        let (i, p) = (u64::from(self.index), u64::from(self.parallelism.max(1)));
        Some(if count > i {
            (count - i).div_ceil(p)
        } else {
            0
        })
    }

    /// The next batch of at most `max` records, or `None` when done.
    pub fn next_batch(&mut self, max: usize) -> Option<Batch> {
        let end = match self.total() {
            Some(t) if self.next_seq >= t => return None,
            Some(t) => t.min(self.next_seq + max as u64),
            None => self.next_seq + max as u64,
        };
        // Built column by column: the values of each field side by side.
        let n = (end - self.next_seq) as usize;
        let wall = self.params.wall_clock.then(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        let keys = self.params.keys.max(1);
        let step = u64::from(self.parallelism.max(1));
        let first = id_at(self.index, self.parallelism, self.next_seq);
        let id = |i: usize| first.wrapping_add(step.wrapping_mul(i as u64));
        // Each column collected on its own from a counted range: loops the compiler
        // unrolls, with no capacity check per value.
        let seqs: Vec<u64> = (self.next_seq..end).collect();
        let ids: Vec<i64> = (0..n).map(|i| id(i) as i64).collect();
        let times: Vec<i64> = match wall {
            Some(t) => vec![t; n],
            None => ids
                .iter()
                .map(|&i| BASE_EVENT_TIME_MS.wrapping_add(i))
                .collect(),
        };
        let values: Vec<i64> = (0..n).map(|i| value_of(id(i), self.params.seed)).collect();
        // Key numbers advance with the ids, kept below `keys` by one subtraction (no
        // division per record) and without overflowing near u64::MAX.
        let (mut k, k_step) = (first % keys, step % keys);
        let key_no: Vec<u64> = (0..n)
            .map(|_| {
                let this = k;
                k = if k >= keys - k_step {
                    k - (keys - k_step)
                } else {
                    k + k_step
                };
                this
            })
            .collect();
        let written: Vec<String>;
        let key_of: Vec<&[u8]> = if self.keys.is_empty() {
            // Keys beyond the table are written per record.
            written = key_no.iter().map(|k| format!("k{k}")).collect();
            written.iter().map(String::as_bytes).collect()
        } else {
            key_no
                .iter()
                .map(|&k| self.keys[k as usize].as_bytes())
                .collect()
        };
        let batch = Batch::from_columns(&Columns {
            sources: &vec![self.source; n],
            seqs: &seqs,
            times: &times,
            keys: &key_of,
            fields: &[
                ("id", ColumnValues::I64(&ids)),
                ("value", ColumnValues::I64(&values)),
                ("payload", ColumnValues::SameBytes(&self.payload)),
            ],
        })
        .expect("generator records fit the batch format");
        self.next_seq = end;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::record::{BatchBuilder, Value};

    #[test]
    fn batches_are_what_pushing_each_record_builds() {
        // Column-built batches equal record-built ones, keys from the table or not.
        for keys in [10, KEY_TABLE + 1] {
            let mut p = params(Some(30));
            p.keys = keys;
            let mut g = Generator::new(p, 2, 1, 2);
            let got = g.next_batch(100).unwrap();
            let mut want = BatchBuilder::default();
            for seq in 0..15u64 {
                let id = id_at(1, 2, seq);
                let fields = [
                    ("id", Value::I64(id as i64)),
                    ("value", Value::I64(value_of(id, 0))),
                    ("payload", Value::Bytes(vec![b'x'; 16])),
                ];
                want.push(
                    2,
                    seq,
                    BASE_EVENT_TIME_MS + id as i64,
                    format!("k{}", id % keys).as_bytes(),
                    fields.iter().map(|(n, v)| (*n, v)),
                )
                .unwrap();
            }
            assert_eq!(got, want.finish());
            assert_eq!(
                got.to_bytes(),
                Batch::from_bytes(got.to_bytes()).unwrap().to_bytes()
            );
        }
    }

    fn params(count: Option<u64>) -> GeneratorParams {
        GeneratorParams {
            rate: None,
            count,
            keys: 10,
            payload_bytes: 16,
            seed: 0,
            wall_clock: false,
        }
    }

    #[test]
    fn pes_split_the_ids_exactly() {
        let mut seen = Vec::new();
        for index in 0..3 {
            let mut g = Generator::new(params(Some(100)), index, index, 3);
            while let Some(b) = g.next_batch(7) {
                for r in b.iter() {
                    let id = match r.field("id") {
                        Some(Value::I64(i)) => i as u64,
                        other => panic!("{other:?}"),
                    };
                    assert_eq!(id, id_at(index, 3, r.seq));
                    assert_eq!(r.key, format!("k{}", id % 10).as_bytes());
                    assert_eq!(r.event_time_ms, BASE_EVENT_TIME_MS + id as i64);
                    seen.push(id);
                }
            }
            assert_eq!(g.next_batch(7), None);
        }
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn keys_follow_the_ids_whatever_the_step_and_the_start() {
        // Steps larger than, equal to and smaller than the key count, resumed mid-way.
        for (parallelism, keys) in [(7, 3), (3, 3), (2, 5), (1, 1)] {
            let mut p = params(Some(200));
            p.keys = keys;
            let mut g = Generator::new(p, 0, 1, parallelism);
            g.next_seq = 4;
            while let Some(b) = g.next_batch(9) {
                for r in b.iter() {
                    let id = id_at(1, parallelism, r.seq);
                    assert_eq!(r.key, format!("k{}", id % keys).as_bytes(), "id {id}");
                }
            }
        }
    }

    #[test]
    fn resumes_from_a_recorded_position() {
        let mut a = Generator::new(params(Some(50)), 0, 0, 1);
        let first = a.next_batch(20).unwrap();
        let mut b = Generator::new(params(Some(50)), 0, 0, 1);
        b.next_seq = a.next_seq;
        let rest_a = a.next_batch(100).unwrap();
        let rest_b = b.next_batch(100).unwrap();
        assert_eq!(rest_a, rest_b);
        assert_eq!(first.len() + rest_a.len(), 50);
    }
}
