//! Per-tensor quantizers measured from per-bin sums rather than value by value.
//!
//! Pass 2 keeps, for each of 65536 bins over the bulk of the data (the mean ± 8 standard
//! deviations, within [min, max]; values beyond go to the end bins), the count, the smallest and
//! largest value and exact integer sums over the values' f32 keys (an order-preserving integer
//! image of the float, [`key`]). A per-tensor quantizer is a monotone step function
//! ([`Step`]); where its cell is the same at a bin's smallest and largest value it is the same
//! for every value in the bin, and that bin's error sum, reconstruction sum, clip counts and
//! largest error follow from the bin's sums and extremes ([`Engine::plan`]). Pass 3 then only
//! finds each value's bin (by pass 2's arithmetic) and revisits, value by value, the bins a
//! rounding or clipping boundary cuts ([`Engine::block`]).
//!
//! Exactness against the per-value path (`metrics`): the counts, clip counts, Σx² and the
//! largest error are the same numbers; Σ(x − x̂)² and Σx̂² are the same sums in another order
//! and grouping. Each bin's Σ(x − x̂)² is evaluated from exact integer sums with a relative
//! error below 2^-46 ([`bin_error`]); the bins are added in blocks of 256; revisited values
//! are summed per block of 2048 then per chunk, as the per-value path sums. So both paths lie
//! within about (2048 + 512 + chunks + 600)·2^-53 of the exact sum, and of each other within
//! 1e-12 relative for layers up to 2^30 values (`tests`).

use crate::calib::QParams;
#[cfg(target_arch = "x86_64")]
use crate::simd::{self, Avx2};

use super::metrics::{ErrorAccum, Prepared};
use super::options::Options;
use super::stats::Moments;

/// Bins of the sums.
pub const BINS: usize = 1 << 16;

/// The sums' range is the mean ± this many standard deviations (within [min, max]): the
/// narrower the bins, the fewer a quantizer's boundaries cut, and a quantizer's cells are
/// rarely wider than the bulk of the data.
const SPREAD: f64 = 8.0;

/// Largest share of a layer's values a quantizer may leave to be revisited and still be
/// measured from the bins (above it, the per-value path is the cheaper one).
pub const MAX_REVISITED_SHARE: f64 = 0.125;

/// Fewest finite values for which pass 2 keeps the bins: below it, setting the bins up (a sweep
/// of every bin per quantizer) costs more than measuring each value.
pub const MIN_VALUES: u64 = 1 << 21;

/// The bins' edges: `BINS` equal bins from `lo`, values beyond either end in the end bin.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    lo: f64,
    scale: f64,
    last: f64,
}

impl Grid {
    /// The grid of a layer whose pass 1 gave `m`, if pass 2 should keep the bins for it.
    pub fn of(opts: &Options, m: &Moments) -> Option<Grid> {
        if !opts.binned || m.n < MIN_VALUES {
            return None;
        }
        let (min, max) = (f64::from(m.min), f64::from(m.max));
        let sd = m.std();
        Grid::over(
            (m.mean - SPREAD * sd).max(min),
            (m.mean + SPREAD * sd).min(max),
        )
    }

    /// `BINS` bins over [lo, hi] (None if that is not a finite range); a range too narrow for
    /// its bins to be told apart is widened around lo (a constant layer).
    fn over(lo: f64, hi: f64) -> Option<Grid> {
        let width = |lo: f64, hi: f64| BINS as f64 / (hi - lo);
        let (lo, hi) = if width(lo, hi).is_finite() {
            (lo, hi)
        } else {
            (lo - lo.abs() - 1.0, lo + lo.abs() + 1.0)
        };
        let scale = width(lo, hi);
        (lo.is_finite() && scale.is_finite() && scale > 0.0).then_some(Grid {
            lo,
            scale,
            last: (BINS - 1) as f64,
        })
    }

    /// The bin of a finite x: `Histogram::add_blocks`' arithmetic.
    #[inline(always)]
    fn bin(&self, x: f64) -> usize {
        let b = (x - self.lo) * self.scale;
        let b = if b < 0.0 { 0.0 } else { b };
        (if b > self.last { self.last } else { b }) as usize
    }
}

