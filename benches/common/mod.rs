//! Helpers shared by the benches.
#![allow(dead_code)] // each bench uses its own part

pub mod summary;

/// `0..n` in a fixed shuffled order (xorshift Fisher-Yates, the same every run).
pub fn shuffled_indexes(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// `n` session ids in a shuffled order: requests arrive for random sessions, and walking
/// keys in insertion order would let a map's heap allocations be read sequentially.
pub fn shuffled_keys(n: usize) -> Vec<String> {
    shuffled_indexes(n).into_iter().map(|i| format!("{i:032x}")).collect()
}
