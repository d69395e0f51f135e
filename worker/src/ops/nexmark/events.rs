//! The Nexmark events: which event number is which kind, and the distributions of
//! their fields, after the reference generator (Apache Beam's and nexmark-flink's
//! `GeneratorConfig`, `PersonGenerator`, `AuctionGenerator`, `BidGenerator`,
//! `PriceGenerator`, `StringsGenerator`) with its default configuration.
//!
//! Every function here is pure: event `n` under a seed is always the same event.
//! Differences from the reference, on purpose:
//! - random draws come from [`Rng`] (per event), not `java.util.Random` (see there);
//! - event times are `BASE_TIME_MS + n * 1000 / events_per_second` with a fixed base,
//!   not the wall clock at start, so runs repeat exactly;
//! - the bidder id adds `FIRST_PERSON_ID` once, as Beam does (nexmark-flink adds it
//!   twice, a known slip);
//! - channel URLs are made from the seed, not from an unseeded `Random` per process;
//! - random letters are `a..=z` (the reference's `nextExactString` can also yield a
//!   few characters below `a`, from a negative remainder).

use super::rng::Rng;
use weir_common::spec::NexmarkTable;

/// First person id (the reference's `FIRST_PERSON_ID`).
pub const FIRST_PERSON_ID: i64 = 1000;
/// First auction id (`FIRST_AUCTION_ID`).
pub const FIRST_AUCTION_ID: i64 = 1000;
/// First category id (`FIRST_CATEGORY_ID`).
pub const FIRST_CATEGORY_ID: i64 = 10;

/// Persons in every [`PROPORTION_DENOMINATOR`] events.
pub const PERSON_PROPORTION: u64 = 1;
/// Auctions in every [`PROPORTION_DENOMINATOR`] events.
pub const AUCTION_PROPORTION: u64 = 3;
/// Bids in every [`PROPORTION_DENOMINATOR`] events.
pub const BID_PROPORTION: u64 = 46;
/// Events per round of the 1:3:46 cycle.
pub const PROPORTION_DENOMINATOR: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// Event time of event 0, ms (the same base as `source.generator`'s).
pub const BASE_TIME_MS: i64 = crate::ops::generator::BASE_EVENT_TIME_MS;

/// 1 in this many bids is for a random auction, the rest for the hot one
/// (`hotAuctionRatio`).
pub const HOT_AUCTION_RATIO: u64 = 2;
/// 1 in this many bids is by a random bidder (`hotBiddersRatio`).
pub const HOT_BIDDERS_RATIO: u64 = 4;
/// 1 in this many auctions is by a random seller (`hotSellersRatio`).
pub const HOT_SELLERS_RATIO: u64 = 4;
/// The hot auction, bidder and seller are the first of the last block of this many
/// ids (`HOT_AUCTION_RATIO` and friends, = 100, in the model classes).
pub const HOT_BLOCK: i64 = 100;
/// Auctions that may still take bids (`numInFlightAuctions`).
pub const NUM_IN_FLIGHT_AUCTIONS: i64 = 100;
/// People who may still bid or sell (`numActivePeople`).
pub const NUM_ACTIVE_PEOPLE: i64 = 1000;
/// Ids not created yet that a random pick may still name (`PERSON_ID_LEAD`,
/// `AUCTION_ID_LEAD`).
pub const ID_LEAD: i64 = 10;
/// Categories (`NUM_CATEGORIES`).
pub const NUM_CATEGORIES: u64 = 5;
/// Average sizes the `extra` field pads events to (`avg*ByteSize`).
const AVG_PERSON_BYTES: usize = 200;
const AVG_AUCTION_BYTES: usize = 500;
const AVG_BID_BYTES: usize = 100;
/// 1 in this many bids comes through a random channel, the rest through a hot one.
const HOT_CHANNELS_RATIO: u64 = 2;
/// Channels a bid may come through (`CHANNELS_NUMBER`).
pub const CHANNELS: usize = 10_000;
/// The hot channels.
pub const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];

/// The kind of event `n`: its place in the 1:3:46 round of 50.
pub fn kind_of(n: u64) -> NexmarkTable {
    match n % PROPORTION_DENOMINATOR {
        r if r < PERSON_PROPORTION => NexmarkTable::Person,
        r if r < PERSON_PROPORTION + AUCTION_PROPORTION => NexmarkTable::Auction,
        _ => NexmarkTable::Bid,
    }
}

