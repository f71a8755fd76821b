//! Markdown report: a table per layer, then the sensitivity ranking and warnings.

use std::fmt::Write;

use super::fmt::{db, num, pct, shape};
use super::{failed_layers, ranking, warning_counts};
use crate::analysis::metrics::Metrics;
use crate::analysis::model::GroupCount;
use crate::analysis::{Analysis, LayerAnalysis};

/// Escapes the characters that would break a table cell.
pub(super) fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn render(a: &Analysis) -> String {
    let mut out = String::new();
    let s = &a.settings;
    let _ = writeln!(
        out,
        "# calibscope report\n\n{} layers · {} {}-bit · percentiles {:?} · EMA constant {}\n",
        a.layers.len(),
        s.scheme.name(),
        s.bits,
        s.percentiles,
        s.ema_constant
    );
    for l in &a.layers {
        let _ = writeln!(out, "## {}\n", cell(&l.name));
        let _ = writeln!(out, "Source: `{}`\n", l.source);
        if let Some(st) = &l.stats {
            let _ = writeln!(
                out,
                "| shape | dtype | finite | NaN | ±Inf | min | max | mean | std | kurtosis | zeros % |"
            );
            let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                shape(&l.shape),
                l.dtype,
                st.finite,
                st.nan,
                st.pos_inf + st.neg_inf,
                num(st.min),
                num(st.max),
                num(st.mean),
                num(st.std),
                num(st.kurtosis),
                pct(st.zero_fraction)
            );
        }
        if !l.casts.is_empty() {
            let _ = writeln!(
                out,
                "| cast | overflow | flush to zero | subnormal | SQNR dB | max rel err |"
            );
            let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|");
            for c in &l.casts {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    c.dtype.name(),
                    c.overflow,
                    c.underflow,
                    c.subnormal,
                    db(c.sqnr_db),
                    num(c.max_rel_error)
                );
            }
            out.push('\n');
        }
        if !l.methods.is_empty() {
            let v = l.validation.as_ref();
            let (head, rule) = if v.is_some() {
                (" held-out SQNR dB | held-out clipped % |", "--:|--:|")
            } else {
                ("", "")
            };
            let _ = writeln!(
                out,
                "| method | range | scale | zero point | clipped % | MSE | SQNR dB | cosine |{head}"
            );
            let _ = writeln!(out, "|---|---|--:|--:|--:|--:|--:|--:|{rule}");
            for m in &l.methods {
                let rec = l.is_recommended(m);
                let label = if rec {
                    format!("**{}** ✓", m.label())
                } else {
                    m.label()
                };
                let held = match v.and_then(|v| v.method(&m.label())) {
                    Some(h) => format!(
                        " {} | {} |",
                        db(h.heldout.sqnr_db),
                        pct(h.heldout.clipped_fraction)
                    ),
                    None if v.is_some() => " - | - |".to_string(),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "| {} | [{}, {}] | {} | {} | {} | {} | {} | {:.5} |{held}",
                    label,
                    num(m.range[0]),
                    num(m.range[1]),
                    num(m.scale),
                    m.zero_point,
                    pct(m.metrics.clipped()),
                    num(m.metrics.mse),
                    db(m.metrics.sqnr_db),
                    m.metrics.cosine
                );
            }
            out.push('\n');
            if let (Some(r), Some(v)) = (&l.recommended, v) {
                let _ = writeln!(
                    out,
                    "- recommended: **{}** by held-out SQNR over {} folds of {} batches ({})",
                    cell(r),
                    v.folds,
                    v.batches,
                    v.rule.phrase()
                );
            }
            if let Some(c) = &l.convergence {
                let _ = writeln!(
                    out,
                    "- convergence: **{}**: {}",
                    c.verdict.name(),
                    cell(&c.detail)
                );
            }
            if v.is_some() || l.convergence.is_some() {
                out.push('\n');
            }
        }
        granularities(&mut out, l);
        formats(&mut out, l);
        for n in &l.notes {
            let _ = writeln!(out, "- note: {}", cell(n));
        }
        for w in &l.warnings {
            let _ = writeln!(out, "- ⚠ `{}`: {}", w.kind.name(), cell(&w.message));
        }
        if let Some(e) = &l.error {
            let _ = writeln!(out, "- **error**: {}", cell(e));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "## Sensitivity\n\n| # | layer | best SQNR dB | method |"
    );
    let _ = writeln!(out, "|--:|---|--:|---|");
    for (i, l) in ranking(a).iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            i + 1,
            cell(&l.name),
            db(l.sensitivity_sqnr_db.unwrap_or(f64::NAN)),
            l.recommended.as_deref().unwrap_or("-")
        );
    }
    let counts = warning_counts(a);
    if !counts.is_empty() {
        let _ = writeln!(out, "\n## Warnings\n\n| kind | layers |\n|---|--:|");
        for (k, n) in counts {
            let _ = writeln!(out, "| `{}` | {} |", k.name(), n);
        }
    }
    let failed = failed_layers(a);
    if !failed.is_empty() {
        let _ = writeln!(out, "\n## Failed inputs\n");
        for l in failed {
            let _ = writeln!(out, "- {}", cell(l.error.as_deref().unwrap_or("")));
        }
    }
    out
}

