//! What a decoded saved analysis must satisfy before anything uses it. A file calibscope wrote
//! always does; one edited by hand or corrupted in a way CBOR cannot see may not, and the code
//! after this (a re-run, the UI's histograms) indexes by these sizes.

use crate::analysis::granularity::MAX_CHANNELS;
use crate::analysis::model::JSON_VERSION;
use crate::analysis::options::{FINE_BINS, MAX_BATCHES, Options, SEARCH_BINS};
use crate::analysis::profile::KeptProfile;
use crate::histogram::PackedHistogram;

use super::Saved;

/// The first thing wrong with `s`, if any.
pub(super) fn saved(s: &Saved) -> Result<(), String> {
    if s.analysis.version != JSON_VERSION {
        return Err(format!(
            "its analysis has version {}, not {JSON_VERSION}",
            s.analysis.version
        ));
    }
    s.options(&Options::default())
        .validate()
        .map_err(|e| format!("its settings are invalid: {e}"))?;
    if s.layers.len() != s.analysis.layers.len() {
        return Err(format!(
            "{} layers but {} layer records",
            s.analysis.layers.len(),
            s.layers.len()
        ));
    }
    let sh = &s.shard;
    if sh.count == 0 || sh.index >= sh.count {
        return Err(format!("shard {}/{} is not a shard", sh.index, sh.count));
    }
    if s.layers.len() > sh.total {
        return Err(format!(
            "{} layers in a run of {} layers",
            s.layers.len(),
            sh.total
        ));
    }
    let mut last = None;
    for (l, a) in s.layers.iter().zip(&s.analysis.layers) {
        if l.position >= sh.total || last.is_some_and(|p| l.position <= p) {
            return Err(format!(
                "layer {}: position {} is out of order or past the {} layers",
                a.name, l.position, sh.total
            ));
        }
        last = Some(l.position);
        if l.spec.as_ref().is_some_and(|sp| sp.parts.is_empty()) {
            return Err(format!("layer {}: no data files", a.name));
        }
        if let Some(p) = &l.profile {
            profile(p).map_err(|m| format!("layer {}: {m}", a.name))?;
        }
    }
    Ok(())
}

fn profile(p: &KeptProfile) -> Result<(), String> {
    hist("histogram of x", &p.hist, FINE_BINS)?;
    hist("histogram of |x|", &p.abs_hist, FINE_BINS)?;
    if let Some(h) = &p.entropy_hist {
        hist("entropy histogram", h, SEARCH_BINS)?;
    }
    if p.parts == 0 {
        return Err("a profile of no files".into());
    }
    if p.batches.len() > MAX_BATCHES {
        return Err(format!("{} batches", p.batches.len()));
    }
    if p.moments.n > p.moments.count {
        return Err("more finite values than values".into());
    }
    if let Some(c) = &p.channels {
        let l = &c.layout;
        let maps_fit =
            l.maps.len() == p.parts && l.maps.iter().all(|m| m.count == l.count && m.stride > 0);
        if l.count == 0 || l.count > MAX_CHANNELS || c.absmax.len() != l.count || !maps_fit {
            return Err(format!(
                "its channel profile does not fit its {} channels",
                l.count
            ));
        }
    }
    Ok(())
}

fn hist(what: &str, h: &PackedHistogram, bins: usize) -> Result<(), String> {
    if h.bins() != bins {
        return Err(format!("its {what} has {} bins, not {bins}", h.bins()));
    }
    if !(h.lo.is_finite() && h.hi.is_finite() && h.lo <= h.hi) {
        return Err(format!("its {what} spans [{}, {}]", h.lo, h.hi));
    }
    Ok(())
}
