//! The wide kernels' loads from memory another process may be writing: each one instruction
//! in inline assembly, not `pure`, so the compiler must perform it exactly once where it
//! stands, as for `read_volatile` (which would demand the vector's alignment, and a value's
//! start does not have it).

use std::arch::x86_64::*;

/// The 64 bytes at `p`, by one `vmovdqu64`.
///
/// # Safety
/// - `p..p + 64` is readable.
/// - The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn load_once(p: *const u8) -> __m512i {
    let v: __m512i;
    // SAFETY: the caller guarantees the 64 bytes are readable and AVX-512F; the instruction
    // reads only them, writes no memory and leaves the flags alone.
    unsafe {
        std::arch::asm!(
            "vmovdqu64 {v}, zmmword ptr [{p}]",
            v = out(zmm_reg) v,
            p = in(reg) p,
            options(nostack, readonly, preserves_flags),
        );
    }
    v
}

/// The 32 bytes at `p`, by one `vmovdqu`.
///
/// # Safety
/// - `p..p + 32` is readable.
/// - The CPU has AVX.
#[target_feature(enable = "avx")]
#[inline]
pub(super) unsafe fn load32_once(p: *const u8) -> __m256i {
    let v: __m256i;
    // SAFETY: the caller guarantees the 32 bytes are readable and AVX; the instruction reads
    // only them, writes no memory and leaves the flags alone.
    unsafe {
        std::arch::asm!(
            "vmovdqu {v}, ymmword ptr [{p}]",
            v = out(ymm_reg) v,
            p = in(reg) p,
            options(nostack, readonly, preserves_flags),
        );
    }
    v
}

/// The 16 bytes at `p`, by one `vmovdqu`.
///
/// # Safety
/// - `p..p + 16` is readable.
/// - The CPU has AVX (every CPU that runs either wide kernel has).
#[target_feature(enable = "avx")]
#[inline]
unsafe fn load16_once(p: *const u8) -> __m128i {
    let v: __m128i;
    // SAFETY: the caller guarantees the 16 bytes are readable and AVX; the instruction reads
    // only them, writes no memory and leaves the flags alone.
    unsafe {
        std::arch::asm!(
            "vmovdqu {v}, xmmword ptr [{p}]",
            v = out(xmm_reg) v,
            p = in(reg) p,
            options(nostack, readonly, preserves_flags),
        );
    }
    v
}

/// The 16 bytes at `src + at`: with `COPY`, loaded once ([`load16_once`]) and stored to the
/// same offset of `dst`; without it, by an ordinary load (`dst` is not used).
///
/// # Safety
/// - `src + at..src + at + 16` is readable.
/// - With `COPY`, `dst + at..dst + at + 16` is writable and overlaps no other live reference.
/// - The CPU has AVX.
#[target_feature(enable = "avx")]
#[inline]
pub(super) unsafe fn lane16<const COPY: bool>(src: *const u8, dst: *mut u8, at: usize) -> __m128i {
    // SAFETY: the ranges and the feature as the caller promises.
    unsafe {
        if COPY {
            let v = load16_once(src.add(at));
            _mm_storeu_si128(dst.add(at).cast(), v);
            v
        } else {
            _mm_loadu_si128(src.add(at).cast())
        }
    }
}

/// The `n < 16` bytes at `p` in the low bytes of a lane, zeros above them, by one
/// zero-masking `vmovdqu8`. The mask keeps the load to those `n` bytes: nothing past them is
/// read.
///
/// # Safety
/// - `p..p + n` is readable.
/// - The CPU has AVX-512BW and AVX-512VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
pub(super) unsafe fn load_tail_once(p: *const u8, n: usize) -> __m128i {
    debug_assert!(n < 16);
    let mask = tail_mask(n);
    let v: __m128i;
    // SAFETY: the caller guarantees the `n` bytes the mask selects are readable, and the
    // features; the instruction reads only them (masked-off bytes are neither read nor
    // fault), writes no memory and leaves the flags alone.
    unsafe {
        std::arch::asm!(
            "vmovdqu8 {v}{{{k}}}{{z}}, xmmword ptr [{p}]",
            v = out(xmm_reg) v,
            k = in(kreg) mask,
            p = in(reg) p,
            options(nostack, readonly, preserves_flags),
        );
    }
    v
}

/// The byte mask of a lane's first `n < 16` bytes.
#[inline]
pub(super) fn tail_mask(n: usize) -> u16 {
    debug_assert!(n < 16);
    (1u16 << n) - 1
}
