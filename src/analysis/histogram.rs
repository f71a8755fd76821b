//! Fixed-edge histograms with u64 counts (float counts saturate at 2^24: torch.histc's bug).

use serde::Serialize;

/// `counts.len()` equal-width bins over `[lo, hi]`; values equal to `hi` fall in the last bin.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Histogram {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
}

impl Histogram {
    /// An empty histogram of `bins` bins over `[lo, hi]`. A zero-width range is widened to a
    /// tiny positive width so bin arithmetic stays finite.
    pub fn new(lo: f64, hi: f64, bins: usize) -> Self {
        let hi = if hi > lo {
            hi
        } else {
            lo + f64::from(f32::MIN_POSITIVE)
        };
        Histogram {
            lo,
            hi,
            counts: vec![0; bins.max(1)],
        }
    }

    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    pub fn width(&self) -> f64 {
        (self.hi - self.lo) / self.counts.len() as f64
    }

    /// Left edge of bin `i`; `edge(bins())` is `hi`.
    pub fn edge(&self, i: usize) -> f64 {
        if i >= self.counts.len() {
            self.hi
        } else {
            self.lo + self.width() * i as f64
        }
    }

    pub fn centre(&self, i: usize) -> f64 {
        self.lo + self.width() * (i as f64 + 0.5)
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds finite values; values outside `[lo, hi]` are clamped into the end bins.
    pub fn add_values(&mut self, values: &[f32]) {
        self.add(values, false);
    }

    /// Adds `|v|` of finite values.
    pub fn add_abs_values(&mut self, values: &[f32]) {
        self.add(values, true);
    }

    fn add(&mut self, values: &[f32], abs: bool) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { self.add_avx2(values, abs) };
            return;
        }
        self.add_blocks(values, abs);
    }

    /// The same code compiled for AVX2 (same arithmetic, same bins).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn add_avx2(&mut self, values: &[f32], abs: bool) {
        self.add_blocks(values, abs);
    }

    /// Bin indices are computed a block at a time without branches (so that part vectorises),
    /// then counted; non-finite values get an out-of-range index and are skipped.
    #[inline(always)]
    fn add_blocks(&mut self, values: &[f32], abs: bool) {
        const BLOCK: usize = 256;
        let n = self.counts.len();
        let scale = n as f64 / (self.hi - self.lo);
        let last = (n - 1) as f64;
        let lo = self.lo;
        let mut idx = [0u32; BLOCK];
        for block in values.chunks(BLOCK) {
            for (slot, &v) in idx.iter_mut().zip(block) {
                let fin = v.abs() < f32::INFINITY;
                let x = if abs { v.abs() } else { v };
                let x = if fin { f64::from(x) } else { lo };
                let b = (x - lo) * scale;
                let b = if b < 0.0 { 0.0 } else { b };
                let b = if b > last { last } else { b };
                *slot = if fin { b as u32 } else { u32::MAX };
            }
            for &i in &idx[..block.len()] {
                if let Some(c) = self.counts.get_mut(i as usize) {
                    *c += 1;
                }
            }
        }
    }

    /// Adds another histogram with the same edges.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Sums groups of `factor` consecutive bins (exact: same edges every `factor` bins).
    pub fn coarsen(&self, factor: usize) -> Histogram {
        let factor = factor.max(1);
        Histogram {
            lo: self.lo,
            hi: self.hi,
            counts: self.counts.chunks(factor).map(|c| c.iter().sum()).collect(),
        }
    }

    /// Smallest bin index whose cumulative count reaches `rank` (1-based), i.e. the bin that
    /// holds the `rank`-th smallest value. `None` if the histogram holds fewer values.
    pub fn bin_of_rank(&self, rank: u64) -> Option<usize> {
        let mut acc = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= rank && rank > 0 {
                return Some(i);
            }
        }
        None
    }
}
