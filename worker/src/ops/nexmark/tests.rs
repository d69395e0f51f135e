use super::events::*;
use super::*;
use weir_common::record::{BatchBuilder, Value};

fn params(table: NexmarkTable, events: Option<u64>) -> NexmarkParams {
    NexmarkParams {
        table,
        events,
        rate: None,
        seed: 42,
        events_per_second: 10_000,
    }
}

const TABLES: [NexmarkTable; 3] = [
    NexmarkTable::Bid,
    NexmarkTable::Auction,
    NexmarkTable::Person,
];

/// Everything PE `index` of `p` emits, in batches of `batch`.
fn emit(params: &NexmarkParams, index: u32, p: u32, batch: usize) -> Vec<Batch> {
    let mut g = Nexmark::new(params.clone(), index, index, p);
    let mut out = Vec::new();
    while let Some(b) = g.next_batch(batch) {
        out.push(b);
    }
    assert_eq!(g.next_batch(batch), None);
    out
}

/// A record without its origin: what must not depend on the parallelism.
type Content = (i64, Vec<u8>, Vec<(String, Value)>);

fn contents(batches: &[Batch]) -> Vec<Content> {
    batches
        .iter()
        .flat_map(|b| b.iter())
        .map(|r| {
            let fields = r.fields().map(|(n, v)| (n.to_string(), v)).collect();
            (r.event_time_ms, r.key.to_vec(), fields)
        })
        .collect()
}