/// The workers' sums merged (in any order: the merge is exact); None without any.
pub fn merge(sums: Vec<BinSums>) -> Option<Bins> {
    let mut it = sums.into_iter();
    let mut first = it.next()?;
    for s in it {
        first.merge(&s);
    }
    Some(Bins {
        grid: first.grid,
        cells: first.cells,
    })
}

/// An order-preserving u32 image of an f32 (−0 just below +0). Two floats of one sign whose
/// magnitudes share a spacing u differ by u times the difference of their keys.
#[inline(always)]
pub fn key(v: f32) -> u32 {
    let b = v.to_bits();
    b ^ ((((b as i32) >> 31) as u32) | 0x8000_0000)
}

/// The float of a key.
pub fn unkey(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 {
        k ^ 0x8000_0000
    } else {
        !k
    })
}

/// log2 of the spacing of the floats at `v`'s magnitude (subnormals and the smallest normal
/// binade share 2^-149).
fn spacing_exp(v: f32) -> i32 {
    let e = ((v.to_bits() >> 23) & 0xFF) as i32;
    e.max(1) - 150
}

/// One bin's pass-2 facts: sums modulo 2^64 (exact wherever the true sum is below it, which
/// [`Engine::plan`] checks), the count and the extremes; all zero when empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
struct Cell {
    /// Σ key and Σ key² (side by side: the AVX2 sweep adds both in one register).
    sums: [u64; 2],
    /// !(smallest key) in the low half, the largest key in the high half: zero when empty,
    /// and a maximum of each half keeps both.
    ext: u64,
    n: u64,
}

// The AVX2 sweep loads and stores a cell as one 32-byte register.
const _: () = assert!(std::mem::size_of::<Cell>() == 32);

/// The halves' maxima of two [`Cell::ext`].
fn max_halves(a: u64, b: u64) -> u64 {
    let lo = (a as u32).max(b as u32);
    let hi = ((a >> 32) as u32).max((b >> 32) as u32);
    u64::from(lo) | u64::from(hi) << 32
}

impl Cell {
    fn merge(&mut self, o: &Cell) {
        for k in 0..2 {
            self.sums[k] = self.sums[k].wrapping_add(o.sums[k]);
        }
        self.ext = max_halves(self.ext, o.ext);
        self.n = self.n.wrapping_add(o.n);
    }

    #[inline(always)]
    fn put(&mut self, k: u32) {
        let k64 = u64::from(k);
        self.sums[0] = self.sums[0].wrapping_add(k64);
        // k² < 2^64: the product is exact.
        self.sums[1] = self.sums[1].wrapping_add(k64 * k64);
        self.ext = max_halves(self.ext, u64::from(!k) | u64::from(k) << 32);
        self.n = self.n.wrapping_add(1);
    }
}

/// One worker's pass-2 sums (one extra slot swallows non-finite values). Sums wrap and
/// extremes are maxima, so merging is exact in any order.
#[derive(Clone, Debug)]
pub struct BinSums {
    grid: Grid,
    cells: Vec<Cell>,
}

impl BinSums {
    pub fn new(grid: Grid) -> Self {
        BinSums {
            grid,
            cells: vec![Cell::default(); BINS + 1],
        }
    }

    pub fn merge(&mut self, o: &BinSums) {
        for (a, b) in self.cells.iter_mut().zip(&o.cells) {
            a.merge(b);
        }
    }

    /// Adds the finite values of `values`.
    pub fn add(&mut self, values: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = simd::avx2() {
            let rest = self.add_avx2(cpu, values);
            self.add_portable(rest);
            return;
        }
        self.add_portable(values);
    }

    fn add_portable(&mut self, values: &[f32]) {
        for &v in values {
            let bin = if v.is_finite() {
                self.grid.bin(f64::from(v))
            } else {
                BINS
            };
            if let Some(c) = self.cells.get_mut(bin) {
                c.put(key(v));
            }
        }
    }

