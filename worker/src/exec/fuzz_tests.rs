//! Fuzzing the answers a program sends back (docs/security.md#fuzzing): arbitrary
//! bytes, and valid answers mutated, read as a framed answer frame and as lines
//! answers. The program is the tenant's own code; whatever it writes must end in an
//! answer or a [`Failure`](super::Failure), never a panic, and a framed answer is
//! never allocated beyond the cap. `PROPTEST_CASES` sets the cases (default a few
//! seconds' worth).

use super::{framed, lines};
use proptest::prelude::*;
use tokio::io::BufReader;
use weir_common::record::{Batch, BatchBuilder, Value};

/// JSON's structure characters, where a random byte rarely lands.
const JSON: &[u8] = b"{}[]\",:\n\\";

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

fn input() -> Batch {
    let mut b = BatchBuilder::default();
    for i in 0..3i64 {
        b.push(
            1,
            i as u64,
            i,
            b"k",
            [
                ("page", &Value::Str(format!("/p{i}"))),
                ("n", &Value::I64(i)),
            ],
        )
        .unwrap();
    }
    b.finish()
}

/// Reads `bytes` as one framed answer and as one lines answer to [`input`].
fn read(bytes: &[u8], max: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut r = bytes;
        if let Ok(b) = framed::read_answer(&mut r, max).await {
            let _ = b.iter().map(|r| r.fields().count()).sum::<usize>();
        }
        let mut r = BufReader::new(bytes);
        if let Ok(b) = lines::read_answer(&mut r, &input(), max).await {
            // One answer line per record; `null` or an empty line drops it.
            assert!(b.len() <= input().len());
        }
    });
}

/// Valid answers to [`input`] in both protocols.
fn seeds() -> Vec<Vec<u8>> {
    let mut framed_answer = Vec::new();
    framed::encode(&input(), &mut framed_answer).unwrap();
    let mut lines_answer = Vec::new();
    lines::encode(&input(), &mut lines_answer).unwrap();
    vec![framed_answer, lines_answer]
}

#[test]
fn a_framed_answer_over_the_cap_is_refused_before_it_is_allocated() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut r = &u32::MAX.to_le_bytes()[..];
        let err = framed::read_answer(&mut r, 1 << 20).await.unwrap_err();
        assert!(matches!(err, super::Failure::FrameTooLarge { .. }), "{err}");
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(5000)))]

    #[test]
    fn arbitrary_answers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        read(&bytes, 4096);
    }

    #[test]
    fn mutated_answers_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let seeds = seeds();
        let mut bytes = which.get(&seeds).clone();
        for (at, byte, how) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => { bytes.remove(i); }
                2 => bytes.insert(i, byte),
                _ => bytes.insert(i, JSON[usize::from(byte) % JSON.len()]),
            }
        }
        read(&bytes, 4096);
    }
}
