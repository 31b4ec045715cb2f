//! One shard's records, under its lock: the index of its keys (`index`), the blocks of its
//! data area (`alloc`), the records in them (`record`), the store operations on a locked
//! shard (`ops`), and its check and repair (`audit`). Each takes the `ShardGuard` as proof
//! that the lock is held, and reports shared memory found inconsistent as [`Corrupt`].

pub(crate) mod alloc;
pub(crate) mod audit;
mod corrupt;
pub(crate) mod index;
mod ops;
pub(crate) mod record;

pub(crate) use corrupt::Corrupt;
pub(crate) use ops::{
    clear, count_live, expire_all, expire_scan, find, for_each_live, get, peek, put, remove,
    shrink_index, touch, Expect, Freed, Hit, Removed, Scanned, Written,
};
