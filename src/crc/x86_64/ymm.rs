//! The 256-bit kernel, for CPUs with VPCLMULQDQ and AVX2 but not AVX-512, such as AMD's Zen 3
//! and Intel's client cores from Alder Lake: four registers (8 lanes) fold 128 bytes forward
//! per round. Without AVX-512BW's masked loads and stores, the last `n < 16` bytes come from
//! the message's last 16.

use std::arch::x86_64::*;

use super::constants::{K1024, K256, K512, K768};
use super::lane::{fold128, reduce, with_tail_lane, TAIL_SHUFFLE};
use super::load::{lane16, load32_once};
use super::MIN_SIMD_LEN;

/// [`zmm::fold`](super::zmm::fold) over 256-bit registers. The last `n = len % 16` bytes come
/// from the message's last 16, loaded (and, with `COPY`, stored) first: the bytes of those 16
/// before the last `n` are then loaded again by the blocks, whose values the CRC takes and
/// whose stores overwrite them in `dst`, so that the copy and the CRC agree on every byte even
/// while another process writes the source.
///
/// # Safety
/// - The CPU has AVX2, AVX, SSSE3, VPCLMULQDQ and PCLMULQDQ.
/// - `src..src + len` is readable; with `COPY`, `dst..dst + len` is writable and overlaps no
///   other live reference (without it, `dst` is not used).
#[target_feature(enable = "avx2,avx,vpclmulqdq,pclmulqdq,ssse3,sse2")]
pub(super) unsafe fn fold<const COPY: bool>(
    src: *const u8,
    dst: *mut u8,
    len: usize,
    crc: u32,
) -> u32 {
    debug_assert!(len >= MIN_SIMD_LEN);
    let n = len % 16;
    let last = if n == 0 {
        _mm_setzero_si128()
    } else {
        // SAFETY: `len >= MIN_SIMD_LEN >= 16`: the last 16 bytes are inside both ranges.
        unsafe { lane16::<COPY>(src, dst, len - 16) }
    };
    // One 32-byte block at `at`: loaded (once), and stored to `dst` when copying.
    let block = |at: usize| {
        // SAFETY: every caller below passes `at + 32 <= len`: inside both ranges.
        unsafe {
            let v = if COPY {
                load32_once(src.add(at))
            } else {
                _mm256_loadu_si256(src.add(at).cast())
            };
            if COPY {
                _mm256_storeu_si256(dst.add(at).cast(), v);
            }
            v
        }
    };
    // The CRC so far enters as the message's first 32 bits, inverted (crc32fast's state).
    let state = _mm256_zextsi128_si256(_mm_cvtsi32_si128(!crc as i32));
    let (mut acc, mut at);
    if len >= 128 {
        let mut x = [block(0), block(32), block(64), block(96)];
        x[0] = _mm256_xor_si256(x[0], state);
        at = 128;
        let k1024 = keys(K1024);
        while at + 128 <= len {
            for (i, r) in x.iter_mut().enumerate() {
                *r = fold256(*r, block(at + 32 * i), k1024);
            }
            at += 128;
        }
        // Collapse the four registers, each carried onto the last by its own distance.
        acc = fold256(x[2], x[3], keys(K256));
        acc = fold256(x[1], acc, keys(K512));
        acc = fold256(x[0], acc, keys(K768));
    } else {
        acc = _mm256_xor_si256(block(0), state);
        at = 32;
    }
    let k256 = keys(K256);
    while at + 32 <= len {
        acc = fold256(acc, block(at), k256);
        at += 32;
    }
    let mut lane = fold128(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc));
    if at + 16 <= len {
        // SAFETY: `at + 16 <= len`: inside both ranges.
        lane = fold128(lane, unsafe { lane16::<COPY>(src, dst, at) });
        at += 16;
    }
    debug_assert_eq!(len - at, n);
    // The tail is the top `n` of the last 16 bytes; moved down to the lane's bottom.
    let down = &TAIL_SHUFFLE[32 - n..48 - n];
    // SAFETY: 16 bytes of the constant (the slicing checked the bounds).
    let tail = _mm_shuffle_epi8(last, unsafe { _mm_loadu_si128(down.as_ptr().cast()) });
    !reduce(with_tail_lane(lane, tail, n))
}

/// Both keys of a fold distance in both lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn keys(k: (u64, u64)) -> __m256i {
    _mm256_broadcastsi128_si256(_mm_set_epi64x(k.1 as i64, k.0 as i64))
}

/// The two 16-byte lanes of `x` each carried forward by the distance of `k` onto `next`.
#[target_feature(enable = "avx2,vpclmulqdq")]
#[inline]
fn fold256(x: __m256i, next: __m256i, k: __m256i) -> __m256i {
    let lo = _mm256_clmulepi64_epi128::<0x00>(x, k);
    let hi = _mm256_clmulepi64_epi128::<0x11>(x, k);
    _mm256_xor_si256(_mm256_xor_si256(lo, hi), next)
}
