//! The backend off x86_64: crc32fast for every input, and no fused copy.

/// The CRC-32 of `data`, continued from the CRC `crc` (0 to start afresh), exactly as
/// `crc32fast::Hasher::new_with_initial(crc)` would compute it.
pub(crate) fn crc32(crc: u32, data: &[u8]) -> u32 {
    super::crc32fast_of(crc, data)
}

/// The CRC-32 of the 16 bytes of `first` (each word in native byte order) followed by
/// `data`, continued from `crc`: [`crc32`] of their concatenation.
pub(crate) fn crc32_after(crc: u32, first: [u64; 2], data: &[u8]) -> u32 {
    super::crc32fast_after(crc, first, data)
}

/// The fused copy and CRC, which no kernel here provides: always `None`, nothing copied and
/// `crc` not called (the caller copies and computes the CRC itself).
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
    let _ = (src, dst, len, crc);
    None
}

/// Whether [`copy_crc32`] takes `len` bytes on this CPU: never.
#[cfg(test)]
pub(crate) fn fuses(len: usize) -> bool {
    let _ = len;
    false
}