    /// [`Self::add_portable`] four values at a time: bins (the same f64 operations), keys,
    /// squares and (!key, key) pairs in AVX registers, then one 256-bit add and one max per
    /// value. Returns the values it left (fewer than four).
    #[cfg(target_arch = "x86_64")]
    fn add_avx2<'v>(&mut self, _: Avx2, values: &'v [f32]) -> &'v [f32] {
        #[target_feature(enable = "avx2")]
        fn run<'v>(s: &mut BinSums, values: &'v [f32]) -> &'v [f32] {
            use std::arch::x86_64::*;
            let lo = _mm256_set1_pd(s.grid.lo);
            let scale = _mm256_set1_pd(s.grid.scale);
            let last = _mm256_set1_pd(s.grid.last);
            let zero = _mm256_setzero_pd();
            let abs_ps = _mm_castsi128_ps(_mm_set1_epi32(i32::MAX));
            let inf = _mm_set1_ps(f32::INFINITY);
            let trash = _mm_set1_epi32(BINS as i32);
            let (fours, rest) = values.as_chunks::<4>();
            let mut bins = [0u32; 4];
            // The count's increment in the high half: (0, 1) as two u64.
            let one = _mm256_set_epi64x(1, 0, 1, 0);
            let z = _mm256_setzero_si256();
            for four in fours {
                let v = simd::load_f32x4(four);
                let fin = _mm_castps_si128(_mm_cmplt_ps(_mm_and_ps(v, abs_ps), inf));
                let b = _mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(v), lo), scale);
                let b = _mm256_min_pd(_mm256_max_pd(b, zero), last);
                let i = _mm_blendv_epi8(trash, _mm256_cvttpd_epi32(b), fin);
                let b = _mm_castps_si128(v);
                let sign = _mm_or_si128(_mm_srai_epi32::<31>(b), _mm_set1_epi32(i32::MIN));
                let k = _mm_xor_si128(b, sign);
                let k64 = _mm256_cvtepu32_epi64(k);
                let sq = _mm256_mul_epu32(k64, k64);
                // Within each 128-bit half: (k0, k0²), (k2, k2²) and (k1, k1²), (k3, k3²).
                let even = _mm256_unpacklo_epi64(k64, sq);
                let odd = _mm256_unpackhi_epi64(k64, sq);
                // A cell is (Σk, Σk², ext, n) as four u64: value j adds (k, k², 0, 1) and takes
                // the u32 maxima with (0, 0, (!k, k), 0), which leaves the other lanes alone.
                let inc = [
                    _mm256_permute2x128_si256::<0x20>(even, one),
                    _mm256_permute2x128_si256::<0x20>(odd, one),
                    _mm256_permute2x128_si256::<0x21>(even, one),
                    _mm256_permute2x128_si256::<0x21>(odd, one),
                ];
                let nk = _mm_xor_si128(k, _mm_set1_epi32(-1));
                // (!k, k) of the four values as u64 lanes 0..3.
                let ext = _mm256_set_m128i(_mm_unpackhi_epi32(nk, k), _mm_unpacklo_epi32(nk, k));
                let mx = [
                    _mm256_blend_epi32::<0b0011_0000>(z, _mm256_permute4x64_epi64::<0x00>(ext)),
                    _mm256_blend_epi32::<0b0011_0000>(z, _mm256_permute4x64_epi64::<0x55>(ext)),
                    _mm256_blend_epi32::<0b0011_0000>(z, _mm256_permute4x64_epi64::<0xAA>(ext)),
                    _mm256_blend_epi32::<0b0011_0000>(z, _mm256_permute4x64_epi64::<0xFF>(ext)),
                ];
                simd::store_u32x4(&mut bins, i);
                for j in 0..4 {
                    if let Some(c) = s.cells.get_mut(bins[j] as usize) {
                        let c: *mut Cell = c;
                        // SAFETY: `c` points to one `Cell`, 32 bytes (`repr(C)`: sums, ext, n),
                        // all that the load and the store touch; no alignment is needed.
                        unsafe {
                            let old = _mm256_loadu_si256(c.cast());
                            let new = _mm256_max_epu32(_mm256_add_epi64(old, inc[j]), mx[j]);
                            _mm256_storeu_si256(c.cast(), new);
                        }
                    }
                }
            }
            rest
        }
        // SAFETY: the token proves the CPU has AVX2.
        unsafe { run(self, values) }
    }
}

/// A layer's merged pass-2 bins.
#[derive(Clone, Debug)]
pub struct Bins {
    grid: Grid,
    cells: Vec<Cell>,
}

