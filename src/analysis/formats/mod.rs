//! The formats people deploy (README "Formats"): FP8 E4M3/E5M2 per tensor with each
//! calibrator's symmetric amax and the FP8-aware MSE search, FP8 per token, the block-scaled
//! MXFP8/MXFP4 (OCP Microscaling v1.0, both scale rules) and NVFP4, each measured exactly in
//! pass 3 over every finite value with the methods' metrics.
//!
//! All arithmetic is float32 as the definitions say; only the error sums are float64, as the
//! methods'. Per-token and block rows need a token whole inside one chunk, as the granularity
//! rows do (`granularity::ChannelLayout::rows`); the per-value kernels are in [`kernels`].

use serde::{Deserialize, Serialize};

use crate::calib::{self, Chosen, MethodKind, Scheme};
use crate::formats::{E2M1, E4M3, E5M2, FpFormat, e8m0};

use super::granularity::{ChannelMap, ChannelProfile};
use super::metrics::{ErrorAccum, Metrics};
use super::options::{OptionError, Options};
use super::profile::Profile;

mod kernels;
#[cfg(test)]
mod tests;

use kernels::{FpLanes, Grid};

/// A deployed number format (`--formats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatKind {
    Fp8E4m3,
    Fp8E5m2,
    Mxfp8,
    Mxfp4,
    Nvfp4,
}

impl FormatKind {
    pub const ALL: [FormatKind; 5] = [
        FormatKind::Fp8E4m3,
        FormatKind::Fp8E5m2,
        FormatKind::Mxfp8,
        FormatKind::Mxfp4,
        FormatKind::Nvfp4,
    ];

    /// The default of `--formats`: FP8 E4M3 (per tensor with every calibrator's amax and the
    /// FP8 MSE search, per token), what an LLM engineer deploys first, within the 30% budget
    /// on the default analysis' CPU per value; E5M2, MX and NVFP4 are opt-in (each about as
    /// costly again: README "Formats" has the figures).
    pub const DEFAULT: [FormatKind; 1] = [FormatKind::Fp8E4m3];

    /// The name in JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FormatKind::Fp8E4m3 => "fp8_e4m3",
            FormatKind::Fp8E5m2 => "fp8_e5m2",
            FormatKind::Mxfp8 => "mxfp8",
            FormatKind::Mxfp4 => "mxfp4",
            FormatKind::Nvfp4 => "nvfp4",
        }
    }

    pub fn from_name(name: &str) -> Option<FormatKind> {
        FormatKind::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The element format.
    pub fn element(self) -> FpFormat {
        match self {
            FormatKind::Fp8E4m3 | FormatKind::Mxfp8 => E4M3,
            FormatKind::Fp8E5m2 => E5M2,
            FormatKind::Mxfp4 | FormatKind::Nvfp4 => E2M1,
        }
    }

    /// Bits per element (the bit budget the recommendation compares at).
    pub fn bits(self) -> u8 {
        match self {
            FormatKind::Fp8E4m3 | FormatKind::Fp8E5m2 | FormatKind::Mxfp8 => 8,
            FormatKind::Mxfp4 | FormatKind::Nvfp4 => 4,
        }
    }

    /// Whether this is a per-tensor/per-token FP8 format.
    pub fn is_fp8(self) -> bool {
        matches!(self, FormatKind::Fp8E4m3 | FormatKind::Fp8E5m2)
    }
}

