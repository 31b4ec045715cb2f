//! Each wide kernel this CPU runs, called directly (the entry points use only the widest).

use super::features::{features, FOLDS, FOLDS_YMM};
use super::{folded, Width, MIN_SIMD_LEN};
use crate::crc::tests::{bytes, reference, Guarded};

/// The wide kernels this CPU runs, each of them, whichever [`wide`](super::wide) prefers.
fn kernels() -> Vec<Width> {
    let found = features();
    [(FOLDS, Width::Zmm), (FOLDS_YMM, Width::Ymm)]
        .into_iter()
        .filter(|&(bit, _)| found & bit != 0)
        .map(|(_, width)| width)
        .collect()
}

/// Each wide kernel against crc32fast at every length it takes up to 1,300 bytes, six source
/// alignments and three starting CRCs: alone, and fused with a copy that writes exactly its
/// bytes.
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
                    // SAFETY: the CPU runs `width` (`kernels`); `input` is readable for `len`
                    // bytes, and nothing is written without COPY.
                    let got = unsafe { folded::<false>(width, src, null, len, start) };
                    assert_eq!(got, want, "{width:?} len {len} skew {skew}");
                    let mut out = vec![0xEEu8; len + 8];
                    // SAFETY: as above, and `out` is writable for `len` bytes, distinct.
                    let got = unsafe { folded::<true>(width, src, out.as_mut_ptr(), len, start) };
                    assert_eq!(got, want, "{width:?} copy len {len} skew {skew}");
                    assert_eq!(&out[..len], input, "{width:?} len {len} skew {skew}");
                    assert!(out[len..].iter().all(|&b| b == 0xEE), "wrote past the end");
                }
            }
        }
    }
}

/// Each wide kernel reads only its input, and with `COPY` writes only its output, at every
/// length with the input's and the output's last byte against an inaccessible page: the tail
/// loads and stores touch nothing past them (a fault would kill the test).
#[test]
fn each_wide_kernel_touches_nothing_past_its_ranges() {
    let (src, dst) = (Guarded::new(), Guarded::new());
    let data = bytes(1_300, 9);
    for len in MIN_SIMD_LEN..=data.len().min(src.page) {
        let input = src.end(len);
        // SAFETY: `len` bytes at the end of the accessible page, and `data` has `len`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), input, len) };
        // SAFETY: the `len` bytes just written, not written while this slice lives.
        let input = unsafe { std::slice::from_raw_parts(input, len) };
        let out = dst.end(len);
        for width in kernels() {
            // SAFETY: the CPU runs `width` (`kernels`); `input` has `len` readable bytes.
            let crc = unsafe { folded::<false>(width, input.as_ptr(), out, len, 7) };
            assert_eq!(crc, reference(7, input), "{width:?} len {len}");
            // SAFETY: `out` has `len` writable bytes (the end of the accessible page); then as
            // above, and `out` is in another mapping. Refilled first, so that a store the
            // kernel skipped shows.
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
