//! The crate-facing functions against crc32fast, whichever backend and kernel run them; and
//! the helpers the backends' own tests share.

use super::{copy_crc32, crc32, crc32_after, fuses};

/// The CRC-32 crc32fast computes of `data`, continued from `crc`.
pub(super) fn reference(crc: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(crc);
    h.update(data);
    h.finalize()
}

/// `len` pseudo-random bytes (xorshift) from `seed`.
pub(super) fn bytes(len: usize, seed: u64) -> Vec<u8> {
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

/// Two pages mapped readable and writable, the second then made inaccessible: a byte read or
/// written past the first page faults.
pub(super) struct Guarded {
    base: *mut u8,
    pub(super) page: usize,
}

impl Guarded {
    pub(super) fn new() -> Guarded {
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
    pub(super) fn end(&self, len: usize) -> *mut u8 {
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

#[test]
fn copy_crc32_copies_exactly_and_agrees_with_crc32fast() {
    let data = bytes(1_400, 11);
    for len in 0..=1_300 {
        for skew in [0, 1, 7, 16, 33, 63] {
            let input = &data[skew..skew + len];
            for start in [0, 0xFFFF_FFFF, 0x1234_5678] {
                let mut out = vec![0xEEu8; len + 8];
                // SAFETY: `input` is readable and `out` writable for `len` bytes; distinct.
                let got = unsafe { copy_crc32(input.as_ptr(), out.as_mut_ptr(), len, || start) };
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

/// [`crc32`] reads only its input, and [`copy_crc32`] only its input and writes only its
/// output, at every length with the input's and the output's last byte against an
/// inaccessible page: the wide kernels' tail loads and stores touch nothing past them (a
/// fault would kill the test). `x86_64::tests` does the same for each wide kernel the CPU
/// runs, not only the one the entry points pick.
#[test]
fn the_entry_points_touch_nothing_past_their_ranges() {
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
    }
}
