//! The plain-text report: one block per layer, then the sensitivity ranking and a warning
//! summary. Lines stay within 100 columns.

use std::fmt::Write;

use super::fmt::{db, num, pct, shape};
use super::{failed_layers, ranking, warning_counts};
use crate::analysis::model::GroupCount;
use crate::analysis::{Analysis, LayerAnalysis};

pub fn render(a: &Analysis) -> String {
    let mut out = String::new();
    let s = &a.settings;
    let _ = writeln!(
        out,
        "calibscope report: {} layers, {} {}-bit, percentiles {}, EMA constant {}",
        a.layers.len(),
        s.scheme.name(),
        s.bits,
        s.percentiles
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        s.ema_constant
    );
    for l in &a.layers {
        out.push('\n');
        layer(&mut out, l);
    }
    summary(&mut out, a);
    out
}

fn layer(out: &mut String, l: &LayerAnalysis) {
    let _ = writeln!(out, "== {} ==", l.name);
    let _ = writeln!(out, "  source    {}", l.source);
    if let Some(e) = &l.error
        && l.stats.is_none()
    {
        let _ = writeln!(out, "  ERROR     {e}");
        return;
    }
    let _ = writeln!(out, "  shape     {} {}", shape(&l.shape), l.dtype);
    if let Some(st) = &l.stats {
        let _ = writeln!(
            out,
            "  values    {} finite of {}; NaN {}, +Inf {}, -Inf {}; zeros {}%",
            st.finite,
            st.count,
            st.nan,
            st.pos_inf,
            st.neg_inf,
            pct(st.zero_fraction)
        );
        let _ = writeln!(
            out,
            "  range     min {}  max {}  mean {}  std {}  kurtosis {}",
            num(st.min),
            num(st.max),
            num(st.mean),
            num(st.std),
            num(st.kurtosis)
        );
        let p = &st.percentiles;
        let line = |m: &std::collections::BTreeMap<String, f64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", num(*v)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(out, "  pct x    {}", line(&p.x));
        let _ = writeln!(out, "  pct |x|  {}", line(&p.abs));
    }
    for c in &l.casts {
        let _ = writeln!(
            out,
            "  {:<9} overflow {}, flush-to-zero {}, subnormal {}; SQNR {} dB, max rel err {}",
            c.dtype.name(),
            c.overflow,
            c.underflow,
            c.subnormal,
            db(c.sqnr_db),
            num(c.max_rel_error)
        );
    }
    if !l.methods.is_empty() {
        let v = l.validation.as_ref();
        // Held out: the range calibrated without each value's fold (README "Held-out
        // validation"), beside the in-sample figures.
        let held_head = if v.is_some() {
            format!(" {:>8} {:>9}", "held-out", "h-o clip%")
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "    {:<17} {:>21} {:>10} {:>5} {:>7} {:>10} {:>7} {:>8}{held_head}",
            "method", "range", "scale", "zp", "clip%", "MSE", "SQNR", "cosine"
        );
        for m in &l.methods {
            let mark = if l.is_recommended(m) { "*" } else { " " };
            let range = format!("[{}, {}]", num(m.range[0]), num(m.range[1]));
            let held = match v.and_then(|v| v.method(&m.label())) {
                Some(h) => format!(
                    " {:>8} {:>9}",
                    db(h.heldout.sqnr_db),
                    pct(h.heldout.clipped_fraction)
                ),
                None if v.is_some() => format!(" {:>8} {:>9}", "-", "-"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {mark} {:<17} {:>21} {:>10} {:>5} {:>7} {:>10} {:>7} {:>8.5}{held}",
                m.label(),
                range,
                num(m.scale),
                m.zero_point,
                pct(m.metrics.clipped()),
                num(m.metrics.mse),
                db(m.metrics.sqnr_db),
                m.metrics.cosine
            );
        }
        match (&l.recommended, v) {
            (Some(r), Some(v)) => {
                let held = v.method(r).map_or(f64::NAN, |h| h.heldout.sqnr_db);
                wrap(
                    out,
                    "  * recommended: ",
                    &format!(
                        "{r} (held-out SQNR {} dB over {} folds of {} batches: {}; best in-sample SQNR {} dB)",
                        db(held),
                        v.folds,
                        v.batches,
                        v.rule.phrase(),
                        db(l.sensitivity_sqnr_db.unwrap_or(f64::NAN))
                    ),
                );
            }
            (Some(r), None) => {
                let _ = writeln!(
                    out,
                    "  * recommended: {r} (best SQNR {} dB)",
                    db(l.sensitivity_sqnr_db.unwrap_or(f64::NAN))
                );
            }
            _ => {}
        }
        if let Some(c) = &l.convergence {
            wrap(
                out,
                "  convergence: ",
                &format!("{}: {}", c.verdict.name(), c.detail),
            );
            let intervals: Vec<String> = c
                .methods
                .iter()
                .filter_map(|m| {
                    let [lo, hi] = m.interval_95?;
                    Some(if lo == [-hi[1], -hi[0]] {
                        format!("{} |x| in [{}, {}]", m.label(), num(hi[0]), num(hi[1]))
                    } else {
                        format!(
                            "{} lo in [{}, {}], hi in [{}, {}]",
                            m.label(),
                            num(lo[0]),
                            num(lo[1]),
                            num(hi[0]),
                            num(hi[1])
                        )
                    })
                })
                .collect();
            if !intervals.is_empty() {
                wrap(out, "  95% CI: ", &intervals.join("; "));
            }
        }
    }
    granularities(out, l);
    formats(out, l);
    for n in &l.notes {
        wrap(out, "  note: ", n);
    }
    for w in &l.warnings {
        wrap(out, "  ! ", &format!("{}: {}", w.kind.name(), w.message));
    }
    if let Some(e) = &l.error {
        let _ = writeln!(out, "  ERROR     {e}");
    }
}

/// The granularity rows and the channel summary.
fn granularities(out: &mut String, l: &LayerAnalysis) {
    if !l.granularities.is_empty() {
        let _ = writeln!(
            out,
            "    {:<17} {:>21} {:>10} {:>5} {:>7} {:>10} {:>7} {:>8}",
            "granularity", "groups", "max err", "", "clip%", "MSE", "SQNR", "cosine"
        );
        let mut row = |label: String, groups: String, m: &crate::analysis::metrics::Metrics| {
            let _ = writeln!(
                out,
                "    {:<17} {:>21} {:>10} {:>5} {:>7} {:>10} {:>7} {:>8.5}",
                label,
                groups,
                num(m.max_abs_error),
                "",
                pct(m.clipped()),
                num(m.mse),
                db(m.sqnr_db),
                m.cosine
            );
        };
        for (label, count, m) in l.granularity_rows() {
            let groups = match count {
                GroupCount::Groups(n) => n.to_string(),
                GroupCount::ExactChannels(n) => format!("{n} ch exact"),
            };
            row(label, groups, m);
        }
    }
    if let Some(c) = &l.channels {
        let top = c
            .top
            .iter()
            .map(|t| format!("{} ({}, {}×)", t.channel, num(t.absmax), num(t.ratio)))
            .collect::<Vec<_>>()
            .join(", ");
        wrap(
            out,
            "  channels ",
            &format!(
                "axis {}, {} channels, median absmax {}; largest: {top}",
                c.axis,
                c.count,
                num(c.absmax_median)
            ),
        );
        let outliers = if c.outliers.is_empty() {
            "none".to_string()
        } else {
            list(&c.outliers, 16)
        };
        let t = &c.above_threshold;
        wrap(
            out,
            "           ",
            &format!(
                "outliers: {outliers}; |x| ≥ {}: {} values in {} channels",
                num(t.threshold),
                t.values,
                t.channels
            ),
        );
    }
}

/// The format rows and the best row at each bit budget.
fn formats(out: &mut String, l: &LayerAnalysis) {
    if l.formats.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "    {:<27} {:>11} {:>10} {:>7} {:>10} {:>7} {:>8}",
        "format", "amax", "max err", "clip%", "MSE", "SQNR", "NaN/inf"
    );
    for r in &l.formats {
        let _ = writeln!(
            out,
            "    {:<27} {:>11} {:>10} {:>7} {:>10} {:>7} {:>8}",
            r.label(),
            r.amax.map(num).unwrap_or_default(),
            num(r.metrics.max_abs_error),
            pct(r.metrics.clipped()),
            num(r.metrics.mse),
            db(r.metrics.sqnr_db),
            r.unclamped_nonfinite
                .map(|n| n.to_string())
                .unwrap_or_default()
        );
    }
    for line in crate::analysis::formats::budget_lines(l, l.methods.first().map_or(8, |m| m.bits)) {
        wrap(out, "  * ", &line);
    }
}

