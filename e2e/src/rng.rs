//! A small deterministic random generator (`SplitMix64`), so that a workload is the same
//! for a given seed on every machine and in every process of one benchmark run.

/// `SplitMix64`: fast, statistically sound for workloads, and fully reproducible.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift: unbiased enough for workloads, no division.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..hi` with two decimals, as gateways usually send coordinates.
    pub fn coordinate(&mut self, lo: f64, hi: f64) -> f64 {
        let cents = self.below(((hi - lo) * 100.0) as u64);
        lo + cents as f64 / 100.0
    }
}