/// `fp8_e4m3,mxfp4`, `all` or `none` → the formats in [`FormatKind::ALL`] order.
pub fn parse_formats(s: &str) -> Result<Vec<FormatKind>, OptionError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("all") {
        return Ok(FormatKind::ALL.to_vec());
    }
    if t.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let list = t
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| {
            FormatKind::from_name(part).ok_or_else(|| {
                let all: Vec<&str> = FormatKind::ALL.iter().map(|f| f.name()).collect();
                OptionError(format!(
                    "unknown format `{part}` (expected all, none or some of: {})",
                    all.join(", ")
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_formats(&list)?;
    Ok(FormatKind::ALL
        .into_iter()
        .filter(|f| list.contains(f))
        .collect())
}

/// None repeated (an empty list is `none`).
pub fn check_formats(list: &[FormatKind]) -> Result<(), OptionError> {
    if let Some((_, f)) = list
        .iter()
        .enumerate()
        .find(|(i, f)| list[..*i].contains(f))
    {
        return Err(OptionError(format!("format {} is listed twice", f.name())));
    }
    Ok(())
}

/// Where a format row's scale lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatGranularity {
    Tensor,
    Token,
    Block,
}

/// The MX shared-scale rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleRule {
    /// OCP MX v1.0: X = 2^(⌊log2 amax⌋ − emax); may push a block's largest values past the
    /// element max (then clamped).
    Ocp,
    /// X = 2^⌈log2(amax / M)⌉: never clips.
    Rceil,
}

impl ScaleRule {
    pub fn name(self) -> &'static str {
        match self {
            ScaleRule::Ocp => "ocp",
            ScaleRule::Rceil => "rceil",
        }
    }
}

/// The `method` of the per-tensor FP8 rows whose amax is the FP8-aware MSE search.
pub const MSE_FP8: &str = "mse_fp8";

/// MX block length along the channel axis.
pub const MX_BLOCK: usize = 32;
/// NVFP4 block length.
pub const NVFP4_BLOCK: usize = 16;

/// One format row of a layer: the JSON `formats` entry (README "JSON output").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FormatResult {
    pub format: FormatKind,
    pub granularity: FormatGranularity,
    pub block_size: Option<usize>,
    /// The calibrator whose symmetric amax the row uses (`mse_fp8`: the FP8 MSE search);
    /// `null` for dynamic and block rows.
    pub method: Option<String>,
    pub percentile: Option<f64>,
    pub scale_rule: Option<ScaleRule>,
    /// The per-tensor amax as used (float32).
    pub amax: Option<f64>,
    pub metrics: Metrics,
    /// Per-tensor FP8 rows: values an unclamped cast would make NaN (E4M3) or ±inf (E5M2).
    pub unclamped_nonfinite: Option<u64>,
}

impl FormatResult {
    /// `fp8_e4m3 entropy`, `fp8_e4m3 token`, `mxfp4 ocp`, `nvfp4`: the label front ends show.
    pub fn label(&self) -> String {
        let f = self.format.name();
        match (
            self.granularity,
            self.method.as_deref(),
            self.percentile,
            self.scale_rule,
        ) {
            (FormatGranularity::Tensor, Some(m), Some(p), _) => format!("{f} {m} {p}"),
            (FormatGranularity::Tensor, Some(m), None, _) => format!("{f} {m}"),
            (FormatGranularity::Token, ..) => format!("{f} token"),
            (_, _, _, Some(r)) => format!("{f} {}", r.name()),
            _ => f.to_string(),
        }
    }

    /// A per-tensor row's scale amax/M, in float32 as used (None for dynamic and block rows).
    pub fn scale(&self) -> Option<f64> {
        self.amax
            .map(|a| f64::from(a as f32 / self.format.element().max()))
    }

    /// The CSV `method` value: `format:fp8_e4m3:entropy`, `format:fp8_e4m3:percentile 99.9`,
    /// `format:fp8_e4m3:token`, `format:mxfp4:ocp`, `format:nvfp4`.
    pub fn csv_method(&self) -> String {
        format!("format:{}", self.label().replacen(' ', ":", 1))
    }
}

/// One per-tensor FP8 row's facts before it is measured.
#[derive(Clone, Debug)]
struct TensorRow {
    kind: FormatKind,
    method: &'static str,
    percentile: Option<f64>,
    amax: f32,
    /// Index of its quantizer in `Plan::tensor` (rows with the same amax share one).
    slot: usize,
}

/// One distinct per-tensor quantizer: the format and (M/a, a/M), or `None` for a = 0 (exact).
#[derive(Clone, Copy, Debug, PartialEq)]
struct TensorQ {
    fmt: FpFormat,
    scales: Option<(f32, f32)>,
}

impl TensorQ {
    fn grid(&self) -> Option<Grid> {
        self.scales.map(|(inv, s)| Grid::new(&self.fmt, inv, s))
    }
}