/// Event time of event `n`, ms: events are `1000 / events_per_second` ms apart.
pub fn timestamp(n: u64, events_per_second: u64) -> i64 {
    let offset = u128::from(n) * 1000 / u128::from(events_per_second.max(1));
    BASE_TIME_MS.saturating_add(i64::try_from(offset).unwrap_or(i64::MAX))
}

/// The newest person id (from 0) at event `n`: the id of the person event `n` makes, if
/// it makes one.
pub fn last_base0_person_id(n: u64) -> i64 {
    let (epoch, mut offset) = (n / PROPORTION_DENOMINATOR, n % PROPORTION_DENOMINATOR);
    if offset >= PERSON_PROPORTION {
        // An auction or a bid: the last person is this round's last.
        offset = PERSON_PROPORTION - 1;
    }
    (epoch * PERSON_PROPORTION + offset) as i64
}

/// The newest auction id (from 0) at event `n`; -1 before the first auction.
pub fn last_base0_auction_id(n: u64) -> i64 {
    let (mut epoch, mut offset) = (
        (n / PROPORTION_DENOMINATOR) as i64,
        (n % PROPORTION_DENOMINATOR) as i64,
    );
    let (person, auction) = (PERSON_PROPORTION as i64, AUCTION_PROPORTION as i64);
    if offset < person {
        // A person: the last auction is the previous round's last.
        epoch -= 1;
        offset = auction - 1;
    } else if offset >= person + auction {
        // A bid: the last auction is this round's last.
        offset = auction - 1;
    } else {
        offset -= person;
    }
    epoch * auction + offset
}

/// A random person among the active ones, or a few not created yet.
fn next_base0_person_id(n: u64, rng: &mut Rng) -> i64 {
    let people = last_base0_person_id(n) + 1;
    let active = people.min(NUM_ACTIVE_PEOPLE);
    people - active + rng.below((active + ID_LEAD) as u64) as i64
}

/// A random auction among those in flight, or a few not created yet.
fn next_base0_auction_id(n: u64, rng: &mut Rng) -> i64 {
    let max = last_base0_auction_id(n);
    let min = (max - NUM_IN_FLIGHT_AUCTIONS).max(0);
    min + rng.below((max - min + 1 + ID_LEAD).max(1) as u64) as i64
}

/// A price in cents, log-uniform over `[100, 10^8]`: `round(10^(6u) * 100)`.
pub fn price(rng: &mut Rng) -> i64 {
    (10f64.powf(rng.unit() * 6.0) * 100.0).round() as i64
}

/// Random text of 3 to `max - 1` characters, letters with about one in 13 `gap`;
/// trimmed of spaces at both ends (as the reference's `trim`).
fn string(rng: &mut Rng, max: u64, gap: char) -> String {
    let len = 3 + rng.below(max - 3) as usize;
    let gap = gap as u8;
    let mut out = Vec::with_capacity(len);
    // Four characters from each 64 random bits: the top of a 16-bit draw decides a gap
    // (1 in 13), its low 12 bits the letter.
    while out.len() < len {
        let mut r = rng.next_u64();
        for _ in 0..4.min(len - out.len()) {
            let v = r & 0xFFFF;
            out.push(if (v * 13) >> 16 == 0 {
                gap
            } else {
                letter12(v)
            });
            r >>= 16;
        }
    }
    let s = ascii(out);
    if gap == b' ' {
        s.trim().to_string()
    } else {
        s
    }
}

/// A letter `a..=z` from 12 random bits (multiply-shift: the bias is under 0.4%,
/// nothing for padding and names).
fn letter12(bits: u64) -> u8 {
    b'a' + (((bits & 0xFFF) * 26) >> 12) as u8
}

/// Text of ASCII letters and gaps.
fn ascii(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_default()
}

/// Letters padding an event of `size` bytes to about `average` (within +-20%). Five
/// letters from each 64 random bits: this is most of a bid's making, and drawing a
/// number per letter made the source the slowest part of Nexmark q0 (a third of the
/// time, profiled).
fn extra(rng: &mut Rng, size: usize, average: usize) -> String {
    if size > average {
        return String::new();
    }
    let want = average - size;
    let delta = (want as f64 * 0.2).round() as usize;
    let len = want - delta
        + if delta == 0 {
            0
        } else {
            rng.below(2 * delta as u64) as usize
        };
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let mut r = rng.next_u64();
        for _ in 0..5.min(len - out.len()) {
            out.push(letter12(r));
            r >>= 12;
        }
    }
    ascii(out)
}

