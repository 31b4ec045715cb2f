//! The x86_64 backend: picks a kernel per call from the features detected once
//! ([`features`](mod@features)): [`zmm::fold`] or [`ymm::fold`] for [`MIN_SIMD_LEN`] bytes or more, the
//! one-lane path ([`lane`]) for shorter inputs from 16 bytes (up to 127 where no wide kernel
//! runs, [`crc32`]) and for a record's head ([`crc32_after`]), crc32fast for the rest.

mod constants;
mod features;
mod lane;
mod load;
mod ymm;
mod zmm;

#[cfg(test)]
mod tests;

use features::{features, FOLDS, FOLDS_YMM, LANES};

/// Shortest input the wide kernels take: one 512-bit register's worth.
const MIN_SIMD_LEN: usize = 64;
/// Shortest input [`crc32`] gives the one-lane path (one 16-byte lane and no table).
const MIN_LANE_LEN: usize = 16;
/// Shortest input crc32fast folds with PCLMULQDQ itself (four lanes at a time); below it,
/// it runs a table, which the one-lane path beats.
const CRC32FAST_FOLDS: usize = 128;

/// The CRC-32 of `data`, continued from the CRC `crc` (0 to start afresh), exactly as
/// `crc32fast::Hasher::new_with_initial(crc)` would compute it.
pub(crate) fn crc32(crc: u32, data: &[u8]) -> u32 {
    if let Some(width) = wide(data.len()) {
        // SAFETY: the CPU runs `width`'s kernel (`wide`); `data` is a live slice of
        // `data.len()` readable bytes, and no bytes are written (no `dst`).
        return unsafe {
            folded::<false>(width, data.as_ptr(), std::ptr::null_mut(), data.len(), crc)
        };
    }
    if (MIN_LANE_LEN..CRC32FAST_FOLDS).contains(&data.len()) && has_pclmulqdq() {
        // SAFETY: the CPU has PCLMULQDQ and SSSE3 (detected, `has_pclmulqdq`); SSE2 is in the
        // x86_64 baseline.
        return unsafe { lane::lanes_of(crc, data) };
    }
    super::crc32fast_of(crc, data)
}

/// The CRC-32 of the 16 bytes of `first` (each word in native byte order) followed by
/// `data`, continued from `crc`: [`crc32`] of their concatenation, without the caller
/// writing the words to memory first (a wide load of narrower stores just made would wait
/// for them to retire).
pub(crate) fn crc32_after(crc: u32, first: [u64; 2], data: &[u8]) -> u32 {
    if has_pclmulqdq() {
        // SAFETY: the CPU has PCLMULQDQ and SSSE3 (detected, `has_pclmulqdq`); SSE2 is in the
        // x86_64 baseline.
        return unsafe { lane::lanes_after(crc, first[0], first[1], data) };
    }
    super::crc32fast_after(crc, first, data)
}

/// Copies `len` bytes from `src` to `dst` with loads the compiler may neither elide, merge
/// nor repeat (as `read_volatile`'s), and returns their CRC-32 continued from `crc()`;
/// `None`, nothing copied and `crc` not called, unless a wide kernel runs for `len` bytes
/// ([`wide`], decided once here, so that the caller computes the CRC to continue only when a
/// kernel will take it).
///
/// # Safety
/// - `src..src + len` is readable memory inside a live mapping; other processes may be
///   writing it (the caller validates the copy before trusting it).
/// - `dst..dst + len` is writable and overlaps no other live reference.
#[inline]
pub(crate) unsafe fn copy_crc32(
    src: *const u8,
    dst: *mut u8,
    len: usize,
    crc: impl FnOnce() -> u32,
) -> Option<u32> {
    // SAFETY: the CPU runs `width`'s kernel (`wide`); the ranges are as the caller promises.
    wide(len).map(|width| unsafe { folded::<true>(width, src, dst, len, crc()) })
}

/// Whether [`copy_crc32`] takes `len` bytes on this CPU (and [`crc32`] a wide kernel).
#[cfg(test)]
pub(crate) fn fuses(len: usize) -> bool {
    wide(len).is_some()
}

/// A wide kernel's register width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Width {
    /// 512 bits: [`zmm::fold`].
    Zmm,
    /// 256 bits: [`ymm::fold`].
    Ymm,
}

/// The widest kernel this CPU runs for `len` bytes: none under [`MIN_SIMD_LEN`].
#[inline]
fn wide(len: usize) -> Option<Width> {
    if len < MIN_SIMD_LEN {
        return None;
    }
    let found = features();
    if found & FOLDS != 0 {
        Some(Width::Zmm)
    } else if found & FOLDS_YMM != 0 {
        Some(Width::Ymm)
    } else {
        None
    }
}

/// [`zmm::fold`] or [`ymm::fold`], as `width` says.
///
/// # Safety
/// - The CPU runs `width`'s kernel.
/// - `src`, `dst` and `len` are as that kernel requires.
#[inline]
unsafe fn folded<const COPY: bool>(
    width: Width,
    src: *const u8,
    dst: *mut u8,
    len: usize,
    crc: u32,
) -> u32 {
    // SAFETY: as the caller promises.
    unsafe {
        match width {
            Width::Zmm => zmm::fold::<COPY>(src, dst, len, crc),
            Width::Ymm => ymm::fold::<COPY>(src, dst, len, crc),
        }
    }
}

/// Whether this CPU runs the [`lane`] functions: PCLMULQDQ, and SSSE3 for
/// [`lane::with_tail_lane`] (every CPU with the first has the second).
#[inline]
fn has_pclmulqdq() -> bool {
    features() & LANES != 0
}