/// The format rows of one layer and the best row at each bit budget.
fn formats(out: &mut String, l: &LayerAnalysis) {
    if l.formats.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "| format | amax | max abs error | clipped % | MSE | SQNR dB | cosine | NaN/inf if unclamped |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|");
    for r in &l.formats {
        let m = &r.metrics;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.5} | {} |",
            r.label(),
            r.amax.map(num).unwrap_or_default(),
            num(m.max_abs_error),
            pct(m.clipped()),
            num(m.mse),
            db(m.sqnr_db),
            m.cosine,
            r.unclamped_nonfinite
                .map(|n| n.to_string())
                .unwrap_or_default()
        );
    }
    out.push('\n');
    let bits = l.methods.first().map_or(8, |m| m.bits);
    for line in crate::analysis::formats::budget_lines(l, bits) {
        let _ = writeln!(out, "- {}", cell(&line));
    }
}

/// The granularity table and the channel summary of one layer.
fn granularities(out: &mut String, l: &LayerAnalysis) {
    if !l.granularities.is_empty() {
        let _ = writeln!(
            out,
            "| granularity | groups | max abs error | clipped % | MSE | SQNR dB | cosine |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|");
        let mut row = |label: String, groups: String, m: &Metrics| {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.5} |",
                label,
                groups,
                num(m.max_abs_error),
                pct(m.clipped()),
                num(m.mse),
                db(m.sqnr_db),
                m.cosine
            );
        };
        for (label, count, m) in l.granularity_rows() {
            let groups = match count {
                GroupCount::Groups(n) => n.to_string(),
                GroupCount::ExactChannels(n) => format!("{n} channels exact"),
            };
            row(label, groups, m);
        }
        out.push('\n');
    }
    if let Some(c) = &l.channels {
        let top = c
            .top
            .iter()
            .map(|t| format!("{} ({}, {}×)", t.channel, num(t.absmax), num(t.ratio)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "- channels: axis {}, {} channels, median absmax {}; largest: {top}",
            c.axis,
            c.count,
            num(c.absmax_median)
        );
        let shown: Vec<String> = c.outliers.iter().take(32).map(|i| i.to_string()).collect();
        let more = c.outliers.len().saturating_sub(shown.len());
        let t = &c.above_threshold;
        let line = format!(
            "outlier channels: {}{}; |x| ≥ {}: {} values in {} channels",
            if shown.is_empty() {
                "none".to_string()
            } else {
                shown.join(", ")
            },
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            num(t.threshold),
            t.values,
            t.channels
        );
        let _ = writeln!(out, "- {}", cell(&line));
    }
}