impl Bins {
    /// Bytes the bins hold.
    pub fn heap_bytes(&self) -> usize {
        self.cells.len() * std::mem::size_of::<Cell>()
    }
}

/// A per-tensor quantizer as the bins see it: a monotone step function.
pub trait Step {
    /// The value's cell, non-decreasing in x; values in one cell have the same x̂ and the same
    /// clip state.
    fn cell(&self, x: f64) -> f64;
    /// A cell's x̂, its reconstruction term and its clip state, exactly as the per-value path
    /// computes them for a value in that cell.
    fn of_cell(&self, cell: f64) -> CellValue;
    /// The factor that turns the summed reconstruction terms into Σx̂².
    fn rec_scale(&self) -> f64;
}

/// What one value of a cell adds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CellValue {
    pub xhat: f64,
    pub rec: f64,
    pub below: bool,
    pub above: bool,
}

/// The integer grids: the cell is `metrics`' pre-clamped rint(x/s) (one step beyond the bounds
/// at most), x̂ = clamp(cell)·s and the reconstruction term r² (Σx̂² = s²·Σr²).
impl Step for QParams {
    #[inline(always)]
    fn cell(&self, x: f64) -> f64 {
        let (qlo, qhi) = bounds(self);
        let t = x / self.scale;
        let t = if t < qlo - 1.0 { qlo - 1.0 } else { t };
        let t = if t > qhi + 1.0 { qhi + 1.0 } else { t };
        // Half to even by adding and subtracting 1.5·2^52 (exact: |t| ≤ 2^16 + 1), as `metrics`
        // rounds; no libm call.
        (t + ROUND_MAGIC) - ROUND_MAGIC
    }

    #[inline(always)]
    fn of_cell(&self, cell: f64) -> CellValue {
        let (qlo, qhi) = bounds(self);
        let r = if cell < qlo { qlo } else { cell };
        let r = if r > qhi { qhi } else { r };
        CellValue {
            xhat: r * self.scale,
            rec: r * r,
            below: cell < qlo,
            above: cell > qhi,
        }
    }

    fn rec_scale(&self) -> f64 {
        self.scale * self.scale
    }
}

const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// Integer bounds in the zero-point-free space, as `metrics` computes them.
fn bounds(q: &QParams) -> (f64, f64) {
    let z = q.zero_point as f64;
    (q.qmin as f64 - z, q.qmax as f64 - z)
}

/// One quantizer's sums over some values.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Part {
    err: f64,
    rec: f64,
    mx: f64,
    below: u64,
    above: u64,
}

impl Part {
    fn merge(&mut self, o: &Part) {
        self.err += o.err;
        self.rec += o.rec;
        self.mx = self.mx.max(o.mx);
        self.below += o.below;
        self.above += o.above;
    }
}

/// Pass 3's sums of one chunk for the engine's quantizers (merged in chunk order).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkSums {
    n: u64,
    sig_sq: f64,
    parts: Vec<Part>,
    /// The current block's revisited values, added to `parts` at the block's end (so the
    /// chains of additions are as short as the per-value path's).
    block: Vec<Part>,
    dirty: bool,
}

/// A bin where the float of every key between its extremes is `c + (key − key_min)·u`.
#[derive(Clone, Copy, Debug)]
struct Linear {
    c: f64,
    u: f64,
    /// Σk and Σk² with k = key − key_min, exact.
    s1: u64,
    s2: u64,
    kmax: u64,
}

/// An occupied bin as the plan reads it.
#[derive(Clone, Copy, Debug)]
struct Occupied {
    bin: u32,
    n: u64,
    min: f64,
    max: f64,
    linear: Option<Linear>,
}