/// A URL of the reference's shape, `https://www.nexmark.com/xxx/xxx/xxx/item.htm?query=1`.
fn base_url(rng: &mut Rng) -> String {
    format!(
        "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
        string(rng, 5, '_'),
        string(rng, 5, '_'),
        string(rng, 5, '_')
    )
}

/// The channels bids come through and their URLs, fixed by the seed: made once per
/// PE, so a bid only picks one.
#[derive(Clone, Debug)]
pub struct Channels {
    hot_urls: Vec<String>,
    names: Vec<String>,
    urls: Vec<String>,
}

/// Purposes of [`Rng::for_purpose`] streams.
const HOT_URL: u64 = 1;
const CHANNEL_URL: u64 = 2;

impl Channels {
    /// The channels under `seed`.
    pub fn new(seed: u64) -> Self {
        let hot_urls = (0..HOT_CHANNELS.len() as u64)
            .map(|i| base_url(&mut Rng::for_purpose(seed, HOT_URL, i)))
            .collect();
        let (names, urls) = (0..CHANNELS)
            .map(|c| {
                let mut rng = Rng::for_purpose(seed, CHANNEL_URL, c as u64);
                let mut url = base_url(&mut rng);
                // Nine channels in ten carry their id, bit-reversed, in the URL.
                if rng.below(10) > 0 {
                    let id = i64::from((c as i32).reverse_bits()).abs();
                    url.push_str(&format!("&channel_id={id}"));
                }
                (format!("channel-{c}"), url)
            })
            .unzip();
        Self {
            hot_urls,
            names,
            urls,
        }
    }

    /// Channel `c` (of [`CHANNELS`]) and its URL.
    pub fn channel(&self, c: usize) -> Option<(&str, &str)> {
        Some((self.names.get(c)?, self.urls.get(c)?))
    }

    /// A random channel and its URL: a hot one half of the time.
    fn pick(&self, rng: &mut Rng) -> (&str, &str) {
        if rng.below(HOT_CHANNELS_RATIO) > 0 {
            let i = rng.below(HOT_CHANNELS.len() as u64) as usize;
            (HOT_CHANNELS[i], &self.hot_urls[i])
        } else {
            let c = rng.below(CHANNELS as u64) as usize;
            (&self.names[c], &self.urls[c])
        }
    }
}

/// A new person.
#[derive(Clone, Debug, PartialEq)]
pub struct Person {
    /// Person id, from [`FIRST_PERSON_ID`], one per person event.
    pub id: i64,
    /// First and last name.
    pub name: String,
    /// A made-up address.
    pub email_address: String,
    /// Four groups of four digits.
    pub credit_card: String,
    /// One of ten US cities.
    pub city: String,
    /// One of six US states.
    pub state: String,
    /// Event time, ms.
    pub date_time: i64,
    /// Padding.
    pub extra: String,
}

/// An auction opening.
#[derive(Clone, Debug, PartialEq)]
pub struct Auction {
    /// Auction id, from [`FIRST_AUCTION_ID`], one per auction event.
    pub id: i64,
    /// Item name.
    pub item_name: String,
    /// Item description.
    pub description: String,
    /// Opening price, cents.
    pub initial_bid: i64,
    /// Reserve price, cents: above the opening price.
    pub reserve: i64,
    /// Event time, ms.
    pub date_time: i64,
    /// When the auction closes, ms.
    pub expires: i64,
    /// The seller's person id.
    pub seller: i64,
    /// Category id.
    pub category: i64,
    /// Padding.
    pub extra: String,
}

/// A bid; the channel and URL borrow from the [`Channels`].
#[derive(Clone, Debug, PartialEq)]
pub struct Bid<'c> {
    /// The auction bid on.
    pub auction: i64,
    /// The bidder's person id.
    pub bidder: i64,
    /// Price, cents.
    pub price: i64,
    /// The channel the bid came through.
    pub channel: &'c str,
    /// The URL it came from.
    pub url: &'c str,
    /// Event time, ms.
    pub date_time: i64,
    /// Padding.
    pub extra: String,
}