thread_local! {
    /// Pass 3's chunk with NaN and ±Inf zeroed, per worker thread.
    static FINITE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Values per block of the per-tensor rows: every row reads a block while it is in L1.
const BLOCK: usize = 2048;

/// The NVFP4 tensor scale s_g and 6·s_g.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Nv {
    sg: f32,
    six_sg: f32,
}

/// What pass 3 measures for the formats, fixed from passes 1–2 and the options.
#[derive(Debug)]
pub struct FormatPlan {
    rows: Vec<TensorRow>,
    tensor: Vec<TensorQ>,
    /// Formats with a per-token row.
    token: Vec<FormatKind>,
    /// MX rows (format, rule).
    mx: Vec<(FormatKind, ScaleRule)>,
    nv: Option<Nv>,
    /// The layout tokens and blocks are read with, when they can be.
    map: Option<(usize, Vec<ChannelMap>)>,
    /// Why token and block rows are missing, when they are and no granularity note says so.
    pub note: Option<String>,
}

/// Pass-3 sums of the format rows over some chunks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FormatAccums {
    tensor: Vec<ErrorAccum>,
    token: Vec<ErrorAccum>,
    /// Per MX row: the sums, the blocks and the blocks with a clipped value.
    mx: Vec<(ErrorAccum, u64, u64)>,
    /// NVFP4: the sums and the nonzero values of blocks whose scale rounds to 0.
    nv: (ErrorAccum, u64),
}

impl FormatAccums {
    pub fn merge(&mut self, o: &FormatAccums) {
        let grow = |a: &mut Vec<ErrorAccum>, b: &[ErrorAccum]| {
            a.resize(a.len().max(b.len()), ErrorAccum::default());
            for (x, y) in a.iter_mut().zip(b) {
                x.merge(y);
            }
        };
        grow(&mut self.tensor, &o.tensor);
        grow(&mut self.token, &o.token);
        self.mx
            .resize(self.mx.len().max(o.mx.len()), Default::default());
        for (x, y) in self.mx.iter_mut().zip(&o.mx) {
            x.0.merge(&y.0);
            x.1 += y.1;
            x.2 += y.2;
        }
        self.nv.0.merge(&o.nv.0);
        self.nv.1 += o.nv.1;
    }
}

/// What [`FormatPlan::finish`] adds to a layer besides the rows: facts the warnings read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FormatFacts {
    /// Per MX row (format, rule): blocks, blocks with a clipped value.
    pub mx_blocks: Vec<(FormatKind, ScaleRule, u64, u64)>,
    /// NVFP4 nonzero values in blocks whose scale rounds to 0.
    pub nvfp4_underflow: u64,
    /// Per-tensor FP8 rows whose amax is 0 (exact, no scale): their labels.
    pub zero_amax: Vec<String>,
}

/// The calibrators' symmetric amaxes: the chosen ranges under the symmetric scheme, else the
/// symmetric calibration of the same profile (at the same bits).
fn symmetric_amaxes(profile: &Profile, chosen: &[Chosen], opts: &Options) -> Vec<Chosen> {
    if opts.scheme == Scheme::Symmetric {
        return chosen.to_vec();
    }
    let cfg = calib::Config {
        scheme: Scheme::Symmetric,
        ..opts.calib()
    };
    calib::calibrate(&profile.observed(), &cfg)
}

