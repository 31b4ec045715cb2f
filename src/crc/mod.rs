//! CRC-32 (the IEEE polynomial, as crc32fast computes it) with carry-less multiplication:
//! over wide registers with VPCLMULQDQ, alone ([`crc32`]) or fused with the optimistic
//! reader's volatile copy out of shared memory ([`copy_crc32`]), for inputs of
//! [`MIN_SIMD_LEN`] bytes or more: 512-bit registers on x86_64 CPUs with AVX-512 (F, BW, VL)
//! ([`fold`]), 256-bit ones on CPUs with AVX2 but not AVX-512, such as AMD's Zen 3 and Intel's
//! client cores from Alder Lake ([`fold_ymm`]); over one 128-bit lane with PCLMULQDQ (and
//! SSSE3) for shorter inputs from 16 bytes (up to 127 on a CPU that runs no wide kernel,
//! [`crc32`]) and for a record's head, whose first 16 bytes arrive as two words
//! ([`crc32_after`]); crc32fast everywhere else.
//!
//! The method is the folding of Intel's "Fast CRC Computation for Generic Polynomials Using
//! PCLMULQDQ" (Gopal et al., 2009), in its bit-reflected form: each 128-bit lane of message
//! bytes `a` is carried `D` bits forward, onto the lane `b` that lies `D` bits later, as
//! `b ^ clmul(a.lo, k(D + 32)) ^ clmul(a.hi, k(D - 32))`, where `k(e)` is `x^e mod P`,
//! bit-reflected and shifted left by one. That keeps the CRC of the whole message unchanged
//! while it shortens; four registers (16 lanes of 512-bit ones, 8 of 256-bit ones) fold 256
//! (128) bytes forward per round, then collapse into one register (a shorter input starts in
//! one), whose remaining whole blocks fold onto it, and the register collapses into one lane.
//! The last `n < 16` bytes join that lane as the paper's partial block does, by byte shuffles
//! of registers ([`with_tail_lane`]; through a stack buffer, [`with_tail`], only for a head
//! whose id is shorter than 16 bytes), and the lane is reduced to 32 bits by Barrett's method
//! ([`reduce`]). The constants are checked against the polynomial by
//! `tests::fold_constants_follow_from_the_polynomial`.
//!
//! The tests check every function against crc32fast from three starting CRCs: [`crc32`]
//! and [`copy_crc32`] for every length up to 1,300 bytes at six source alignments (the copy
//! also for writing exactly its bytes), the one-lane path up to 300 bytes at six alignments,
//! [`crc32_after`] up to 300; both wide kernels, each called directly where the CPU runs it,
//! the same way; and the wide entry points with the input's and the output's last byte against
//! an inaccessible page. On a CPU without the features they check the fallback.
// Off x86_64 only the crc32fast fallback is compiled; the constants are unused there.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Shortest input the wide kernels take: one 512-bit register's worth.
pub(crate) const MIN_SIMD_LEN: usize = 64;

/// `k(D + 32)` and `k(D - 32)` for a fold distance of `D` bits.
const K128: (u64, u64) = (0x1_7519_97d0, 0x0_ccaa_009e);
const K256: (u64, u64) = (0x0_f1da_05aa, 0x1_5a54_6366);
const K384: (u64, u64) = (0x0_3db1_ecdc, 0x1_7435_9406);
const K512: (u64, u64) = (0x1_5444_2bd4, 0x1_c6e4_1596);
const K768: (u64, u64) = (0x0_df06_8dc2, 0x1_8cb4_4e58);
const K1024: (u64, u64) = (0x1_e88e_f372, 0x1_4a7f_e880);
const K1536: (u64, u64) = (0x1_821d_8bc0, 0x1_2e95_8ac4);
const K2048: (u64, u64) = (0x1_1542_778a, 0x1_322d_1430);
/// `k(64)`, for the last 32-bit step of [`reduce`].
const K64: u64 = 0x1_63cd_6124;
/// Barrett's constants for [`reduce`], 33 bits each and bit-reflected: `⌊x^64 / P⌋` and `P`.
const MU: u64 = 0x1_f701_1641;
const POLY: u64 = 0x1_db71_0641;

