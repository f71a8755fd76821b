//! The report of `calibscope compare` in each format: text (one block per pair, then a summary
//! table), JSON (the documented shape), CSV (one row per name) and Markdown.

use std::fmt::Write;

use super::Format;
use super::csv::field;
use super::fmt::{db, num, shape};
use super::markdown::cell;
use super::text::wrap;
use crate::analysis::compare::{Comparison, Pair, PairMetrics};

pub fn render(c: &Comparison, format: Format) -> String {
    match format {
        Format::Text => text(c),
        Format::Json => super::pretty_json(c),
        Format::Csv => csv(c),
        Format::Markdown => markdown(c),
    }
}

/// `[1, 2, 3]`; `—` when there is none.
fn index(worst: Option<&Vec<usize>>) -> String {
    match worst {
        Some(w) => format!(
            "[{}]",
            w.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "—".into(),
    }
}

/// `+12.3`, `—` for none.
fn drop_db(d: Option<f64>) -> String {
    match d {
        Some(v) if v.is_finite() => format!("{v:+.1}"),
        Some(v) => num(v),
        None => "—".into(),
    }
}

/// `+1.2 dB`; `—` alone.
fn with_unit(s: String) -> String {
    if s == "—" { s } else { format!("{s} dB") }
}

fn settings_line(c: &Comparison) -> String {
    let s = &c.settings;
    format!(
        "{} pair{} · allclose atol {} rtol {} · SQNR floor {} dB",
        c.pairs.len(),
        if c.pairs.len() == 1 { "" } else { "s" },
        s.atol,
        s.rtol,
        s.sqnr_floor_db
    )
}

fn first_degraded_line(c: &Comparison) -> String {
    match &c.first_degraded {
        Some(name) => {
            let p = c.pairs.iter().find(|p| &p.name == name);
            let sqnr = p.and_then(Pair::sqnr_db).map(db).unwrap_or_default();
            let drop = p.map(|p| drop_db(p.sqnr_drop_db)).unwrap_or_default();
            format!(
                "first degraded: {name} (SQNR {sqnr} dB, drop {})",
                with_unit(drop)
            )
        }
        None => "first degraded: none".into(),
    }
}

// ---------------------------------------------------------------------------- text

fn text(c: &Comparison) -> String {
    let mut out = format!("calibscope compare: {}\n", settings_line(c));
    for p in &c.pairs {
        out.push('\n');
        text_pair(&mut out, p, c.settings.atol, c.settings.rtol);
    }
    let _ = writeln!(out, "\n== summary ==");
    if c.pairs.iter().any(|p| p.metrics.is_some()) {
        let _ = writeln!(
            out,
            "    {:<26} {:>7} {:>7} {:>9} {:>10} {:>10} {:>9} {:>5} {:>5}",
            "layer",
            "SQNR dB",
            "drop",
            "cosine",
            "max|t−r|",
            "p99|t−r|",
            "allclose✗",
            "NaN≠",
            "inf≠"
        );
        for p in &c.pairs {
            let Some(m) = &p.metrics else { continue };
            let mark = if c.first_degraded.as_ref() == Some(&p.name) {
                "▶"
            } else {
                " "
            };
            let _ = writeln!(
                out,
                "  {mark} {:<26} {:>7} {:>7} {:>9.5} {:>10} {:>10} {:>9} {:>5} {:>5}",
                fit(&p.name, 26),
                db(m.sqnr_db),
                drop_db(p.sqnr_drop_db),
                m.cosine,
                num(m.max_abs_error),
                num(m.p99_abs_error),
                m.allclose_failures,
                m.nan_mismatch,
                m.inf_mismatch
            );
        }
    }
    let _ = writeln!(out, "  {}", first_degraded_line(c));
    let failed: Vec<&Pair> = c.failed().collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "  failed pairs ({}):", failed.len());
        for p in failed {
            wrap(
                &mut out,
                "    ",
                &format!("{}: {}", p.name, p.error.as_deref().unwrap_or("")),
            );
        }
    }
    for (label, names) in [
        ("reference only", &c.reference_only),
        ("test only", &c.test_only),
    ] {
        if !names.is_empty() {
            wrap(
                &mut out,
                "  ",
                &format!("{label} ({}): {}", names.len(), names.join(", ")),
            );
        }
    }
    out
}

/// Cuts a name to `w` characters (the table stays within 100 columns).
fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(w - 1).collect();
        t.push('…');
        t
    }
}

fn text_pair(out: &mut String, p: &Pair, atol: f64, rtol: f64) {
    let _ = writeln!(out, "== {} ==", p.name);
    let dtype = |d: &str| {
        if d.is_empty() {
            String::new()
        } else {
            format!(" ({d})")
        }
    };
    let _ = writeln!(
        out,
        "  reference {}{}",
        p.reference,
        dtype(&p.reference_dtype)
    );
    let _ = writeln!(out, "  test      {}{}", p.test, dtype(&p.test_dtype));
    if let Some(m) = &p.metrics {
        let _ = writeln!(out, "  shape     {}", shape(&p.shape));
        text_metrics(out, p, m, atol, rtol);
    }
    for w in &p.warnings {
        wrap(out, "  ! ", &format!("{}: {}", w.kind.name(), w.message));
    }
    if let Some(e) = &p.error {
        wrap(out, "  ERROR     ", e);
    }
}