fn occupied(b: &Bins) -> Vec<Occupied> {
    b.cells[..BINS]
        .iter()
        .enumerate()
        .filter(|(_, c)| c.n > 0)
        .map(|(j, c)| {
            let n = c.n;
            let (lo, hi) = (!(c.ext as u32), (c.ext >> 32) as u32);
            let (min, max) = (unkey(lo), unkey(hi));
            let same_sign = (lo ^ hi) & 0x8000_0000 == 0;
            let same_spacing = spacing_exp(min) == spacing_exp(max);
            let kmax = u64::from(hi.wrapping_sub(lo));
            // Σk² ≤ n·kmax² (and Σk ≤ n·kmax) below 2^64: the wrapped sums are the true ones.
            let fits = u128::from(n) * u128::from(kmax) * u128::from(kmax) < 1 << 64;
            let linear = (same_sign && same_spacing && hi >= lo && fits).then(|| {
                let m = u64::from(lo);
                // Σ(key − m) and Σ(key − m)², modulo 2^64.
                let s1 = c.sums[0].wrapping_sub(n.wrapping_mul(m));
                let s2 = c.sums[1]
                    .wrapping_sub(m.wrapping_mul(2).wrapping_mul(c.sums[0]))
                    .wrapping_add(n.wrapping_mul(m.wrapping_mul(m)));
                Linear {
                    c: f64::from(min),
                    u: 2f64.powi(spacing_exp(min)),
                    s1,
                    s2,
                    kmax,
                }
            });
            Occupied {
                bin: j as u32,
                n,
                min: f64::from(min),
                max: f64::from(max),
                linear,
            }
        })
        .collect()
}

/// (s, e) with s = fl(a + b) and s + e = a + b exactly.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// Σ(x_i − x̂)² over a linear bin's n values x_i = c + k_i·u, from Σk and Σk² (exact).
///
/// With D = c − x̂ (exact as a two-sum), the sum is n·D² + 2·D·u·Σk + u²·Σk². Where |D| is at
/// least 2·kmax·u each term is at least D²/4 while the three parts are at most 2.25·D² a
/// value; elsewhere D is first moved by a whole number t of u (k → k + t, exact integers) so
/// that |D'| ≤ u/2, and a value with k' ≠ 0 adds at least k'²u²/4 against parts of at most
/// 2.25·k'²u², one with k' = 0 adds D'² against D'². Either way the parts' magnitudes sum to at
/// most 9 times the result, so the few roundings of the evaluation stay below 2^-46 relative.
fn bin_error(n: u64, l: &Linear, xhat: f64) -> f64 {
    let (dh, dl) = two_sum(l.c, -xhat);
    let nf = n as f64;
    let u = l.u;
    if dh.abs() >= 2.0 * l.kmax as f64 * u {
        return nf * dh * dh + 2.0 * dh * u * l.s1 as f64 + u * u * l.s2 as f64;
    }
    // |dh| < 2·kmax·u < 2^33·u: dh/u and t·u are exact, and so is dh − t·u (|·| ≤ u/2, a
    // multiple of dh's spacing).
    let t = (dh / u).round();
    let d = (dh - t * u) + dl;
    let (ti, ni) = (t as i128, i128::from(n));
    let (s1, s2) = (i128::from(l.s1), i128::from(l.s2));
    // n·t² ≤ n·(2·kmax + 1)² < 2^67 (n·kmax² < 2^64), so nothing here overflows.
    let s1p = s1 + ni * ti;
    let s2p = s2 + 2 * ti * s1 + ni * ti * ti;
    nf * d * d + 2.0 * d * u * s1p as f64 + u * u * s2p as f64
}

/// Σ v in blocks of 256 (each summed in order, then the block sums in order): no chain of
/// additions is longer than 256 + len/256, so for 65536 bins the rounding stays below
/// 512·2^-53 relative (terms of one sign), without a pairwise recursion's calls.
fn blocked_sum(v: &[f64]) -> f64 {
    v.chunks(256).map(|b| b.iter().sum::<f64>()).sum()
}

/// The per-bin engine for some of a layer's quantizers: their sums over the bins that lie in
/// one of their cells, and for each bin cut by a boundary the quantizers that revisit it.
#[derive(Debug)]
pub struct Engine<Q> {
    grid: Grid,
    /// Per bin: 0, or 1 + the index in `spans` of the quantizers that revisit it.
    slots: Vec<u32>,
    spans: Vec<(u32, u32)>,
    members: Vec<u32>,
    /// The quantizers measured here, with their positions in the caller's list.
    qs: Vec<Q>,
    which: Vec<usize>,
    from_bins: Vec<Part>,
}