/// Shortest input [`crc32`] gives the one-lane path (one 16-byte lane and no table).
const MIN_LANE_LEN: usize = 16;
/// Shortest input crc32fast folds with PCLMULQDQ itself (four lanes at a time); below it,
/// it runs a table, which the one-lane path beats.
const CRC32FAST_FOLDS: usize = 128;

/// The CRC-32 of `data`, continued from the CRC `crc` (0 to start afresh), exactly as
/// `crc32fast::Hasher::new_with_initial(crc)` would compute it.
pub(crate) fn crc32(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(width) = wide(data.len()) {
            // SAFETY: the CPU runs `width`'s kernel (`wide`); `data` is a live slice of
            // `data.len()` readable bytes, and no bytes are written (no `dst`).
            return unsafe {
                folded::<false>(width, data.as_ptr(), std::ptr::null_mut(), data.len(), crc)
            };
        }
        if (MIN_LANE_LEN..CRC32FAST_FOLDS).contains(&data.len()) && has_pclmulqdq() {
            // SAFETY: the CPU has PCLMULQDQ and SSSE3 (detected, `has_pclmulqdq`); SSE2 is
            // in the x86_64 baseline.
            return unsafe { lanes_of(crc, data) };
        }
    }
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(data);
    h.finalize()
}

/// The CRC-32 of the 16 bytes of `first` (each word in native byte order) followed by
/// `data`, continued from `crc`: [`crc32`] of their concatenation, without the caller
/// writing the words to memory first (a wide load of narrower stores just made would wait
/// for them to retire).
pub(crate) fn crc32_after(crc: u32, first: [u64; 2], data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if has_pclmulqdq() {
        // SAFETY: the CPU has PCLMULQDQ and SSSE3 (detected, `has_pclmulqdq`); SSE2 is in
        // the x86_64 baseline.
        return unsafe { lanes_after(crc, first[0], first[1], data) };
    }
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(&first[0].to_ne_bytes());
    h.update(&first[1].to_ne_bytes());
    h.update(data);
    h.finalize()
}

/// Whether [`copy_crc32`] takes `len` bytes on this CPU (and [`crc32`] a wide kernel).
#[cfg(test)]
pub(crate) fn fuses(len: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return wide(len).is_some();
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// A wide kernel's register width.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Width {
    /// 512 bits: [`fold`].
    Zmm,
    /// 256 bits: [`fold_ymm`].
    Ymm,
}

/// The widest kernel this CPU runs for `len` bytes: none under [`MIN_SIMD_LEN`].
#[cfg(target_arch = "x86_64")]
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

/// [`fold`] or [`fold_ymm`], as `width` says.
///
/// # Safety
/// The CPU runs `width`'s kernel; `src`, `dst` and `len` are as that kernel requires.
#[cfg(target_arch = "x86_64")]
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
            Width::Zmm => fold::<COPY>(src, dst, len, crc),
            Width::Ymm => fold_ymm::<COPY>(src, dst, len, crc),
        }
    }
}

/// Copies `len` bytes from `src` to `dst` with loads the compiler may neither elide, merge
/// nor repeat (as `read_volatile`'s), and returns their CRC-32 continued from `crc()`;
/// `None`, nothing copied and `crc` not called, unless [`fuses`]`(len)` (decided once here,
/// so that the caller computes the CRC to continue only when a kernel will take it).
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
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU runs `width`'s kernel (`wide`); the ranges are as the caller promises.
    return wide(len).map(|width| unsafe { folded::<true>(width, src, dst, len, crc()) });
    #[cfg(not(target_arch = "x86_64"))]
    return {
        let _ = (src, dst, len, crc);
        None
    };
}

