//! Rate limits on the client API: a token bucket per authenticated principal (tenant
//! or admin), so one caller cannot take a master's time from the others. Counted on
//! the master that first receives a call: a follower's forward to the leader carries
//! the original caller in `x-weir-on-behalf-of` and is not counted again. With
//! security off nobody is identified and nothing is limited (local experiments).
//!
//! The decision ([`Limiter::take`]) is pure over an injected clock; the interceptor
//! ([`check`]) reads the caller that `admit` left and maps a refusal to
//! RESOURCE_EXHAUSTED saying when to retry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::{Request, Status};
use weir_security::caller::ON_BEHALF_OF;
use weir_security::{Caller, Principal};

/// Most principals tracked at once; beyond it, buckets that refilled (idle callers)
/// are forgotten first, so memory stays bounded whatever the callers.
pub const MAX_BUCKETS: usize = 65_536;

/// Calls per second and the burst one caller may make.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained calls per second.
    pub per_second: f64,
    /// Calls that may come at once (the bucket's size).
    pub burst: f64,
}

impl Default for RateLimit {
    /// 200 calls/s in bursts of 400: far above what weirctl, dashboards or a
    /// deployment pipeline make, far below what one client can make a master answer.
    fn default() -> Self {
        Self {
            per_second: 200.0,
            burst: 400.0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every caller (`None` limit: unlimited).
#[derive(Debug, Default)]
pub struct Limiter {
    limit: Option<RateLimit>,
    buckets: Mutex<HashMap<Principal, Bucket>>,
}

impl Limiter {
    /// Limits every caller to `limit`; `None` limits nobody.
    pub fn new(limit: Option<RateLimit>) -> Self {
        Self {
            limit: limit.filter(|l| l.per_second > 0.0 && l.burst >= 1.0),
            buckets: Mutex::default(),
        }
    }

    /// Takes one call of `who` at `now`; `Err` says how long until the next is allowed.
    pub fn take(&self, who: &Principal, now: Instant) -> Result<(), Duration> {
        let Some(l) = self.limit else {
            return Ok(());
        };
        let mut m = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_BUCKETS && !m.contains_key(who) {
            m.retain(|_, b| refill(b, now, l) < l.burst);
            if m.len() >= MAX_BUCKETS {
                // Every tracked caller is busy: forget one rather than grow.
                if let Some(k) = m.keys().next().cloned() {
                    m.remove(&k);
                }
            }
        }
        let b = m.entry(who.clone()).or_insert(Bucket {
            tokens: l.burst,
            at: now,
        });
        b.tokens = refill(b, now, l);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / l.per_second))
        }
    }

    /// The limit in force.
    pub fn limit(&self) -> Option<RateLimit> {
        self.limit
    }
}

fn refill(b: &Bucket, now: Instant, l: RateLimit) -> f64 {
    let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + elapsed * l.per_second).min(l.burst)
}

/// Counts `req` against its caller (after `admit`): forwarded calls were counted by
/// the master that received them; unidentified callers (security off) are not limited.
pub fn check<T>(limiter: &Limiter, req: &Request<T>) -> Result<(), Status> {
    if req.metadata().contains_key(ON_BEHALF_OF) {
        return Ok(());
    }
    let Some(who) = Caller::of(req)?.principal() else {
        return Ok(());
    };
    limiter.take(who, Instant::now()).map_err(|wait| {
        let l = limiter.limit().unwrap_or_default();
        Status::resource_exhausted(format!(
            "rate limit: {who} may make {} calls/s in bursts of {}; retry in {} ms",
            l.per_second,
            l.burst,
            wait.as_millis().max(1)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_has_its_own_burst_and_refills_at_the_rate() {
        let l = Limiter::new(Some(RateLimit {
            per_second: 2.0,
            burst: 3.0,
        }));
        let acme = Principal::Tenant("acme".into());
        let globex = Principal::Tenant("globex".into());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take(&acme, t0), Ok(()));
        }
        let wait = l.take(&acme, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another caller is not held back by the first.
        assert_eq!(l.take(&globex, t0), Ok(()));
        // Half a second later one call is back, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.take(&acme, t1), Ok(()));
        assert!(l.take(&acme, t1).is_err());
        // Idle long enough, the bucket is full again, never fuller.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(l.take(&acme, t2), Ok(()));
        }
        assert!(l.take(&acme, t2).is_err());
        // No limit: never refused.
        let none = Limiter::new(None);
        for _ in 0..10_000 {
            assert_eq!(none.take(&acme, t0), Ok(()));
        }
    }

    #[test]
    fn the_buckets_stay_bounded_whatever_the_callers() {
        let l = Limiter::new(Some(RateLimit {
            per_second: 1.0,
            burst: 1.0,
        }));
        let t0 = Instant::now();
        for i in 0..(MAX_BUCKETS + 100) {
            let who = Principal::Tenant(format!("t{i}"));
            assert_eq!(l.take(&who, t0), Ok(()), "a new caller's first call");
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_BUCKETS);
    }
}
