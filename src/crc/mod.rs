//! CRC-32 (the IEEE polynomial, as crc32fast computes it): of a byte slice ([`crc32`]), of a
//! record's head whose first 16 bytes arrive as two words ([`crc32_after`]), and fused with
//! the optimistic reader's volatile copy out of shared memory ([`copy_crc32`], which returns
//! `None` where no kernel takes the length, and the caller copies and computes the CRC
//! itself).
//!
//! One backend is compiled, chosen once here by the target, and each exports those names:
//! - `x86_64`: carry-less multiplication, the kernel picked per call from the features
//!   detected once at run time: over 512-bit registers with VPCLMULQDQ and AVX-512 (F, BW, VL)
//!   (`x86_64/zmm.rs`), or 256-bit ones with VPCLMULQDQ and AVX2 (`x86_64/ymm.rs`), for inputs
//!   of 64 bytes or more; over one 128-bit lane with PCLMULQDQ and SSSE3 (`x86_64/lane.rs`)
//!   for shorter inputs from 16 bytes (up to 127 where no wide kernel runs) and for
//!   `crc32_after`; crc32fast for the rest, and on CPUs without those features.
//! - `portable`, everywhere else: crc32fast, and no fused copy.
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
//! of registers (through a stack buffer only for a head whose id is shorter than 16 bytes),
//! and the lane is reduced to 32 bits by Barrett's method. The constants
//! (`x86_64/constants.rs`) are checked against the polynomial by its tests.
//!
//! The tests check every function against crc32fast from three starting CRCs: [`crc32`] and
//! [`copy_crc32`] for every length up to 1,300 bytes at six source alignments (the copy also
//! for writing exactly its bytes), [`crc32_after`] up to 300, and both with the input's and
//! the output's last byte against an inaccessible page (`tests.rs`); on x86_64 also the
//! one-lane path up to 300 bytes at six alignments, and each wide kernel the CPU runs, called
//! directly, the same ways (`x86_64/tests.rs`). On a CPU without the features they check the
//! fallback.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as backend;

#[cfg(not(target_arch = "x86_64"))]
mod portable;
#[cfg(not(target_arch = "x86_64"))]
use portable as backend;

#[cfg(test)]
use backend::fuses;
pub(crate) use backend::{copy_crc32, crc32, crc32_after};

/// [`crc32`] by crc32fast alone: the portable backend, and the x86_64 one's fallback.
fn crc32fast_of(crc: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(data);
    h.finalize()
}

/// [`crc32_after`] by crc32fast alone: the portable backend, and the x86_64 one's fallback.
fn crc32fast_after(crc: u32, first: [u64; 2], data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(&first[0].to_ne_bytes());
    h.update(&first[1].to_ne_bytes());
    h.update(data);
    h.finalize()
}

#[cfg(test)]
mod tests;
