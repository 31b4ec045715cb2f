//! The 512-bit kernel, for CPUs with VPCLMULQDQ and AVX-512 (F, BW, VL): four registers (16
//! lanes) fold 256 bytes forward per round; the last `n < 16` bytes are read (and written)
//! by loads and stores masked to them.

use std::arch::x86_64::*;

use super::constants::{K1024, K128, K1536, K2048, K256, K384, K512};
use super::lane::{fold128, reduce, with_tail_lane};
use super::load::{lane16, load_once, load_tail_once, tail_mask};
use super::MIN_SIMD_LEN;

/// The CRC of the `len >= MIN_SIMD_LEN` bytes at `src`, continued from `crc`; with `COPY`,
/// also stores them to `dst`, reading each source byte once (by [`load_once`], [`lane16`]
/// and [`load_tail_once`]).
///
/// # Safety
/// - The CPU has AVX-512F, AVX-512BW, AVX-512VL, AVX2, SSSE3, VPCLMULQDQ and PCLMULQDQ.
/// - `src..src + len` is readable; with `COPY`, `dst..dst + len` is writable and overlaps no
///   other live reference (without it, `dst` is not used).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,vpclmulqdq,pclmulqdq,ssse3,sse2")]
pub(super) unsafe fn fold<const COPY: bool>(
    src: *const u8,
    dst: *mut u8,
    len: usize,
    crc: u32,
) -> u32 {
    debug_assert!(len >= MIN_SIMD_LEN);
    // One 64-byte block at `at`: loaded (once), and stored to `dst` when copying.
    let block = |at: usize| {
        // SAFETY: every caller below passes `at + 64 <= len`: inside both ranges.
        unsafe {
            let v =
                if COPY { load_once(src.add(at)) } else { _mm512_loadu_si512(src.add(at).cast()) };
            if COPY {
                _mm512_storeu_si512(dst.add(at).cast(), v);
            }
            v
        }
    };
    // The CRC so far enters as the message's first 32 bits, inverted (crc32fast's state).
    let state = _mm512_zextsi128_si512(_mm_cvtsi32_si128(!crc as i32));
    let (mut acc, mut at);
    if len >= 256 {
        let mut x = [block(0), block(64), block(128), block(192)];
        x[0] = _mm512_xor_si512(x[0], state);
        at = 256;
        let k2048 = keys(K2048);
        while at + 256 <= len {
            for (i, r) in x.iter_mut().enumerate() {
                *r = fold512(*r, block(at + 64 * i), k2048);
            }
            at += 256;
        }
        // Collapse the four registers: each carried onto the last by its own distance (the
        // multiplications independent of each other), then the remaining whole blocks.
        acc = fold512(x[2], x[3], keys(K512));
        acc = fold512(x[1], acc, keys(K1024));
        acc = fold512(x[0], acc, keys(K1536));
    } else {
        // Under four registers' worth: one register, then the remaining whole blocks.
        acc = _mm512_xor_si512(block(0), state);
        at = 64;
    }
    let k512 = keys(K512);
    while at + 64 <= len {
        acc = fold512(acc, block(at), k512);
        at += 64;
    }
    // Collapse the four lanes the same way: lanes 0 to 2 carried 48, 32 and 16 bytes onto
    // lane 3 in one multiplication per half (lane 3's keys are zero, so it is put back
    // whole), then the four lanes XORed together.
    let lane_keys = _mm512_set_epi64(
        0,
        0,
        K128.1 as i64,
        K128.0 as i64,
        K256.1 as i64,
        K256.0 as i64,
        K384.1 as i64,
        K384.0 as i64,
    );
    let lo = _mm512_clmulepi64_epi128::<0x00>(acc, lane_keys);
    let hi = _mm512_clmulepi64_epi128::<0x11>(acc, lane_keys);
    let moved = _mm512_mask_mov_epi64(_mm512_xor_si512(lo, hi), 0b1100_0000, acc);
    let halves =
        _mm256_xor_si256(_mm512_castsi512_si256(moved), _mm512_extracti64x4_epi64::<1>(moved));
    let mut lane =
        _mm_xor_si128(_mm256_castsi256_si128(halves), _mm256_extracti128_si256::<1>(halves));
    while at + 16 <= len {
        // SAFETY: `at + 16 <= len`: inside both ranges; AVX-512F implies AVX.
        lane = fold128(lane, unsafe { lane16::<COPY>(src, dst, at) });
        at += 16;
    }
    // The lane now stands for the whole message so far, with a zero state; the last
    // `len - at < 16` bytes join it, and it is reduced.
    let n = len - at;
    // SAFETY: `at + n == len`: the `n` bytes loaded and stored are inside both ranges.
    let tail = unsafe {
        if COPY {
            let tail = load_tail_once(src.add(at), n);
            _mm_mask_storeu_epi8(dst.add(at).cast(), tail_mask(n), tail);
            tail
        } else {
            _mm_maskz_loadu_epi8(tail_mask(n), src.add(at).cast())
        }
    };
    !reduce(with_tail_lane(lane, tail, n))
}

/// Both keys of a fold distance in every lane.
#[target_feature(enable = "avx512f")]
#[inline]
fn keys(k: (u64, u64)) -> __m512i {
    _mm512_broadcast_i32x4(_mm_set_epi64x(k.1 as i64, k.0 as i64))
}

/// The four 16-byte lanes of `x` each carried forward by the distance of `k` onto `next`.
#[target_feature(enable = "avx512f,vpclmulqdq")]
#[inline]
fn fold512(x: __m512i, next: __m512i, k: __m512i) -> __m512i {
    let lo = _mm512_clmulepi64_epi128::<0x00>(x, k);
    let hi = _mm512_clmulepi64_epi128::<0x11>(x, k);
    _mm512_ternarylogic_epi64::<0x96>(lo, hi, next)
}