/// The first `n` indices, then how many more.
fn list(v: &[usize], n: usize) -> String {
    let head = v
        .iter()
        .take(n)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if v.len() > n {
        format!("{head} and {} more", v.len() - n)
    } else {
        head
    }
}

/// Writes `text` after `lead`, word-wrapped at 100 columns with a hanging indent.
pub(super) fn wrap(out: &mut String, lead: &str, text: &str) {
    const WIDTH: usize = 100;
    let indent = " ".repeat(lead.chars().count() + 2);
    let mut line = lead.to_string();
    let mut fresh = true;
    for word in text.split(' ') {
        let len = line.chars().count();
        if !fresh && len + 1 + word.chars().count() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = indent.clone();
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line.push_str(word);
        fresh = false;
    }
    out.push_str(&line);
    out.push('\n');
}

fn summary(out: &mut String, a: &Analysis) {
    let _ = writeln!(out, "\n== summary ==");
    let ranked = ranking(a);
    if !ranked.is_empty() {
        let _ = writeln!(
            out,
            "  sensitivity (best SQNR at {} bits, most sensitive first):",
            a.settings.bits
        );
        for (i, l) in ranked.iter().enumerate() {
            let _ = writeln!(
                out,
                "  {:>3}. {:<44} {:>7} dB  {}",
                i + 1,
                l.name,
                db(l.sensitivity_sqnr_db.unwrap_or(f64::NAN)),
                l.recommended.as_deref().unwrap_or("-")
            );
        }
    }
    let counts = warning_counts(a);
    if counts.is_empty() {
        let _ = writeln!(out, "  warnings: none");
    } else {
        let _ = writeln!(out, "  warnings:");
        for (kind, layers) in counts {
            let _ = writeln!(out, "    {:<26} {} layer(s)", kind.name(), layers);
        }
    }
    let failed = failed_layers(a);
    if !failed.is_empty() {
        let _ = writeln!(out, "  failed inputs ({}):", failed.len());
        for l in failed {
            let _ = writeln!(out, "    {}", l.error.as_deref().unwrap_or(""));
        }
    }
}
