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

/// Runs `ours` and `theirs` in alternating batches of `batch` operations, `rounds` times,
/// starting with a different one each round: (median ns per operation of ours, of theirs,
/// median of the per-round ratios theirs/ours). On a shared, noisy machine, the two sides
/// of one round see the same neighbours, which criterion's benchmarks, minutes apart, do not.
pub fn interleave(
    rounds: usize,
    batch: usize,
    mut ours: impl FnMut(),
    mut theirs: impl FnMut(),
) -> (f64, f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        for _ in 0..batch {
            f();
        }
        start.elapsed().as_nanos() as f64 / batch as f64
    };
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (x, y) = if round % 2 == 0 {
            let x = time(&mut ours);
            (x, time(&mut theirs))
        } else {
            let y = time(&mut theirs);
            (time(&mut ours), y)
        };
        a.push(x);
        b.push(y);
        ratios.push(y / x);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(a), median(b), median(ratios))
}
