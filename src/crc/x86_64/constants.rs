//! The folding and reduction constants of the polynomial `P = 0x104C11DB7`, bit-reflected:
//! `k(e)` is `x^e mod P`, bit-reflected and shifted left by one; `tests` derives each from
//! `P`.

/// `k(D + 32)` and `k(D - 32)` for a fold distance of `D` bits.
pub(super) const K128: (u64, u64) = (0x1_7519_97d0, 0x0_ccaa_009e);
pub(super) const K256: (u64, u64) = (0x0_f1da_05aa, 0x1_5a54_6366);
pub(super) const K384: (u64, u64) = (0x0_3db1_ecdc, 0x1_7435_9406);
pub(super) const K512: (u64, u64) = (0x1_5444_2bd4, 0x1_c6e4_1596);
pub(super) const K768: (u64, u64) = (0x0_df06_8dc2, 0x1_8cb4_4e58);
pub(super) const K1024: (u64, u64) = (0x1_e88e_f372, 0x1_4a7f_e880);
pub(super) const K1536: (u64, u64) = (0x1_821d_8bc0, 0x1_2e95_8ac4);
pub(super) const K2048: (u64, u64) = (0x1_1542_778a, 0x1_322d_1430);
/// `k(64)`, for the last 32-bit step of [`reduce`](super::lane::reduce).
pub(super) const K64: u64 = 0x1_63cd_6124;
/// Barrett's constants for [`reduce`](super::lane::reduce), 33 bits each and bit-reflected:
/// `⌊x^64 / P⌋` and `P`.
pub(super) const MU: u64 = 0x1_f701_1641;
pub(super) const POLY: u64 = 0x1_db71_0641;

#[cfg(test)]
mod tests {
    use super::*;

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
}
