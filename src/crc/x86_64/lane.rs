//! One 128-bit lane with PCLMULQDQ (and SSSE3): the one-lane path of [`crc32`] and
//! [`crc32_after`], and the steps every kernel ends with: a lane carried onto the next
//! ([`fold128`]), the last `n < 16` bytes joined to it ([`with_tail_lane`], [`with_tail`])
//! and the reduction to 32 bits ([`reduce`]).
//!
//! [`crc32`]: super::crc32
//! [`crc32_after`]: super::crc32_after

use std::arch::x86_64::*;

use super::constants::{K128, K64, MU, POLY};
use super::MIN_LANE_LEN;

/// `pshufb` masks for the last `n < 16` bytes of a message (a mask byte with its top bit set
/// writes a zero): the 16 bytes at `n` move a lane's first `n` bytes to its top and zero the
/// rest; the 16 at `16 + n` move its last `16 - n` bytes to its bottom and zero the rest; the
/// 16 at `32 - n` move its last `n` bytes to its bottom and zero the rest.
pub(super) const TAIL_SHUFFLE: [u8; 48] = {
    let mut t = [0x80u8; 48];
    let mut i = 16;
    while i < 32 {
        t[i] = (i - 16) as u8;
        i += 1;
    }
    t
};

/// [`crc32`](super::crc32)'s one-lane path: `data.len() >= 16`.
#[target_feature(enable = "pclmulqdq,ssse3,sse2")]
pub(super) fn lanes_of(crc: u32, data: &[u8]) -> u32 {
    let (first, rest) = data.split_at(MIN_LANE_LEN);
    // SAFETY: `first` has 16 readable bytes.
    lanes(crc, unsafe { _mm_loadu_si128(first.as_ptr().cast()) }, rest, data)
}

/// [`crc32_after`](super::crc32_after) on the one-lane path, the words passed in registers.
#[target_feature(enable = "pclmulqdq,ssse3,sse2")]
pub(super) fn lanes_after(crc: u32, lo: u64, hi: u64, data: &[u8]) -> u32 {
    lanes(crc, _mm_set_epi64x(hi as i64, lo as i64), data, data)
}

/// The CRC of the 16 bytes of `first` followed by `rest`, continued from `crc`: one lane
/// carried forward 16 bytes at a time, then the tail and the reduction. `ending` is a slice
/// of the message in memory that ends where `rest` does: when it holds 16 bytes or more, the
/// tail is taken from its last 16 in a register ([`with_tail_lane`]).
#[target_feature(enable = "pclmulqdq,ssse3,sse2")]
#[inline]
fn lanes(crc: u32, first: __m128i, rest: &[u8], ending: &[u8]) -> u32 {
    let mut lane = _mm_xor_si128(first, _mm_cvtsi32_si128(!crc as i32));
    let mut chunks = rest.chunks_exact(16);
    for chunk in &mut chunks {
        // SAFETY: each chunk has 16 readable bytes.
        lane = fold128(lane, unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) });
    }
    let tail = chunks.remainder();
    let n = tail.len();
    match ending.len().checked_sub(16) {
        Some(from) if n > 0 => {
            // The tail is the top `n` of the last 16 bytes; moved down to the lane's bottom.
            let down = &TAIL_SHUFFLE[32 - n..48 - n];
            // SAFETY: 16 bytes of `ending` (`from + 16` is its length) and of the constant.
            let (last, down) = unsafe {
                (
                    _mm_loadu_si128(ending[from..].as_ptr().cast()),
                    _mm_loadu_si128(down.as_ptr().cast()),
                )
            };
            !reduce(with_tail_lane(lane, _mm_shuffle_epi8(last, down), n))
        }
        _ => !reduce(with_tail(lane, tail)),
    }
}

/// The lane `x` carried 128 bits forward onto `next`.
#[target_feature(enable = "pclmulqdq,sse2")]
#[inline]
pub(super) fn fold128(x: __m128i, next: __m128i) -> __m128i {
    let k = _mm_set_epi64x(K128.1 as i64, K128.0 as i64);
    let lo = _mm_clmulepi64_si128::<0x00>(x, k);
    let hi = _mm_clmulepi64_si128::<0x11>(x, k);
    _mm_xor_si128(_mm_xor_si128(lo, hi), next)
}

