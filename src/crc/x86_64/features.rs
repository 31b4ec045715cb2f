//! The CPU features the kernels need, detected once and cached in one byte: afterwards each
//! CRC costs one relaxed load, not nine `is_x86_feature_detected!` checks.

use std::sync::atomic::{AtomicU8, Ordering};

/// The bits of [`FEATURES`]: detection has run; [`zmm::fold`](super::zmm::fold) runs
/// (AVX-512 F, BW and VL, AVX2, SSSE3, VPCLMULQDQ, PCLMULQDQ); the [`lane`](super::lane)
/// functions run (PCLMULQDQ, SSSE3); [`ymm::fold`](super::ymm::fold) runs (AVX2, AVX, SSSE3,
/// VPCLMULQDQ, PCLMULQDQ).
const DETECTED: u8 = 1;
pub(super) const FOLDS: u8 = 2;
pub(super) const LANES: u8 = 4;
pub(super) const FOLDS_YMM: u8 = 8;

/// The detected features' bits; 0 until detection has run.
static FEATURES: AtomicU8 = AtomicU8::new(0);

/// The bits of the features this CPU has.
#[inline]
pub(super) fn features() -> u8 {
    match FEATURES.load(Ordering::Relaxed) {
        0 => detect(),
        known => known,
    }
}

/// Detects the features and caches them (two threads may both detect; they agree).
#[cold]
fn detect() -> u8 {
    let folds = std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("ssse3")
        && std::is_x86_feature_detected!("vpclmulqdq")
        && std::is_x86_feature_detected!("pclmulqdq");
    let lanes =
        std::is_x86_feature_detected!("pclmulqdq") && std::is_x86_feature_detected!("ssse3");
    let folds_ymm = lanes
        && std::is_x86_feature_detected!("avx")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("vpclmulqdq");
    let found = DETECTED
        | if folds { FOLDS } else { 0 }
        | if lanes { LANES } else { 0 }
        | if folds_ymm { FOLDS_YMM } else { 0 };
    FEATURES.store(found, Ordering::Relaxed);
    found
}