fn text_metrics(out: &mut String, p: &Pair, m: &PairMetrics, atol: f64, rtol: f64) {
    let _ = writeln!(
        out,
        "  SQNR      {} dB (drop {}) · cosine {:.6} · MSE {} · {} positions compared",
        db(m.sqnr_db),
        with_unit(drop_db(p.sqnr_drop_db)),
        m.cosine,
        num(m.mse),
        m.count
    );
    let _ = writeln!(
        out,
        "  |t − r|   max {} at {} · mean {} · p99 {} · max relative {}",
        num(m.max_abs_error),
        index(m.worst.as_ref()),
        num(m.mean_abs_error),
        num(m.p99_abs_error),
        num(m.max_rel_error)
    );
    let _ = writeln!(
        out,
        "  allclose  {} of {} fail (atol {atol}, rtol {rtol}) · NaN mismatch {} · inf mismatch {}",
        m.allclose_failures, m.count, m.nan_mismatch, m.inf_mismatch
    );
}

// ---------------------------------------------------------------------------- CSV

const HEADER: &str = "status,name,reference,test,shape,reference_dtype,test_dtype,count,sqnr_db,sqnr_drop_db,cosine,mse,max_abs_error,max_rel_error,mean_abs_error,p99_abs_error,allclose_failures,nan_mismatch,inf_mismatch,worst,first_degraded,warnings,error";

fn csv(c: &Comparison) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for p in &c.pairs {
        let status = if p.error.is_some() {
            "error"
        } else {
            "compared"
        };
        let shape = p
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let metrics = match &p.metrics {
            Some(m) => format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                m.count,
                m.sqnr_db,
                p.sqnr_drop_db.map(|d| d.to_string()).unwrap_or_default(),
                m.cosine,
                m.mse,
                m.max_abs_error,
                m.max_rel_error,
                m.mean_abs_error,
                m.p99_abs_error,
                m.allclose_failures,
                m.nan_mismatch,
                m.inf_mismatch,
                field(&m.worst.as_ref().map(|w| index(Some(w))).unwrap_or_default()),
                c.first_degraded.as_ref() == Some(&p.name),
            ),
            None => ",,,,,,,,,,,,,false".into(),
        };
        let warnings: Vec<&str> = p.warnings.iter().map(|w| w.kind.name()).collect();
        let _ = writeln!(
            out,
            "{status},{},{},{},{shape},{},{},{metrics},{},{}",
            field(&p.name),
            field(&p.reference),
            field(&p.test),
            field(&p.reference_dtype),
            field(&p.test_dtype),
            warnings.join(";"),
            field(p.error.as_deref().unwrap_or(""))
        );
    }
    for (status, names) in [
        ("reference_only", &c.reference_only),
        ("test_only", &c.test_only),
    ] {
        for n in names {
            let _ = writeln!(out, "{status},{}{}", field(n), ",".repeat(21));
        }
    }
    out
}

// ---------------------------------------------------------------------------- Markdown

fn markdown(c: &Comparison) -> String {
    let mut out = format!("# calibscope compare\n\n{}\n\n", settings_line(c));
    let _ = writeln!(out, "**{}**\n", first_degraded_line(c));
    let _ = writeln!(
        out,
        "| layer | shape | dtypes | SQNR dB | drop dB | cosine | MSE | max \\|t−r\\| | worst | mean \\|t−r\\| | p99 \\|t−r\\| | max rel | allclose fails | NaN≠ | inf≠ |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|"
    );
    for p in &c.pairs {
        let Some(m) = &p.metrics else { continue };
        let name = if c.first_degraded.as_ref() == Some(&p.name) {
            format!("**{}** ◀", cell(&p.name))
        } else {
            cell(&p.name)
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} / {} | {} | {} | {:.6} | {} | {} | {} | {} | {} | {} | {} of {} | {} | {} |",
            shape(&p.shape),
            p.reference_dtype,
            p.test_dtype,
            db(m.sqnr_db),
            drop_db(p.sqnr_drop_db),
            m.cosine,
            num(m.mse),
            num(m.max_abs_error),
            index(m.worst.as_ref()),
            num(m.mean_abs_error),
            num(m.p99_abs_error),
            num(m.max_rel_error),
            m.allclose_failures,
            m.count,
            m.nan_mismatch,
            m.inf_mismatch
        );
    }
    let warned: Vec<&Pair> = c.pairs.iter().filter(|p| !p.warnings.is_empty()).collect();
    if !warned.is_empty() {
        let _ = writeln!(out, "\n## Warnings\n");
        for p in warned {
            for w in &p.warnings {
                let _ = writeln!(
                    out,
                    "- `{}` {}: {}",
                    p.name,
                    w.kind.name(),
                    cell(&w.message)
                );
            }
        }
    }
    let failed: Vec<&Pair> = c.failed().collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\n## Failed pairs\n");
        for p in failed {
            let _ = writeln!(
                out,
                "- `{}`: {}",
                p.name,
                cell(p.error.as_deref().unwrap_or(""))
            );
        }
    }
    for (label, names) in [
        ("Reference only", &c.reference_only),
        ("Test only", &c.test_only),
    ] {
        if !names.is_empty() {
            let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
            let _ = writeln!(out, "\n## {label}\n\n{}", list.join(", "));
        }
    }
    out
}