impl<Q: Step + Clone> Engine<Q> {
    /// Plans every quantizer of `qs` over the bins and keeps those that leave at most
    /// `max_share` of the values to be revisited; None if none does.
    pub fn plan(bins: &Bins, qs: &[Q], max_share: f64) -> Option<Engine<Q>> {
        let occ = occupied(bins);
        let total: u64 = occ.iter().map(|o| o.n).sum();
        let mut qs_kept = Vec::new();
        let mut which = Vec::new();
        let mut from_bins = Vec::new();
        let mut cut: Vec<(u32, u32)> = Vec::new();
        let mut errs = Vec::with_capacity(occ.len());
        let mut recs = Vec::with_capacity(occ.len());
        for (i, q) in qs.iter().enumerate() {
            let mut part = Part::default();
            let mut revisit = 0u64;
            let mut cut_q = Vec::new();
            errs.clear();
            recs.clear();
            for o in &occ {
                let c = q.cell(o.min);
                let whole = c == q.cell(o.max);
                match o.linear {
                    Some(l) if whole => {
                        let v = q.of_cell(c);
                        errs.push(bin_error(o.n, &l, v.xhat));
                        recs.push(o.n as f64 * v.rec);
                        if v.below {
                            part.below += o.n;
                        }
                        if v.above {
                            part.above += o.n;
                        }
                        // |x − x̂| is monotone on each side of x̂: largest at an extreme.
                        part.mx = part
                            .mx
                            .max((o.min - v.xhat).abs())
                            .max((o.max - v.xhat).abs());
                    }
                    _ => {
                        revisit += o.n;
                        cut_q.push(o.bin);
                    }
                }
            }
            if revisit as f64 > max_share * total as f64 {
                continue;
            }
            part.err = blocked_sum(&errs);
            part.rec = blocked_sum(&recs);
            let k = qs_kept.len() as u32;
            cut.extend(cut_q.into_iter().map(|b| (b, k)));
            qs_kept.push(q.clone());
            which.push(i);
            from_bins.push(part);
        }
        if qs_kept.is_empty() {
            return None;
        }
        cut.sort_unstable();
        let mut slots = vec![0u32; BINS];
        let mut spans = Vec::new();
        let mut members = Vec::with_capacity(cut.len());
        for group in cut.chunk_by(|a, b| a.0 == b.0) {
            let start = members.len() as u32;
            members.extend(group.iter().map(|&(_, k)| k));
            spans.push((start, members.len() as u32));
            slots[group[0].0 as usize] = spans.len() as u32;
        }
        Some(Engine {
            grid: bins.grid,
            slots,
            spans,
            members,
            qs: qs_kept,
            which,
            from_bins,
        })
    }

    /// Positions, in the list given to [`Self::plan`], of the quantizers measured here.
    pub fn which(&self) -> &[usize] {
        &self.which
    }

    /// Bins a boundary cuts for at least one quantizer here.
    pub fn cut_bins(&self) -> usize {
        self.spans.len()
    }

    /// Empty sums for one chunk.
    pub fn chunk_sums(&self) -> ChunkSums {
        ChunkSums {
            parts: vec![Part::default(); self.qs.len()],
            block: vec![Part::default(); self.qs.len()],
            ..ChunkSums::default()
        }
    }

    /// Adds a prepared block: its count and Σx² (the per-value path's numbers), and every value
    /// in a cut bin for the quantizers that cut it.
    pub fn block(&self, p: &Prepared, acc: &mut ChunkSums) {
        acc.n += p.n;
        acc.sig_sq += p.sig_sq;
        #[cfg(target_arch = "x86_64")]
        if let Some(cpu) = simd::avx2() {
            self.scan_avx2(cpu, p.values(), acc);
            self.end_block(acc);
            return;
        }
        self.scan_portable(p.values(), acc);
        self.end_block(acc);
    }

    fn end_block(&self, acc: &mut ChunkSums) {
        if acc.dirty {
            for (a, b) in acc.parts.iter_mut().zip(acc.block.iter_mut()) {
                a.merge(b);
                *b = Part::default();
            }
            acc.dirty = false;
        }
    }