/// [`with_tail`] with the tail in a register (its `n < 16` bytes low, zeros above): the same
/// two lanes built by byte shuffles instead of a store and two overlapping loads, which
/// would wait for the store to complete.
#[target_feature(enable = "pclmulqdq,ssse3,sse2")]
#[inline]
pub(super) fn with_tail_lane(lane: __m128i, tail: __m128i, n: usize) -> __m128i {
    debug_assert!(n < 16);
    if n == 0 {
        return lane;
    }
    let up = &TAIL_SHUFFLE[n..n + 16];
    let down = &TAIL_SHUFFLE[16 + n..32 + n];
    // SAFETY: each slice is 16 bytes of a live constant (the slicing checked the bounds).
    let (up, down) =
        unsafe { (_mm_loadu_si128(up.as_ptr().cast()), _mm_loadu_si128(down.as_ptr().cast())) };
    // Zeros, then the lane's first n bytes; the lane's last 16 - n bytes, then the tail.
    let front = _mm_shuffle_epi8(lane, up);
    let back = _mm_or_si128(_mm_shuffle_epi8(lane, down), _mm_shuffle_epi8(tail, up));
    fold128(front, back)
}

/// `lane` followed by the `tail.len() < 16` bytes `tail`, as one lane standing for the same
/// message (under a zero state): the last 16 of those bytes, onto which the first
/// `tail.len()` are carried 128 bits forward, zero-extended in front to a lane (leading zero
/// bits leave a zero state zero).
#[target_feature(enable = "pclmulqdq,sse2")]
#[inline]
fn with_tail(lane: __m128i, tail: &[u8]) -> __m128i {
    let n = tail.len();
    debug_assert!(n < 16);
    if n == 0 {
        return lane;
    }
    // Zeros, the lane, the tail: the two lanes are this buffer's bytes at `n` and `16 + n`.
    let mut buf = [0u8; 48];
    buf[32..32 + n].copy_from_slice(tail);
    // SAFETY: the store covers `buf[16..32]` and the loads `buf[n..n + 16]` and
    // `buf[16 + n..32 + n]`, all inside the local 48-byte buffer since `n < 16`.
    let (front, back) = unsafe {
        _mm_storeu_si128(buf.as_mut_ptr().add(16).cast(), lane);
        (
            _mm_loadu_si128(buf.as_ptr().add(n).cast()),
            _mm_loadu_si128(buf.as_ptr().add(16 + n).cast()),
        )
    };
    fold128(front, back)
}

/// The CRC state (crc32fast's, inverted) of the message `x` stands for under a zero state:
/// its low 64 bits carried onto the high 64, the low 32 of those onto the rest, and the
/// remaining 64 bits reduced modulo `P` by Barrett's method (as Linux's crc32-pclmul does).
#[target_feature(enable = "pclmulqdq,sse2")]
#[inline]
pub(super) fn reduce(x: __m128i) -> u32 {
    let low32 = _mm_set_epi32(0, 0, 0, -1);
    let k = _mm_set_epi64x(K128.1 as i64, K128.0 as i64);
    let x = _mm_xor_si128(_mm_clmulepi64_si128::<0x10>(x, k), _mm_srli_si128::<8>(x));
    let k64 = _mm_set_epi64x(0, K64 as i64);
    let x = _mm_xor_si128(
        _mm_clmulepi64_si128::<0x00>(_mm_and_si128(x, low32), k64),
        _mm_srli_si128::<4>(x),
    );
    let barrett = _mm_set_epi64x(MU as i64, POLY as i64);
    let q = _mm_clmulepi64_si128::<0x10>(_mm_and_si128(x, low32), barrett);
    let x = _mm_xor_si128(x, _mm_clmulepi64_si128::<0x00>(_mm_and_si128(q, low32), barrett));
    _mm_cvtsi128_si32(_mm_srli_si128::<4>(x)) as u32
}

#[cfg(test)]
mod tests {
    use super::super::has_pclmulqdq;
    use super::*;
    use crate::crc::tests::{bytes, reference};

    /// The one-lane path, which `crc32` gives only 16 to 63 bytes on a CPU with a wide
    /// kernel, called directly over the lengths it serves anywhere.
    #[test]
    fn the_one_lane_path_equals_crc32fast() {
        if !has_pclmulqdq() {
            return;
        }
        let data = bytes(400, 5);
        for len in MIN_LANE_LEN..=300 {
            for skew in [0, 1, 7, 16, 33, 63] {
                let input = &data[skew..skew + len];
                for crc in [0, 0xFFFF_FFFF, 0x1234_5678] {
                    // SAFETY: the CPU has PCLMULQDQ and SSSE3 (checked); `input` has 16 bytes
                    // or more.
                    let got = unsafe { lanes_of(crc, input) };
                    assert_eq!(got, reference(crc, input), "len {len} skew {skew}");
                }
            }
        }
    }
}
