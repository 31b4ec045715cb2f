//! The shared-memory format, an ABI between every process attached to a segment: offsets,
//! sizes and the geometry derived from the configuration (`layout`), and the segment header
//! that records it (`header`). Arithmetic and byte encoding only: nothing here touches shared
//! memory. SAFETY.md, section 2, is the reference for both.

pub(crate) mod header;
pub mod layout;
