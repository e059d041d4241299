// SPDX-License-Identifier: MIT
//! The seeded generator of the guest fuzzer and the soak test: xorshift64*,
//! small, and the same sequence on every machine, so a printed seed replays
//! a run.

/// xorshift64*, seeded.
pub struct Rng(u64);

impl Rng {
    /// The generator of `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough below `n` (> 0) for test traffic.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