/// Whether this CPU runs [`lanes`]: PCLMULQDQ, and SSSE3 for [`with_tail_lane`] (every CPU
/// with the first has the second).
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_pclmulqdq() -> bool {
    features() & LANES != 0
}

/// The bits of [`FEATURES`]: detection has run; [`fold`] runs (AVX-512 F, BW and VL, AVX2,
/// SSSE3, VPCLMULQDQ, PCLMULQDQ); [`lanes`] runs; [`fold_ymm`] runs (AVX2, AVX, SSSE3,
/// VPCLMULQDQ, PCLMULQDQ).
#[cfg(target_arch = "x86_64")]
const DETECTED: u8 = 1;
#[cfg(target_arch = "x86_64")]
const FOLDS: u8 = 2;
#[cfg(target_arch = "x86_64")]
const LANES: u8 = 4;
#[cfg(target_arch = "x86_64")]
const FOLDS_YMM: u8 = 8;

/// The features this CPU has, detected once: one relaxed load per CRC afterwards, where
/// asking `is_x86_feature_detected!` for each of seven features (nine now) took 2 % of a `get`.
#[cfg(target_arch = "x86_64")]
static FEATURES: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

#[cfg(target_arch = "x86_64")]
#[inline]
fn features() -> u8 {
    match FEATURES.load(std::sync::atomic::Ordering::Relaxed) {
        0 => detect(),
        known => known,
    }
}

/// Detects the features and caches them (two threads may both detect; they agree).
#[cfg(target_arch = "x86_64")]
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
    FEATURES.store(found, std::sync::atomic::Ordering::Relaxed);
    found
}

/// The 64 bytes at `p`, by one `vmovdqu64` in inline assembly: not `pure`, so the compiler
/// must perform it exactly once where it stands, as for `read_volatile` (which would demand
/// 64-byte alignment).
///
/// # Safety
/// `p..p + 64` is readable; the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_once(p: *const u8) -> __m512i {
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

/// The 16 bytes at `p`, by one `vmovdqu` in inline assembly, executed exactly once as
/// [`load_once`]'s 64 (`read_volatile` of a vector would demand 16-byte alignment).
///
/// # Safety
/// `p..p + 16` is readable; the CPU has AVX (every CPU that runs [`fold`] has).
#[cfg(target_arch = "x86_64")]
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
/// `src + at..src + at + 16` is readable; with `COPY`, `dst + at..dst + at + 16` is writable
/// and overlaps no other live reference; the CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn lane16<const COPY: bool>(src: *const u8, dst: *mut u8, at: usize) -> __m128i {
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

/// The 32 bytes at `p`, by one `vmovdqu` in inline assembly, executed exactly once as
/// [`load_once`]'s 64.
///
/// # Safety
/// `p..p + 32` is readable; the CPU has AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn load32_once(p: *const u8) -> __m256i {
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

/// The `n < 16` bytes at `p` in the low bytes of a lane, zeros above them, by one
/// zero-masking `vmovdqu8` in inline assembly, executed exactly once as [`load_once`]'s 64.
/// The mask keeps the load to those `n` bytes: nothing past them is read.
///
/// # Safety
/// `p..p + n` is readable; the CPU has AVX-512BW and AVX-512VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn load_tail_once(p: *const u8, n: usize) -> __m128i {
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
fn tail_mask(n: usize) -> u16 {
    debug_assert!(n < 16);
    (1u16 << n) - 1
}

/// `pshufb` masks for the last `n < 16` bytes of a message (a mask byte with its top bit set
/// writes a zero): the 16 bytes at `n` move a lane's first `n` bytes to its top and zero the
/// rest; the 16 at `16 + n` move its last `16 - n` bytes to its bottom and zero the rest; the
/// 16 at `32 - n` move its last `n` bytes to its bottom and zero the rest.
#[cfg(target_arch = "x86_64")]
const TAIL_SHUFFLE: [u8; 48] = {
    let mut t = [0x80u8; 48];
    let mut i = 16;
    while i < 32 {
        t[i] = (i - 16) as u8;
        i += 1;
    }
    t
};

