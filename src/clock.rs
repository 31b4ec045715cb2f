//! The store's clock: unix milliseconds from the wall clock, shifted in tests by the
//! `fault-injection` offset, and [`Clock`], which lets an operation decide expiry from the
//! coarse clock when the precise one could not change the answer.
#![forbid(unsafe_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use nix::time::{clock_gettime, ClockId};

/// How far the coarse clock may lag the precise one for [`Clock`] to trust it. The
/// coarse clock is the time of the last timer tick, 1 to 10 ms behind; this leaves room for
/// ticks a busy or just-resumed machine has not run yet.
pub(crate) const COARSE_TRUST_MS: u64 = 1_000;

/// Unix time in milliseconds, from the precise real-time clock (a vDSO read, about 24 ns
/// here). Under the test-only `fault-injection` feature a test may shift it
/// (`fault::shift_clock`); otherwise the offset is a constant 0.
pub(crate) fn now_ms() -> u64 {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    wall.saturating_add_signed(crate::fault::clock_offset_ms())
}

/// [`now_ms`] from `CLOCK_REALTIME_COARSE` (about 4 ns here): never ahead of the precise
/// clock, behind it by up to a tick. 0 if the clock cannot be read.
fn coarse_now_ms() -> u64 {
    let Ok(t) = clock_gettime(ClockId::CLOCK_REALTIME_COARSE) else { return 0 };
    let wall = u64::try_from(t.tv_sec()).map_or(0, |s| s * 1000 + t.tv_nsec() as u64 / 1_000_000);
    wall.saturating_add_signed(crate::fault::clock_offset_ms())
}

/// The clock of one read or write: whether a record it finds has expired ([`live`]), and a
/// time never ahead of now ([`floor`]) for the deadlines it sets and the expired records it
/// frees. A record whose expiry is more than [`COARSE_TRUST_MS`] past the coarse clock is
/// live by the precise clock too, so that clock is read only for a record within a second
/// of its expiry (or past it): sessions live for minutes, and nearly every operation pays
/// 4 ns instead of 24 for its clock. The answer is the precise clock's unless the coarse one
/// lags by more than a second.
///
/// [`live`]: Clock::live
/// [`floor`]: Clock::floor
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    coarse: u64,
}

impl Clock {
    pub fn new() -> Self {
        Clock { coarse: coarse_now_ms() }
    }

    /// Whether a record expiring at `expires_ms` (unix ms) is live: its expiry is still to
    /// come.
    #[inline]
    pub fn live(self, expires_ms: u64) -> bool {
        expires_ms > self.coarse.saturating_add(COARSE_TRUST_MS) || expires_ms > now_ms()
    }

    /// The coarse clock's reading: never ahead of the precise clock, behind it by up to a
    /// tick (a few milliseconds). Deadlines count from it, so a session may expire that much
    /// before its full time to live; a write's two-slot cleanup frees records expired by it,
    /// which are expired by the precise clock too, and errs only towards freeing one a tick
    /// later.
    #[inline]
    pub fn floor(self) -> u64 {
        self.coarse
    }

    /// The precise clock, read now: for a full shard's pass over every expired record
    /// before it evicts, which must not evict a live session while one that expired a tick
    /// ago stays.
    pub fn precise(self) -> u64 {
        now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each coarse reading lies between two precise ones, read before and after it: never
    /// after the second, and within the trust margin of the first (a delay between the reads
    /// only moves the coarse reading later, so it cannot fail this).
    #[test]
    fn the_coarse_clock_is_never_ahead_and_lags_less_than_the_trust_margin() {
        for _ in 0..1000 {
            let before = now_ms();
            let coarse = coarse_now_ms();
            let after = now_ms();
            assert!(coarse <= after, "coarse {coarse} ahead of precise {after}");
            assert!(before < coarse + COARSE_TRUST_MS, "coarse {coarse} lags {before}");
        }
    }

    /// What a write's deadline counts from, and its cleanup frees by: never ahead of the
    /// precise clock read after it.
    #[test]
    fn a_clock_floor_is_never_ahead_of_the_precise_clock() {
        for _ in 0..1000 {
            let clock = Clock::new();
            assert!(clock.floor() <= clock.precise());
        }
    }

    #[test]
    fn a_read_clock_agrees_with_the_precise_clock_near_and_far_from_now() {
        let clock = Clock::new();
        let now = now_ms();
        assert!(!clock.live(0));
        assert!(!clock.live(now), "a record expiring now is gone");
        assert!(!clock.live(now - 1));
        assert!(clock.live(now + 60_000));
        assert!(clock.live(u64::MAX));
        // Within the margin the precise clock decides: a record half the margin ahead is live
        // (unless half a second passes between these two clock reads).
        assert!(clock.live(now_ms() + COARSE_TRUST_MS / 2));
    }
}
