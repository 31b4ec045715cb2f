//! Test-only (feature `fault-injection`, built by `node scripts/build.js --fault-injection`
//! into `test-build/`, never into the installed addon): the crate's fault hooks, for the
//! package's tests of a worker killed while it holds a shard lock, and its test clock.
//!
//! `armFault(point, line)` makes the next write of this process that reaches `point` (the
//! crate's `FaultPoint`, by number: 1 lock held, 2 mid-copy, 3 before publish, ...) write
//! `line` to stdout and stop there for good, inside the shard lock, until the test kills
//! the process. `shiftClock(ms)` moves the store's clock of this process.

use std::io::Write;
use std::sync::Mutex;

use cluster_session_store::fault::{self, FaultPoint};
use napi_derive::napi;

use crate::error::{Code, Result};

/// What the parked process writes to stdout once it stops.
static PARK_LINE: Mutex<String> = Mutex::new(String::new());

/// The hook: tells the test (one write, atomic on a pipe) and stops this thread for good.
fn park() {
    let line = PARK_LINE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}

fn point(n: u32) -> Option<FaultPoint> {
    Some(match n {
        1 => FaultPoint::LockHeld,
        2 => FaultPoint::MidCopy,
        3 => FaultPoint::BeforePublish,
        4 => FaultPoint::AfterPublish,
        5 => FaultPoint::MidShift,
        6 => FaultPoint::MidRepair,
        7 => FaultPoint::MidMerge,
        8 => FaultPoint::MidGrow,
        9 => FaultPoint::MidShrink,
        10 => FaultPoint::InSpare,
        _ => return None,
    })
}

/// Test-only: the next write of this process to reach fault point `point` writes `line` to
/// stdout and stops inside the shard lock for good.
#[napi]
pub fn arm_fault(point_number: u32, line: String) -> Result<()> {
    let Some(point) = point(point_number) else {
        return Err(napi::Error::new(Code::Store, format!("no fault point {point_number}")));
    };
    *PARK_LINE.lock().unwrap_or_else(|e| e.into_inner()) = line;
    fault::arm(point, park);
    Ok(())
}

/// Test-only: no write stops anymore.
#[napi]
pub fn disarm_fault() {
    fault::disarm();
}

/// Test-only: moves the store's clock of this process by `ms` (cumulative; negative moves
/// it back), as a jump of the wall clock would.
#[napi]
pub fn shift_clock(ms: f64) {
    fault::shift_clock(ms as i64);
}

/// Test-only: puts the store's clock of this process back to the wall clock.
#[napi]
pub fn reset_clock() {
    fault::reset_clock();
}