/// [`with_tail`] with the tail in a register (its `n < 16` bytes low, zeros above): the same
/// two lanes built by byte shuffles instead of a store and two overlapping loads, whose wait
/// for the store cost about 10 ns a read.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,ssse3,sse2")]
#[inline]
fn with_tail_lane(lane: __m128i, tail: __m128i, n: usize) -> __m128i {
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

/// The four 16-byte lanes of `x` each carried forward by the distance of `k` onto `next`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,vpclmulqdq")]
#[inline]
fn fold512(x: __m512i, next: __m512i, k: __m512i) -> __m512i {
    let lo = _mm512_clmulepi64_epi128::<0x00>(x, k);
    let hi = _mm512_clmulepi64_epi128::<0x11>(x, k);
    _mm512_ternarylogic_epi64::<0x96>(lo, hi, next)
}

/// The two 16-byte lanes of `x` each carried forward by the distance of `k` onto `next`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,vpclmulqdq")]
#[inline]
fn fold256(x: __m256i, next: __m256i, k: __m256i) -> __m256i {
    let lo = _mm256_clmulepi64_epi128::<0x00>(x, k);
    let hi = _mm256_clmulepi64_epi128::<0x11>(x, k);
    _mm256_xor_si256(_mm256_xor_si256(lo, hi), next)
}

/// The lane `x` carried 128 bits forward onto `next`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse2")]
#[inline]
fn fold128(x: __m128i, next: __m128i) -> __m128i {
    let k = _mm_set_epi64x(K128.1 as i64, K128.0 as i64);
    let lo = _mm_clmulepi64_si128::<0x00>(x, k);
    let hi = _mm_clmulepi64_si128::<0x11>(x, k);
    _mm_xor_si128(_mm_xor_si128(lo, hi), next)
}

/// `lane` followed by the `tail.len() < 16` bytes `tail`, as one lane standing for the same
/// message (under a zero state): the last 16 of those bytes, onto which the first
/// `tail.len()` are carried 128 bits forward, zero-extended in front to a lane (leading zero
/// bits leave a zero state zero).
#[cfg(target_arch = "x86_64")]
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,sse2")]
#[inline]
fn reduce(x: __m128i) -> u32 {
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

/// [`crc32`]'s one-lane path: `data.len() >= 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,ssse3,sse2")]
fn lanes_of(crc: u32, data: &[u8]) -> u32 {
    let (first, rest) = data.split_at(MIN_LANE_LEN);
    // SAFETY: `first` has 16 readable bytes.
    lanes(crc, unsafe { _mm_loadu_si128(first.as_ptr().cast()) }, rest, data)
}

/// [`crc32_after`] on the one-lane path, the words passed in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "pclmulqdq,ssse3,sse2")]
fn lanes_after(crc: u32, lo: u64, hi: u64, data: &[u8]) -> u32 {
    lanes(crc, _mm_set_epi64x(hi as i64, lo as i64), data, data)
}

/// The CRC of the 16 bytes of `first` followed by `rest`, continued from `crc`: one lane
/// carried forward 16 bytes at a time, then the tail and the reduction. `ending` is a slice
/// of the message in memory that ends where `rest` does: when it holds 16 bytes or more, the
/// tail is taken from its last 16 in a register ([`with_tail_lane`]).
#[cfg(target_arch = "x86_64")]
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

/// Both keys of a fold distance in every lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn keys(k: (u64, u64)) -> __m512i {
    _mm512_broadcast_i32x4(_mm_set_epi64x(k.1 as i64, k.0 as i64))
}

/// The CRC of the `len >= MIN_SIMD_LEN` bytes at `src`, continued from `crc`; with `COPY`,
/// also stores them to `dst`, reading each source byte once (by [`load_once`],
/// [`load16_once`] and [`load_tail_once`]).
///
/// # Safety
/// - The CPU has AVX-512F, AVX-512BW, AVX-512VL, AVX2, SSSE3, VPCLMULQDQ and PCLMULQDQ.
/// - `src..src + len` is readable; with `COPY`, `dst..dst + len` is writable and overlaps no
///   other live reference (without it, `dst` is not used).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,vpclmulqdq,pclmulqdq,ssse3,sse2")]
unsafe fn fold<const COPY: bool>(src: *const u8, dst: *mut u8, len: usize, crc: u32) -> u32 {
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

/// Both keys of a fold distance in both lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn keys_ymm(k: (u64, u64)) -> __m256i {
    _mm256_broadcastsi128_si256(_mm_set_epi64x(k.1 as i64, k.0 as i64))
}

/// [`fold`] over 256-bit registers, for CPUs with VPCLMULQDQ and AVX2 but not AVX-512.
/// Without AVX-512BW's masked loads and stores, the last `n = len % 16` bytes come from the
/// message's last 16, loaded (and, with `COPY`, stored) first: the bytes of those 16 before
/// the last `n` are then loaded again by the blocks, whose values the CRC takes and whose
/// stores overwrite them in `dst`, so that the copy and the CRC agree on every byte even while
/// another process writes the source.
///
/// # Safety
/// - The CPU has AVX2, AVX, SSSE3, VPCLMULQDQ and PCLMULQDQ.
/// - `src..src + len` is readable; with `COPY`, `dst..dst + len` is writable and overlaps no
///   other live reference (without it, `dst` is not used).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx,vpclmulqdq,pclmulqdq,ssse3,sse2")]
unsafe fn fold_ymm<const COPY: bool>(src: *const u8, dst: *mut u8, len: usize, crc: u32) -> u32 {
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
        let k1024 = keys_ymm(K1024);
        while at + 128 <= len {
            for (i, r) in x.iter_mut().enumerate() {
                *r = fold256(*r, block(at + 32 * i), k1024);
            }
            at += 128;
        }
        // Collapse the four registers, each carried onto the last by its own distance.
        acc = fold256(x[2], x[3], keys_ymm(K256));
        acc = fold256(x[1], acc, keys_ymm(K512));
        acc = fold256(x[0], acc, keys_ymm(K768));
    } else {
        acc = _mm256_xor_si256(block(0), state);
        at = 32;
    }
    let k256 = keys_ymm(K256);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(crc: u32, data: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new_with_initial(crc);
        h.update(data);
        h.finalize()
    }

    /// `x^e mod P` (P = 0x104C11DB7), bit-reflected, shifted left by one.
    fn k(e: u32) -> u64 {
        let mut r: u64 = 1;
        for _ in 0..e {
            r <<= 1;
            if r & (1 << 32) != 0 {
                r ^= 0x1_04C1_1DB7;
            }
        }
        u64::from((r as u32).reverse_bits()) << 1
    }

    /// The 33 low bits of `x`, bit-reflected.
    fn reflect33(x: u64) -> u64 {
        x.reverse_bits() >> 31
    }

    #[test]
    fn fold_constants_follow_from_the_polynomial() {
        let all = [(128, K128), (256, K256), (384, K384), (512, K512), (768, K768)];
        for (d, key) in all.into_iter().chain([(1024, K1024), (1536, K1536), (2048, K2048)]) {
            assert_eq!((k(d + 32), k(d - 32)), key, "distance {d}");
        }
        assert_eq!(k(64), K64);
        const P: u64 = 0x1_04C1_1DB7;
        assert_eq!(reflect33(P), POLY);
        // ⌊x^64 / P⌋ by long division over GF(2).
        let (mut rem, mut quot) = (1u128 << 64, 0u64);
        for shift in (0..=32).rev() {
            if rem & (1u128 << (32 + shift)) != 0 {
                rem ^= u128::from(P) << shift;
                quot |= 1 << shift;
            }
        }
        assert_eq!(reflect33(quot), MU);
    }

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn crc32_equals_crc32fast_for_every_length_and_alignment() {
        let data = bytes(1_400, 7);
        for len in 0..=1_300 {
            for skew in [0, 1, 7, 16, 33, 63] {
                let input = &data[skew..skew + len];
                for crc in [0, 0xFFFF_FFFF, 0x1234_5678] {
                    assert_eq!(crc32(crc, input), reference(crc, input), "len {len} skew {skew}");
                }
            }
        }
    }

    #[test]
    fn crc32_after_equals_crc32fast_of_the_words_then_the_bytes() {
        let data = bytes(300, 3);
        let first = [0x0123_4567_89AB_CDEF_u64, 0x0000_0400_0000_0020];
        for len in 0..=data.len() {
            let mut whole = first[0].to_ne_bytes().to_vec();
            whole.extend_from_slice(&first[1].to_ne_bytes());
            whole.extend_from_slice(&data[..len]);
            for crc in [0, 0xFFFF_FFFF, 0x1234_5678] {
                let got = crc32_after(crc, first, &data[..len]);
                assert_eq!(got, reference(crc, &whole), "len {len}");
            }
        }
    }

    /// The one-lane path, which `crc32` gives only 16 to 63 bytes on a CPU with a wide
    /// kernel, called directly over the lengths it serves anywhere.
    #[cfg(target_arch = "x86_64")]
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

    /// Two pages mapped readable and writable, the second then made inaccessible: a byte
    /// read or written past the first page faults.
    struct Guarded {
        base: *mut u8,
        page: usize,
    }

    impl Guarded {
        fn new() -> Guarded {
            // SAFETY: sysconf has no preconditions.
            let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
            // SAFETY: a fresh private anonymous mapping; the result is checked.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    2 * page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(base, libc::MAP_FAILED, "mmap");
            let base = base.cast::<u8>();
            // SAFETY: the second page of the mapping just made.
            let rc = unsafe { libc::mprotect(base.add(page).cast(), page, libc::PROT_NONE) };
            assert_eq!(rc, 0, "mprotect");
            Guarded { base, page }
        }

        /// The last `len <= page` bytes of the accessible page.
        fn end(&self, len: usize) -> *mut u8 {
            assert!(len <= self.page);
            // SAFETY: inside the first page.
            unsafe { self.base.add(self.page - len) }
        }
    }

    impl Drop for Guarded {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`, no longer used.
            unsafe { libc::munmap(self.base.cast(), 2 * self.page) };
        }
    }

    /// The wide kernels this CPU runs, each of them, whichever [`wide`] prefers.
    #[cfg(target_arch = "x86_64")]
    fn kernels() -> Vec<Width> {
        let found = features();
        [(FOLDS, Width::Zmm), (FOLDS_YMM, Width::Ymm)]
            .into_iter()
            .filter(|&(bit, _)| found & bit != 0)
            .map(|(_, width)| width)
            .collect()
    }

    /// The wide entry points, and each wide kernel called directly, read only their input
    /// and the fused copy writes only its output, at every length with the input's and the
    /// output's last byte against an inaccessible page: the tail loads and stores touch
    /// nothing past them (a fault would kill the test).
    #[test]
    fn the_wide_paths_touch_nothing_past_their_ranges() {
        let (src, dst) = (Guarded::new(), Guarded::new());
        let data = bytes(1_300, 9);
        for len in 0..=data.len().min(src.page) {
            let input = src.end(len);
            // SAFETY: `len` bytes at the end of the accessible page, and `data` has `len`.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), input, len) };
            // SAFETY: the `len` bytes just written, not written while this slice lives.
            let input = unsafe { std::slice::from_raw_parts(input, len) };
            assert_eq!(crc32(7, input), reference(7, input), "len {len}");
            let out = dst.end(len);
            // SAFETY: `input` readable and `out` writable for `len` bytes; distinct mappings.
            if let Some(crc) = unsafe { copy_crc32(input.as_ptr(), out, len, || 7) } {
                assert_eq!(crc, reference(7, input), "len {len}");
                // SAFETY: the `len` bytes just written.
                assert_eq!(unsafe { std::slice::from_raw_parts(out, len) }, input, "len {len}");
            }
            #[cfg(target_arch = "x86_64")]
            for width in kernels().into_iter().filter(|_| len >= MIN_SIMD_LEN) {
                // SAFETY: the CPU runs `width` (`kernels`); `input` has `len` readable bytes.
                let crc = unsafe { folded::<false>(width, input.as_ptr(), out, len, 7) };
                assert_eq!(crc, reference(7, input), "{width:?} len {len}");
                // SAFETY: `out` has `len` writable bytes (the end of the accessible page);
                // then as above, and `out` is in another mapping. Refilled first, so that a
                // store the kernel skipped shows.
                let crc = unsafe {
                    std::ptr::write_bytes(out, 0xEE, len);
                    folded::<true>(width, input.as_ptr(), out, len, 7)
                };
                assert_eq!(crc, reference(7, input), "{width:?} len {len}");
                // SAFETY: the `len` bytes just written.
                assert_eq!(unsafe { std::slice::from_raw_parts(out, len) }, input, "len {len}");
            }
        }
    }

    /// Each wide kernel this CPU runs, called directly (the entry points use only the widest),
    /// against crc32fast at every length it takes up to 1,300 bytes, six source alignments and
    /// three starting CRCs: alone, and fused with a copy that writes exactly its bytes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn each_wide_kernel_equals_crc32fast_and_copies_exactly() {
        let data = bytes(1_400, 13);
        for width in kernels() {
            for len in MIN_SIMD_LEN..=1_300 {
                for skew in [0, 1, 7, 16, 33, 63] {
                    let input = &data[skew..skew + len];
                    for start in [0, 0xFFFF_FFFF, 0x1234_5678] {
                        let want = reference(start, input);
                        let src = input.as_ptr();
                        let null = std::ptr::null_mut();
                        // SAFETY: the CPU runs `width` (`kernels`); `input` is readable for
                        // `len` bytes, and nothing is written without COPY.
                        let got = unsafe { folded::<false>(width, src, null, len, start) };
                        assert_eq!(got, want, "{width:?} len {len} skew {skew}");
                        let mut out = vec![0xEEu8; len + 8];
                        // SAFETY: as above, and `out` is writable for `len` bytes, distinct.
                        let got =
                            unsafe { folded::<true>(width, src, out.as_mut_ptr(), len, start) };
                        assert_eq!(got, want, "{width:?} copy len {len} skew {skew}");
                        assert_eq!(&out[..len], input, "{width:?} len {len} skew {skew}");
                        assert!(out[len..].iter().all(|&b| b == 0xEE), "wrote past the end");
                    }
                }
            }
        }
    }

    #[test]
    fn copy_crc32_copies_exactly_and_agrees_with_crc32fast() {
        let data = bytes(1_400, 11);
        for len in 0..=1_300 {
            for skew in [0, 1, 7, 16, 33, 63] {
                let input = &data[skew..skew + len];
                for start in [0, 0xFFFF_FFFF, 0x1234_5678] {
                    let mut out = vec![0xEEu8; len + 8];
                    // SAFETY: `input` is readable and `out` writable for `len` bytes; distinct.
                    let got =
                        unsafe { copy_crc32(input.as_ptr(), out.as_mut_ptr(), len, || start) };
                    match got {
                        Some(crc) => {
                            assert_eq!(crc, reference(start, input), "len {len} skew {skew}");
                            assert_eq!(&out[..len], input, "len {len} skew {skew}");
                            assert!(out[len..].iter().all(|&b| b == 0xEE), "wrote past the end");
                        }
                        None => assert!(!fuses(len), "len {len}"),
                    }
                }
            }
        }
    }
}
