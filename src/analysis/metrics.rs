//! Exact quantize-dequantize error of a range, over the real values (not the histogram).

use serde::Serialize;

use crate::calib::QParams;

/// Error sums of one quantizer over one chunk; merged in chunk order.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorAccum {
    pub n: u64,
    pub err_sq: f64,
    pub sig_sq: f64,
    pub rec_sq: f64,
    pub dot: f64,
    pub max_abs_error: f64,
    pub below: u64,
    pub above: u64,
}

impl ErrorAccum {
    /// Evaluates `q` on the finite values of a chunk.
    pub fn of_chunk(q: &QParams, values: &[f32]) -> ErrorAccum {
        let mut a = ErrorAccum::default();
        let (qmin, qmax) = (q.qmin as f64, q.qmax as f64);
        for &v in values {
            if !v.is_finite() {
                continue;
            }
            let x = f64::from(v);
            // Clipped means the clamp changed the integer, as in the references' qdq.
            let t = q.quantize_unclamped(x);
            let r = (t.clamp(qmin, qmax) - q.zero_point as f64) * q.scale;
            let e = x - r;
            a.n += 1;
            a.err_sq += e * e;
            a.sig_sq += x * x;
            a.rec_sq += r * r;
            a.dot += x * r;
            a.max_abs_error = a.max_abs_error.max(e.abs());
            a.below += u64::from(t < qmin);
            a.above += u64::from(t > qmax);
        }
        a
    }

    pub fn merge(&mut self, o: &ErrorAccum) {
        self.n += o.n;
        self.err_sq += o.err_sq;
        self.sig_sq += o.sig_sq;
        self.rec_sq += o.rec_sq;
        self.dot += o.dot;
        self.max_abs_error = self.max_abs_error.max(o.max_abs_error);
        self.below += o.below;
        self.above += o.above;
    }

    pub fn finish(&self) -> Metrics {
        let n = self.n.max(1) as f64;
        let cosine = if self.sig_sq == 0.0 && self.rec_sq == 0.0 {
            1.0
        } else if self.sig_sq == 0.0 || self.rec_sq == 0.0 {
            0.0
        } else {
            self.dot / (self.sig_sq.sqrt() * self.rec_sq.sqrt())
        };
        Metrics {
            mse: self.err_sq / n,
            sqnr_db: crate::analysis::cast::sqnr_db(self.sig_sq, self.err_sq),
            max_abs_error: self.max_abs_error,
            cosine,
            clipped_below: self.below as f64 / n,
            clipped_above: self.above as f64 / n,
        }
    }
}

/// The error of one method's range on the layer's real values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Metrics {
    pub mse: f64,
    /// `10·log10(Σx² / Σ(x−x̂)²)`; written as `"inf"` in JSON when the error is 0.
    #[serde(serialize_with = "crate::analysis::ser_num")]
    pub sqnr_db: f64,
    pub max_abs_error: f64,
    /// Cosine similarity of x and x̂ (1 when both are zero).
    pub cosine: f64,
    /// Share of finite values whose integer was clamped up to qmin (below the grid by more
    /// than half a step).
    pub clipped_below: f64,
    /// Share clamped down to qmax.
    pub clipped_above: f64,
}

impl Metrics {
    pub fn clipped(&self) -> f64 {
        self.clipped_below + self.clipped_above
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::calib::Scheme;

    #[test]
    fn uniform_data_min_max_mse_is_step_squared_over_12() {
        // Dense uniform grid over [-a, a]: rounding error is uniform on [-s/2, s/2].
        let a = 3.0f64;
        let n = 1_000_001;
        let v: Vec<f32> = (0..n)
            .map(|i| (-a + 2.0 * a * i as f64 / (n - 1) as f64) as f32)
            .collect();
        let q = QParams::new(Scheme::Symmetric, 8, -a, a);
        let m = ErrorAccum::of_chunk(&q, &v).finish();
        let expected = q.scale * q.scale / 12.0;
        assert!(
            (m.mse / expected - 1.0).abs() < 0.01,
            "{} vs {}",
            m.mse,
            expected
        );
        // Σx²/n = a²/3 and noise s²/12 with s = a/127 give SQNR = 10·log10(4·127²) = 48.16 dB:
        // 6.02·8 + 1.76 − 4.77 (crest factor √3) + 3.01, less 20·log10(128/127) for the narrow range.
        let ideal = 10.0 * (4.0 * 127.0f64.powi(2)).log10();
        assert!(
            (m.sqnr_db - ideal).abs() < 0.05,
            "{} vs {}",
            m.sqnr_db,
            ideal
        );
        assert_eq!(m.clipped(), 0.0);
        assert!(m.max_abs_error <= q.scale / 2.0 + 1e-7);
    }

    #[test]
    fn clipping_is_counted_per_side() {
        let q = QParams::new(Scheme::Symmetric, 8, -1.0, 1.0);
        let m = ErrorAccum::of_chunk(&q, &[-2.0, -0.5, 0.0, 0.5, 3.0, f32::NAN]).finish();
        assert_eq!(m.clipped_below, 0.2);
        assert_eq!(m.clipped_above, 0.2);
        assert_eq!(m.max_abs_error, 2.0);
    }

    #[test]
    fn all_zero_tensor_has_cosine_one() {
        let q = QParams::new(Scheme::Affine, 8, 0.0, 0.0);
        let m = ErrorAccum::of_chunk(&q, &[0.0; 10]).finish();
        assert_eq!(m.cosine, 1.0);
        assert!(m.sqnr_db.is_nan());
        assert_eq!(m.mse, 0.0);
    }
}
