//! The random numbers of one Nexmark event: a splitmix64 stream seeded by the app's
//! seed and the event number.
//!
//! The reference generators draw every event from one `java.util.Random` shared by a
//! generator, so an event depends on all the events before it on that generator. Here
//! each event has its own stream, so any PE can make any event without the others:
//! that is what lets `source.nexmark` split the event numbers over PEs and still emit,
//! together, exactly what one PE would. The draws follow the reference's order and
//! ranges, not its bits: the values are not those of the Java generator.

/// A splitmix64 step's output mix (Steele, Lea, Flood 2014).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A deterministic stream of random numbers.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// The stream of event `n` under `seed`.
    pub fn for_event(seed: u64, n: u64) -> Self {
        Self(mix(seed ^ mix(n.wrapping_add(GOLDEN))))
    }

    /// A stream for a purpose other than an event (`what` tells them apart), e.g. the
    /// URL of a channel, which must be the same in every bid that names the channel.
    pub fn for_purpose(seed: u64, what: u64, i: u64) -> Self {
        Self(mix(mix(seed ^ what.wrapping_mul(GOLDEN)) ^ mix(i)))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in `[0, n)` (Java's `nextInt(n)` / `nextLong(n)`); 0 when `n` is 0.
    /// Multiply-shift: the bias is below `n / 2^64`, nothing at these ranges.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)` with 53 random bits (Java's `nextDouble`).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}