/// Person event `n` (any `n` gives a person; event numbers of other kinds give the
/// person their round made).
pub fn person(seed: u64, n: u64, events_per_second: u64) -> Person {
    let mut rng = Rng::for_event(seed, n);
    let id = last_base0_person_id(n) + FIRST_PERSON_ID;
    let first = FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize];
    let last = LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize];
    let name = format!("{first} {last}");
    let email_address = format!(
        "{}@{}.com",
        string(&mut rng, 7, ' '),
        string(&mut rng, 5, ' ')
    );
    let credit_card = (0..4)
        .map(|_| format!("{:04}", rng.below(10_000)))
        .collect::<Vec<_>>()
        .join(" ");
    let city = US_CITIES[rng.below(US_CITIES.len() as u64) as usize].to_string();
    let state = US_STATES[rng.below(US_STATES.len() as u64) as usize].to_string();
    let size = 8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
    let extra = extra(&mut rng, size, AVG_PERSON_BYTES);
    Person {
        id,
        name,
        email_address,
        credit_card,
        city,
        state,
        date_time: timestamp(n, events_per_second),
        extra,
    }
}

/// Auction event `n`.
pub fn auction(seed: u64, n: u64, events_per_second: u64) -> Auction {
    let mut rng = Rng::for_event(seed, n);
    let date_time = timestamp(n, events_per_second);
    let id = last_base0_auction_id(n) + FIRST_AUCTION_ID;
    let seller = if rng.below(HOT_SELLERS_RATIO) > 0 {
        // The first person of the last block of 100.
        (last_base0_person_id(n) / HOT_BLOCK) * HOT_BLOCK
    } else {
        next_base0_person_id(n, &mut rng)
    } + FIRST_PERSON_ID;
    let category = FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES) as i64;
    let initial_bid = price(&mut rng);
    // Saturating: event times are capped at i64::MAX for absurd event numbers.
    let expires =
        date_time.saturating_add(auction_length_ms(n, date_time, events_per_second, &mut rng));
    let item_name = string(&mut rng, 20, ' ');
    let description = string(&mut rng, 100, ' ');
    let reserve = initial_bid + price(&mut rng);
    let size = 8 + item_name.len() + description.len() + 8 * 5;
    let extra = extra(&mut rng, size, AVG_AUCTION_BYTES);
    Auction {
        id,
        item_name,
        description,
        initial_bid,
        reserve,
        date_time,
        expires,
        seller,
        category,
        extra,
    }
}

/// How long an auction runs: uniform up to twice the time until the auction
/// [`NUM_IN_FLIGHT_AUCTIONS`] ahead opens, so about that many are open at a time.
fn auction_length_ms(n: u64, now: i64, events_per_second: u64, rng: &mut Rng) -> i64 {
    let ahead = NUM_IN_FLIGHT_AUCTIONS as u64 * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
    let horizon = timestamp(n.saturating_add(ahead), events_per_second) - now;
    1 + rng.below(horizon.saturating_mul(2).max(1) as u64) as i64
}

/// Bid event `n`.
pub fn bid(seed: u64, n: u64, events_per_second: u64, channels: &Channels) -> Bid<'_> {
    let mut rng = Rng::for_event(seed, n);
    let auction = if rng.below(HOT_AUCTION_RATIO) > 0 {
        // The first auction of the last block of 100.
        (last_base0_auction_id(n) / HOT_BLOCK) * HOT_BLOCK
    } else {
        next_base0_auction_id(n, &mut rng)
    } + FIRST_AUCTION_ID;
    let bidder = if rng.below(HOT_BIDDERS_RATIO) > 0 {
        // The second person of the last block of 100, so hot bidders are not hot sellers.
        (last_base0_person_id(n) / HOT_BLOCK) * HOT_BLOCK + 1
    } else {
        next_base0_person_id(n, &mut rng)
    } + FIRST_PERSON_ID;
    let price = price(&mut rng);
    let (channel, url) = channels.pick(&mut rng);
    let extra = extra(&mut rng, 8 * 4, AVG_BID_BYTES);
    Bid {
        auction,
        bidder,
        price,
        channel,
        url,
        date_time: timestamp(n, events_per_second),
        extra,
    }
}
