//! (Stub: being written.)

use super::Search;
use crate::analysis::histogram::Histogram;

/// Symmetric search on the |x| histogram over `[0, max|x|]`: returns `[-a, a]`.
pub fn symmetric(abs_hist: &Histogram, _bits: u8) -> Search {
    Search { lo: -abs_hist.hi, hi: abs_hist.hi, candidates: 1 }
}

/// Affine search on the signed histogram over `[min, max]`.
pub fn affine(signed_hist: &Histogram, _bits: u8) -> Search {
    Search { lo: signed_hist.lo, hi: signed_hist.hi, candidates: 1 }
}