fn i64_of(fields: &[(String, Value)], name: &str) -> i64 {
    match fields.iter().find(|(n, _)| n == name) {
        Some((_, Value::I64(i))) => *i,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn the_same_seed_gives_the_same_records_whatever_the_parallelism() {
    for table in TABLES {
        let p = params(table, Some(2_345));
        let one = contents(&emit(&p, 0, 1, 100));
        assert!(!one.is_empty());
        // Event times rise with the event numbers, so P=1 is in time order.
        assert!(one.windows(2).all(|w| w[0].0 <= w[1].0));
        for parallelism in [2, 3, 7, 50, 64] {
            let mut all: Vec<Content> = (0..parallelism)
                .flat_map(|i| contents(&emit(&p, i, parallelism, 33)))
                .collect();
            // Values have no order: their debug text stands in for one.
            all.sort_by_cached_key(|c| format!("{c:?}"));
            let mut want = one.clone();
            want.sort_by_cached_key(|c| format!("{c:?}"));
            assert_eq!(all, want, "{table:?} at parallelism {parallelism}");
        }
        // Another seed, other records; the same seed again, the same.
        let mut other = p.clone();
        other.seed = 43;
        assert_ne!(contents(&emit(&other, 0, 1, 100)), one);
        assert_eq!(contents(&emit(&p, 0, 1, 7)), one);
    }
}

#[test]
fn seqs_are_gap_free_per_pe_and_the_pes_split_the_event_numbers() {
    for parallelism in [1u32, 2, 5, 10, 25, 50, 51] {
        let mut numbers = Vec::new();
        for index in 0..parallelism {
            let p = params(NexmarkTable::Bid, Some(1_000));
            let g = Nexmark::new(p.clone(), 0, index, parallelism);
            let seqs: Vec<u64> = emit(&p, index, parallelism, 10)
                .iter()
                .flat_map(|b| b.iter().map(|r| r.seq).collect::<Vec<_>>())
                .collect();
            assert_eq!(seqs, (0..g.total()).collect::<Vec<_>>());
            for s in 0..g.total() {
                let n = g.event_of(s).unwrap();
                assert_eq!(n % u64::from(parallelism), u64::from(index));
                assert_eq!(kind_of(n), NexmarkTable::Bid);
                numbers.push(n);
            }
            assert_eq!(g.event_of(g.total()), None);
        }
        numbers.sort();
        let want: Vec<u64> = (0..1_000)
            .filter(|n| kind_of(*n) == NexmarkTable::Bid)
            .collect();
        assert_eq!(numbers, want, "parallelism {parallelism}");
    }
}

#[test]
fn tables_come_in_the_proportions_1_3_46() {
    let count = |table, events, p: u32| -> u64 {
        (0..p)
            .map(|i| {
                emit(&params(table, Some(events)), i, p, 500)
                    .iter()
                    .map(|b| b.len() as u64)
                    .sum::<u64>()
            })
            .sum()
    };
    for p in [1, 3, 4] {
        assert_eq!(count(NexmarkTable::Person, 5_000, p), 100);
        assert_eq!(count(NexmarkTable::Auction, 5_000, p), 300);
        assert_eq!(count(NexmarkTable::Bid, 5_000, p), 4_600);
        // A partial round: events 5000..5012 are 1 person, 3 auctions, 8 bids.
        assert_eq!(count(NexmarkTable::Person, 5_012, p), 101);
        assert_eq!(count(NexmarkTable::Auction, 5_012, p), 303);
        assert_eq!(count(NexmarkTable::Bid, 5_012, p), 4_608);
    }
    assert_eq!(count(NexmarkTable::Bid, 0, 2), 0);
}

#[test]
fn ids_times_and_keys_follow_the_event_numbers() {
    let eps = 10_000;
    for table in TABLES {
        let p = params(table, Some(10_000));
        let g = Nexmark::new(p.clone(), 0, 0, 1);
        let records = contents(&emit(&p, 0, 1, 256));
        for (seq, (t, key, fields)) in records.iter().enumerate() {
            let n = g.event_of(seq as u64).unwrap();
            // 10,000 events/s: event n happens n / 10 ms after the base.
            assert_eq!(*t, BASE_TIME_MS + (n / 10) as i64);
            assert_eq!(i64_of(fields, "date_time"), *t);
            assert_eq!(timestamp(n, eps), *t);
            let key: i64 = String::from_utf8(key.clone()).unwrap().parse().unwrap();
            match table {
                NexmarkTable::Person => {
                    // One new person per round, numbered from 1000.
                    assert_eq!(i64_of(fields, "id"), 1000 + seq as i64);
                    assert_eq!(key, i64_of(fields, "id"));
                }
                NexmarkTable::Auction => {
                    // Three new auctions per round, numbered from 1000.
                    assert_eq!(i64_of(fields, "id"), 1000 + seq as i64);
                    assert_eq!(key, i64_of(fields, "id"));
                    let seller = i64_of(fields, "seller");
                    let people = last_base0_person_id(n) + FIRST_PERSON_ID;
                    assert!((FIRST_PERSON_ID..=people + ID_LEAD).contains(&seller));
                    assert!((10..15).contains(&i64_of(fields, "category")));
                    assert!(i64_of(fields, "expires") > *t);
                    assert!(i64_of(fields, "reserve") > i64_of(fields, "initial_bid"));
                }
                NexmarkTable::Bid => {
                    let auction = i64_of(fields, "auction");
                    assert_eq!(key, auction);
                    let newest = last_base0_auction_id(n) + FIRST_AUCTION_ID;
                    assert!((FIRST_AUCTION_ID..=newest + ID_LEAD).contains(&auction));
                    let bidder = i64_of(fields, "bidder");
                    let people = last_base0_person_id(n) + FIRST_PERSON_ID;
                    assert!((FIRST_PERSON_ID..=people + ID_LEAD).contains(&bidder));
                }
            }
        }
    }
}

#[test]
fn events_per_second_spaces_the_event_times() {
    assert_eq!(timestamp(0, 1), BASE_TIME_MS);
    assert_eq!(timestamp(3, 1), BASE_TIME_MS + 3_000);
    assert_eq!(timestamp(999, 1_000), BASE_TIME_MS + 999);
    assert_eq!(timestamp(1_999_999, 1_000_000), BASE_TIME_MS + 1_999);
    // Far out it saturates instead of overflowing.
    assert_eq!(timestamp(u64::MAX, 1), i64::MAX);
}

#[test]
fn prices_are_log_uniform_between_1_dollar_and_1_million() {
    let p = params(NexmarkTable::Bid, Some(50_000));
    let records = contents(&emit(&p, 0, 1, 4096));
    let prices: Vec<i64> = records.iter().map(|(_, _, f)| i64_of(f, "price")).collect();
    assert!(prices.iter().all(|p| (100..=100_000_000).contains(p)));
    // Log-uniform over 6 decades: about a sixth of the prices in each.
    for decade in 0..6 {
        let (lo, hi) = (100 * 10i64.pow(decade), 100 * 10i64.pow(decade + 1));
        let share =
            prices.iter().filter(|p| (lo..hi).contains(*p)).count() as f64 / prices.len() as f64;
        assert!((share - 1.0 / 6.0).abs() < 0.02, "decade {decade}: {share}");
    }
}

#[test]
fn about_half_the_bids_go_to_the_hot_auction_and_three_quarters_come_from_hot_bidders() {
    let p = params(NexmarkTable::Bid, Some(100_000));
    let g = Nexmark::new(p.clone(), 0, 0, 1);
    let records = contents(&emit(&p, 0, 1, 4096));
    let (mut hot_auction, mut hot_bidder) = (0usize, 0usize);
    for (seq, (_, _, fields)) in records.iter().enumerate() {
        let n = g.event_of(seq as u64).unwrap();
        let hot = (last_base0_auction_id(n) / HOT_BLOCK) * HOT_BLOCK + FIRST_AUCTION_ID;
        hot_auction += usize::from(i64_of(fields, "auction") == hot);
        let hot = (last_base0_person_id(n) / HOT_BLOCK) * HOT_BLOCK + 1 + FIRST_PERSON_ID;
        hot_bidder += usize::from(i64_of(fields, "bidder") == hot);
    }
    let share = |k: usize| k as f64 / records.len() as f64;
    // 1 - 1/2 hot, plus the random picks that land on the hot id by chance.
    assert!(
        (0.49..0.53).contains(&share(hot_auction)),
        "{}",
        share(hot_auction)
    );
    // 1 - 1/4 hot.
    assert!(
        (0.74..0.77).contains(&share(hot_bidder)),
        "{}",
        share(hot_bidder)
    );
}

#[test]
fn bids_come_through_hot_channels_half_the_time() {
    let p = params(NexmarkTable::Bid, Some(20_000));
    let records = contents(&emit(&p, 0, 1, 4096));
    let text = |f: &[(String, Value)], name: &str| match f.iter().find(|(n, _)| n == name) {
        Some((_, Value::Str(s))) => s.clone(),
        other => panic!("{name}: {other:?}"),
    };
    let hot = records
        .iter()
        .filter(|(_, _, f)| HOT_CHANNELS.contains(&text(f, "channel").as_str()))
        .count() as f64
        / records.len() as f64;
    assert!((0.48..0.52).contains(&hot), "{hot}");
    let channels = Channels::new(p.seed);
    for (_, _, f) in &records {
        let (channel, url) = (text(f, "channel"), text(f, "url"));
        assert!(url.starts_with("https://www.nexmark.com/"), "{url}");
        assert!(url.contains("/item.htm?query=1"), "{url}");
        // A channel always has the same URL.
        if let Some(c) = channel.strip_prefix("channel-") {
            let c: usize = c.parse().unwrap();
            assert!(c < CHANNELS);
            assert_eq!(Some((channel.as_str(), url.as_str())), channels.channel(c));
        }
        // Bids are padded to about 100 bytes: 32 of numbers, 54..=81 of extra.
        assert!((54..=81).contains(&text(f, "extra").len()));
    }
}

#[test]
fn people_look_like_the_reference_ones() {
    let p = params(NexmarkTable::Person, Some(5_000));
    for (_, _, f) in contents(&emit(&p, 0, 1, 4096)) {
        let text = |name: &str| match f.iter().find(|(n, _)| n == name) {
            Some((_, Value::Str(s))) => s.clone(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(text("name").split(' ').count(), 2);
        assert!(text("email_address").ends_with(".com"));
        let card = text("credit_card");
        assert_eq!(card.len(), 19, "{card}");
        assert!(card
            .split(' ')
            .all(|g| g.len() == 4 && g.parse::<u32>().is_ok()));
        assert_eq!(text("state").len(), 2);
        assert!(!text("city").is_empty());
    }
}

#[test]
fn batches_are_what_pushing_each_record_builds() {
    // Column-built batches equal record-built ones: one type per column, no gaps.
    let p = params(NexmarkTable::Bid, Some(500));
    let mut g = Nexmark::new(p.clone(), 3, 1, 2);
    let got = g.next_batch(1000).unwrap();
    let channels = Channels::new(p.seed);
    let mut want = BatchBuilder::default();
    for seq in 0..got.len() as u64 {
        let n = g.event_of(seq).unwrap();
        let b = bid(p.seed, n, p.events_per_second, &channels);
        let fields = [
            ("auction", Value::I64(b.auction)),
            ("bidder", Value::I64(b.bidder)),
            ("price", Value::I64(b.price)),
            ("channel", Value::Str(b.channel.into())),
            ("url", Value::Str(b.url.into())),
            ("date_time", Value::I64(b.date_time)),
            ("extra", Value::Str(b.extra.clone())),
        ];
        want.push(
            3,
            seq,
            b.date_time,
            b.auction.to_string().as_bytes(),
            fields.iter().map(|(n, v)| (*n, v)),
        )
        .unwrap();
    }
    assert_eq!(got, want.finish());
}

#[test]
fn resumes_exactly_from_a_recorded_position() {
    for table in TABLES {
        let p = params(table, Some(3_000));
        let mut a = Nexmark::new(p.clone(), 0, 1, 3);
        let first = a.next_batch(17).unwrap();
        let mut b = Nexmark::new(p.clone(), 0, 1, 3);
        b.next_seq = a.next_seq;
        let (mut rest_a, mut rest_b) = (Vec::new(), Vec::new());
        while let Some(x) = a.next_batch(100) {
            rest_a.push(x);
        }
        while let Some(x) = b.next_batch(64) {
            rest_b.push(x);
        }
        assert_eq!(contents(&rest_a), contents(&rest_b));
        let seqs: Vec<u64> = rest_b
            .iter()
            .flat_map(|x| x.iter().map(|r| r.seq).collect::<Vec<_>>())
            .collect();
        assert_eq!(seqs, (17..a.total()).collect::<Vec<_>>());
        let mut whole = vec![first];
        whole.extend(rest_b);
        assert_eq!(contents(&whole), contents(&emit(&p, 1, 3, 1000)));
    }
}

#[test]
fn a_pe_without_events_of_its_table_ends_at_once() {
    // Parallelism 50: PE 0 sees only event numbers 0, 50, 100, ...: persons.
    let mut g = Nexmark::new(params(NexmarkTable::Bid, None), 0, 0, 50);
    assert_eq!(g.total(), 0);
    assert_eq!(g.next_batch(10), None);
    assert_eq!(g.event_of(0), None);
    let mut g = Nexmark::new(params(NexmarkTable::Person, None), 0, 0, 50);
    let b = g.next_batch(10).unwrap();
    assert_eq!(b.len(), 10);
}

#[test]
fn unbounded_sources_go_on_far_into_the_sequence() {
    let mut g = Nexmark::new(params(NexmarkTable::Auction, None), 0, 2, 3);
    g.next_seq = 1 << 40;
    let b = g.next_batch(5).unwrap();
    assert_eq!(b.len(), 5);
    assert!(b.iter().all(|r| r.event_time_ms > BASE_TIME_MS));
}