    fn scan_portable(&self, xs: &[f64], acc: &mut ChunkSums) {
        for &x in xs {
            let slot = self.slots.get(self.grid.bin(x)).copied().unwrap_or(0);
            if slot != 0 {
                self.visit(slot, x, acc);
            }
        }
    }

    /// [`Self::scan_portable`] eight values at a time: the bins in AVX registers (the same f64
    /// operations, truncation included), their slots gathered, and only a group with a cut bin
    /// looked at value by value.
    #[cfg(target_arch = "x86_64")]
    fn scan_avx2(&self, _: Avx2, xs: &[f64], acc: &mut ChunkSums) {
        #[target_feature(enable = "avx2")]
        fn run<Q: Step + Clone>(e: &Engine<Q>, xs: &[f64], acc: &mut ChunkSums) {
            use std::arch::x86_64::*;
            let lo = _mm256_set1_pd(e.grid.lo);
            let scale = _mm256_set1_pd(e.grid.scale);
            let last = _mm256_set1_pd(e.grid.last);
            let zero = _mm256_setzero_pd();
            let (eights, rest) = xs.as_chunks::<8>();
            let mut idx = [0u32; 8];
            for c in eights {
                let (x0, x1) = simd::load_f64x8(c);
                let b0 = _mm256_mul_pd(_mm256_sub_pd(x0, lo), scale);
                let b1 = _mm256_mul_pd(_mm256_sub_pd(x1, lo), scale);
                // A NaN (none here: the values are finite) would become 0: maxpd returns its
                // second operand.
                let b0 = _mm256_min_pd(_mm256_max_pd(b0, zero), last);
                let b1 = _mm256_min_pd(_mm256_max_pd(b1, zero), last);
                let i = _mm256_set_m128i(_mm256_cvttpd_epi32(b1), _mm256_cvttpd_epi32(b0));
                // SAFETY: every index lies in 0..=last, and `slots` has last + 1 entries.
                let s = unsafe { _mm256_i32gather_epi32::<4>(e.slots.as_ptr().cast(), i) };
                if _mm256_testz_si256(s, s) == 0 {
                    simd::store_u32x8(&mut idx, i);
                    for (&j, &x) in idx.iter().zip(c) {
                        let slot = e.slots.get(j as usize).copied().unwrap_or(0);
                        if slot != 0 {
                            e.visit(slot, x, acc);
                        }
                    }
                }
            }
            e.scan_portable(rest, acc);
        }
        // SAFETY: the token proves the CPU has AVX2.
        unsafe { run(self, xs, acc) }
    }

    /// One value of a cut bin, for each quantizer that cuts it: the per-value path's terms.
    #[inline(always)]
    fn visit(&self, slot: u32, x: f64, acc: &mut ChunkSums) {
        let Some(&(a, b)) = self.spans.get(slot as usize - 1) else {
            return;
        };
        acc.dirty = true;
        for &m in &self.members[a as usize..b as usize] {
            let (Some(q), Some(p)) = (self.qs.get(m as usize), acc.block.get_mut(m as usize))
            else {
                continue;
            };
            let v = q.of_cell(q.cell(x));
            let e = x - v.xhat;
            p.err += e * e;
            p.rec += v.rec;
            p.mx = p.mx.max(e.abs());
            p.below += u64::from(v.below);
            p.above += u64::from(v.above);
        }
    }

    /// The error sums of the quantizers here (in [`Self::which`] order) from the chunks' sums
    /// in chunk order.
    pub fn finish(&self, chunks: &[ChunkSums]) -> Vec<ErrorAccum> {
        let (mut n, mut sig_sq) = (0u64, 0.0f64);
        let mut parts = vec![Part::default(); self.qs.len()];
        for c in chunks {
            n += c.n;
            sig_sq += c.sig_sq;
            for (a, b) in parts.iter_mut().zip(&c.parts) {
                a.merge(b);
            }
        }
        self.qs
            .iter()
            .zip(&self.from_bins)
            .zip(&parts)
            .map(|((q, bins), seen)| ErrorAccum {
                n,
                sig_sq,
                err_sq: bins.err + seen.err,
                rec_sq: q.rec_scale() * (bins.rec + seen.rec),
                max_abs_error: bins.mx.max(seen.mx),
                below: bins.below + seen.below,
                above: bins.above + seen.above,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