impl FormatPlan {
    /// The plan for a layer from its profile and its chosen ranges. `granularity_note`: whether
    /// the granularity rows already carry a note on why tokens cannot be read.
    pub fn new(
        profile: &Profile,
        chosen: &[Chosen],
        opts: &Options,
        granularity_note: bool,
    ) -> FormatPlan {
        let kinds = &opts.formats;
        let fp8: Vec<FormatKind> = kinds.iter().copied().filter(|k| k.is_fp8()).collect();
        let mut rows = Vec::new();
        let mut tensor: Vec<TensorQ> = Vec::new();
        if !fp8.is_empty() {
            let sym = symmetric_amaxes(profile, chosen, opts);
            let h = profile
                .abs_hist
                .coarsen((profile.abs_hist.bins() / calib::SEARCH_BINS).max(1));
            for &kind in &fp8 {
                let fmt = kind.element();
                let mut amaxes: Vec<(&'static str, Option<f64>, f32)> = sym
                    .iter()
                    .map(|c| (c.method.name(), c.percentile, c.search.hi.abs() as f32))
                    .collect();
                let search = calib::mse::fp8(&h, &fmt);
                let at = amaxes
                    .iter()
                    .position(|r| r.0 == MethodKind::Percentile.name())
                    .unwrap_or(amaxes.len());
                amaxes.insert(at, (MSE_FP8, None, search.hi as f32));
                for (method, percentile, amax) in amaxes {
                    let q = TensorQ {
                        fmt,
                        scales: fmt.tensor_scales(amax),
                    };
                    let slot = tensor.iter().position(|t| *t == q).unwrap_or_else(|| {
                        tensor.push(q);
                        tensor.len() - 1
                    });
                    rows.push(TensorRow {
                        kind,
                        method,
                        percentile,
                        amax,
                        slot,
                    });
                }
            }
        }
        let blocky: Vec<FormatKind> = kinds.iter().copied().filter(|k| !k.is_fp8()).collect();
        let wants_rows = !kinds.is_empty();
        let layout = profile
            .channels
            .as_ref()
            .map(|c: &ChannelProfile| &c.layout);
        let (map, why) = match layout {
            Some(l) => match &l.rows {
                Ok(()) => (Some((l.count, l.maps.clone())), None),
                Err(why) => (None, (!granularity_note).then(|| why.clone())),
            },
            // A 1-D tensor has no tokens: said only when block formats were asked for.
            None => (
                None,
                (!granularity_note && !blocky.is_empty())
                    .then(|| "the tensor has no channel axis (0-d or 1-D)".into()),
            ),
        };
        let note = (wants_rows && map.is_none())
            .then_some(why)
            .flatten()
            .map(|why| format!("per-token and block format rows not available: {why}"));
        let mx = if map.is_some() {
            blocky
                .iter()
                .filter(|k| matches!(k, FormatKind::Mxfp8 | FormatKind::Mxfp4))
                .flat_map(|&k| [(k, ScaleRule::Ocp), (k, ScaleRule::Rceil)])
                .collect()
        } else {
            Vec::new()
        };
        let at = profile.absmax() as f32;
        let nv = (map.is_some() && kinds.contains(&FormatKind::Nvfp4)).then(|| {
            let sg = at / (E4M3.max() * E2M1.max());
            Nv {
                sg,
                six_sg: E2M1.max() * sg,
            }
        });
        FormatPlan {
            rows,
            tensor,
            token: if map.is_some() { fp8 } else { Vec::new() },
            mx,
            nv,
            map,
            note,
        }
    }

    /// Whether pass 3 has any format row to measure.
    pub fn is_empty(&self) -> bool {
        self.tensor.is_empty() && self.token.is_empty() && self.mx.is_empty() && self.nv.is_none()
    }

    /// The format rows of one chunk of part `part` starting at flat index `first`.
    pub fn measure_chunk(&self, part: usize, first: usize, values: &[f32]) -> FormatAccums {
        FINITE.with_borrow_mut(|buf| {
            kernels::finite_into(values, buf);
            self.measure_finite(part, first, buf)
        })
    }

    /// [`Self::measure_chunk`] on values with NaN and ±Inf already zeroed.
    fn measure_finite(&self, part: usize, first: usize, values: &[f32]) -> FormatAccums {
        let mut out = FormatAccums {
            tensor: vec![ErrorAccum::default(); self.tensor.len()],
            token: vec![ErrorAccum::default(); self.token.len()],
            mx: vec![Default::default(); self.mx.len()],
            nv: Default::default(),
        };
        let grids: Vec<Option<Grid>> = self.tensor.iter().map(TensorQ::grid).collect();
        let mut lanes = vec![FpLanes::default(); grids.len()];
        for block in values.chunks(BLOCK) {
            for (l, g) in lanes.iter_mut().zip(&grids) {
                match g {
                    Some(g) => kernels::run(l, block, g, false),
                    None => l.exact(block),
                }
            }
        }
        for (l, acc) in lanes.iter().zip(out.tensor.iter_mut()) {
            l.absorb(acc);
        }
        let Some((count, maps)) = &self.map else {
            return out;
        };
        let Some(&map) = maps.get(part) else {
            return out;
        };
        // With whole rows in every chunk (`ChannelLayout::rows`), a chunk is whole tokens.
        if map.stride != 1 || map.offset != 0 || !first.is_multiple_of(*count) {
            return out;
        }
        let mut token = vec![FpLanes::default(); self.token.len()];
        let mut mx = vec![FpLanes::default(); self.mx.len()];
        let mut nv = FpLanes::default();
        for xs in values.chunks_exact(*count) {
            let a = kernels::absmax(xs);
            for (l, k) in token.iter_mut().zip(&self.token) {
                let fmt = k.element();
                match fmt.tensor_scales(a) {
                    Some((inv, s)) => kernels::run(l, xs, &Grid::new(&fmt, inv, s), false),
                    None => l.exact(xs),
                }
            }
            for ((l, acc), &(k, rule)) in mx.iter_mut().zip(out.mx.iter_mut()).zip(&self.mx) {
                let fmt = k.element();
                for b in xs.chunks(MX_BLOCK) {
                    acc.1 += 1;
                    let Some(x) = mx_scale_exp(kernels::absmax(b), &fmt, rule) else {
                        l.exact(b);
                        continue;
                    };
                    let before = l.clipped();
                    let g = Grid::new(&fmt, e8m0_pow2(-x), e8m0_pow2(x));
                    kernels::run(l, b, &g, false);
                    acc.2 += u64::from(l.clipped() > before);
                }
            }
            if let Some(n) = self.nv {
                for b in xs.chunks(NVFP4_BLOCK) {
                    let a = kernels::absmax(b);
                    if a == 0.0 || n.six_sg == 0.0 {
                        nv.exact(b);
                        continue;
                    }
                    let d = E4M3.quantize(a / n.six_sg) * n.sg;
                    if d == 0.0 {
                        // The block's scale rounds to 0: it dequantizes to 0.
                        nv.zero(b);
                        out.nv.1 += b.iter().filter(|v| **v != 0.0).count() as u64;
                        continue;
                    }
                    kernels::run(&mut nv, b, &Grid::new(&E2M1, d, d), true);
                }
            }
        }
        for (l, acc) in token.iter().zip(out.token.iter_mut()) {
            l.absorb(acc);
        }
        for (l, acc) in mx.iter().zip(out.mx.iter_mut()) {
            l.absorb(&mut acc.0);
        }
        nv.absorb(&mut out.nv.0);
        out
    }

    /// The rows from pass 3's sums, in table order: per FP8 format its per-tensor rows (each
    /// calibrator, `mse_fp8` before the percentiles) then its token row; then MXFP8 and MXFP4
    /// (ocp, rceil), then NVFP4. `tensor` is the per-tensor grid's accumulator, whose count and
    /// Σx² (over every finite value) complete every row's.
    pub fn finish(
        &self,
        tensor: &ErrorAccum,
        sums: &FormatAccums,
    ) -> (Vec<FormatResult>, FormatFacts) {
        let done = |a: Option<&ErrorAccum>| -> Metrics {
            let mut a = a.copied().unwrap_or_default();
            a.n = tensor.n;
            a.sig_sq = tensor.sig_sq;
            // A row measured as exact has Σx̂² = Σx² (its lanes add x², the same sum).
            a.finish()
        };
        let mut out = Vec::new();
        let mut facts = FormatFacts::default();
        for kind in FormatKind::ALL.into_iter().filter(|k| k.is_fp8()) {
            for r in self.rows.iter().filter(|r| r.kind == kind) {
                let acc = sums.tensor.get(r.slot);
                let (exact, amax) = (self.tensor[r.slot].scales.is_none(), f64::from(r.amax));
                let row = FormatResult {
                    format: kind,
                    granularity: FormatGranularity::Tensor,
                    block_size: None,
                    method: Some(r.method.to_string()),
                    percentile: r.percentile,
                    scale_rule: None,
                    amax: Some(amax),
                    metrics: done(acc),
                    unclamped_nonfinite: Some(acc.map_or(0, |a| a.below + a.above)),
                };
                if exact {
                    facts.zero_amax.push(row.label());
                }
                out.push(row);
            }
            if let Some(i) = self.token.iter().position(|&k| k == kind) {
                out.push(FormatResult {
                    format: kind,
                    granularity: FormatGranularity::Token,
                    block_size: None,
                    method: None,
                    percentile: None,
                    scale_rule: None,
                    amax: None,
                    metrics: done(sums.token.get(i)),
                    unclamped_nonfinite: None,
                });
            }
        }
        for (i, &(kind, rule)) in self.mx.iter().enumerate() {
            let acc = sums.mx.get(i);
            out.push(FormatResult {
                format: kind,
                granularity: FormatGranularity::Block,
                block_size: Some(MX_BLOCK),
                method: None,
                percentile: None,
                scale_rule: Some(rule),
                amax: None,
                metrics: done(acc.map(|a| &a.0)),
                unclamped_nonfinite: None,
            });
            let (b, c) = acc.map_or((0, 0), |a| (a.1, a.2));
            facts.mx_blocks.push((kind, rule, b, c));
        }
        if self.nv.is_some() {
            out.push(FormatResult {
                format: FormatKind::Nvfp4,
                granularity: FormatGranularity::Block,
                block_size: Some(NVFP4_BLOCK),
                method: None,
                percentile: None,
                scale_rule: None,
                amax: None,
                metrics: done(Some(&sums.nv.0)),
                unclamped_nonfinite: None,
            });
            facts.nvfp4_underflow = sums.nv.1;
        }
        (out, facts)
    }
}

/// One per-tensor FP8 row over `values` held in memory (what pass 3 streams): its metrics and
/// the values an unclamped cast would make NaN or ±inf. `None` amax scales (a ≤ 0): exact.
pub fn tensor_row(values: &[f32], fmt: &FpFormat, amax: f32) -> (Metrics, u64) {
    let mut acc = ErrorAccum::default();
    let mut buf = Vec::new();
    kernels::finite_into(values, &mut buf);
    let mut l = FpLanes::default();
    match fmt.tensor_scales(amax) {
        Some((inv, s)) => kernels::run(&mut l, &buf, &Grid::new(fmt, inv, s), false),
        None => l.exact(&buf),
    }
    l.absorb(&mut acc);
    let fin = values.iter().filter(|v| v.is_finite());
    acc.n = fin.clone().count() as u64;
    acc.sig_sq = fin.map(|&v| f64::from(v) * f64::from(v)).sum();
    (acc.finish(), acc.below + acc.above)
}

/// The exponent k of a block's MX scale X = 2^k, clamped to what E8M0 holds; `None` for an
/// all-zero block (exact).
pub fn mx_scale_exp(amax: f32, fmt: &FpFormat, rule: ScaleRule) -> Option<i32> {
    if amax.is_nan() || amax <= 0.0 {
        return None;
    }
    let k = match rule {
        // emax: the exponent of the element format's largest binade (8 for E4M3, 2 for E2M1).
        ScaleRule::Ocp => e8m0::floor_log2(amax)? - e8m0::floor_log2(fmt.max())?,
        // amax/M may underflow float32 to 0: the smallest scale then.
        ScaleRule::Rceil => e8m0::ceil_log2(amax / fmt.max()).unwrap_or(e8m0::MIN_EXP),
    };
    Some(k.clamp(e8m0::MIN_EXP, e8m0::MAX_EXP))
}

/// 2^k for an E8M0 exponent (±127 at most: both it and 2^-k are exact float32).
fn e8m0_pow2(k: i32) -> f32 {
    crate::formats::pow2(k)
}

/// The best row of one family at a bit budget (README "Formats": the recommendation).
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetEntry {
    /// `int8 mse`, `int8 per token`, `fp8_e4m3 mse_fp8`, `mxfp4 rceil`, ...
    pub label: String,
    pub sqnr_db: f64,
}

/// The recommended one of a format's per-tensor FP8 rows (its index): the best SQNR, on ties
/// the smaller amax, then the first; NaN never wins. `--export json --method recommended`
/// writes its scale; the UI's FP8 view stars it.
pub fn recommended_fp8(rows: &[&FormatResult]) -> Option<usize> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| !r.metrics.sqnr_db.is_nan())
        .min_by(|(_, a), (_, b)| {
            b.metrics
                .sqnr_db
                .total_cmp(&a.metrics.sqnr_db)
                .then(a.amax.unwrap_or(0.0).total_cmp(&b.amax.unwrap_or(0.0)))
        })
        .map(|(i, _)| i)
}

/// Per bit budget (8 then 4) the best row of each family, best first: at 8 bits int8 per
/// tensor (the methods) and per token/channel (when `--bits` is 8), FP8 per tensor, FP8 per
/// token and MXFP8; at 4 bits int4 per block (when `--bits` is 4 and block rows were
/// measured), MXFP4 and NVFP4. Empty budgets are left out.
pub fn budgets(l: &super::model::LayerAnalysis, int_bits: u8) -> Vec<(u8, Vec<BudgetEntry>)> {
    use super::granularity::Granularity;
    let best = |rows: Vec<(String, f64)>| -> Option<BudgetEntry> {
        // The first of equals (min-max before the percentile that equals it).
        rows.into_iter()
            .filter(|r| !r.1.is_nan())
            .reduce(|a, b| if b.1 > a.1 { b } else { a })
            .map(|(label, sqnr_db)| BudgetEntry { label, sqnr_db })
    };
    let formats = |pred: &dyn Fn(&FormatResult) -> bool| {
        best(
            l.formats
                .iter()
                .filter(|r| pred(r))
                .map(|r| (r.label(), r.metrics.sqnr_db))
                .collect(),
        )
    };
    let grans = |pred: &dyn Fn(Granularity) -> bool| {
        best(
            l.granularities
                .iter()
                .filter(|g| pred(g.granularity))
                .map(|g| {
                    let phrase = super::warnings::granularity_phrase(g);
                    (format!("int{} {phrase}", g.bits), g.metrics.sqnr_db)
                })
                .collect(),
        )
    };
    let mut out = Vec::new();
    for bits in [8u8, 4] {
        let mut e: Vec<BudgetEntry> = Vec::new();
        if int_bits == bits {
            e.extend(best(
                l.methods
                    .iter()
                    .map(|m| (format!("int{bits} {}", m.label()), m.metrics.sqnr_db))
                    .collect(),
            ));
            let finer = if bits == 8 {
                grans(&|g| matches!(g, Granularity::Token | Granularity::Channel))
            } else {
                grans(&|g| g == Granularity::Block)
            };
            e.extend(finer);
        }
        if bits == 8 {
            e.extend(formats(&|r| {
                r.format.is_fp8() && r.granularity == FormatGranularity::Tensor
            }));
            e.extend(formats(&|r| {
                r.format.is_fp8() && r.granularity == FormatGranularity::Token
            }));
            e.extend(formats(&|r| r.format == FormatKind::Mxfp8));
        } else {
            e.extend(formats(&|r| r.format == FormatKind::Mxfp4));
            e.extend(formats(&|r| r.format == FormatKind::Nvfp4));
        }
        let has_format = e.iter().any(|x| !x.label.starts_with("int"));
        if has_format {
            e.sort_by(|a, b| b.sqnr_db.total_cmp(&a.sqnr_db));
            out.push((bits, e));
        }
    }
    out
}

/// One line per budget: `8-bit: best fp8_e4m3 token 33.8 dB; then int8 mse 31.2 dB, ...`.
pub fn budget_lines(l: &super::model::LayerAnalysis, int_bits: u8) -> Vec<String> {
    budgets(l, int_bits)
        .into_iter()
        .map(|(bits, e)| {
            let db = |v: f64| {
                if v.is_infinite() {
                    "inf".to_string()
                } else {
                    format!("{v:.1}")
                }
            };
            let rest: Vec<String> = e[1..]
                .iter()
                .map(|x| format!("{} {} dB", x.label, db(x.sqnr_db)))
                .collect();
            let then = if rest.is_empty() {
                String::new()
            } else {
                format!("; then {}", rest.join(", "))
            };
            format!(
                "{bits}-bit: best {} {} dB{then}",
                e[0].label,
                db(e[0].sqnr_db)
            )
        })
        .collect()
}
