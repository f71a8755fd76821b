//! CSV: one row per layer × method (a layer with no methods, e.g. a failed one, gets one row),
//! then one per layer × granularity row, whose `method` is `granularity:tensor`,
//! `granularity:token`, `granularity:channel`, `granularity:block:G` or
//! `granularity:outliers_in_float` (range, scale, zero point, candidates and recommended empty),
//! then with `--validate` one per layer × method held out, whose `method` is `heldout:minmax`,
//! `heldout:percentile`, ... (its ranges differ by fold: range, scale, zero point and
//! candidates empty; `recommended` true for the method the held-out rule chose),
//! then one per layer × format row, whose `method` is `format:fp8_e4m3:entropy`,
//! `format:fp8_e4m3:percentile 99.9`, `format:fp8_e4m3:token`, `format:mxfp4:ocp`,
//! `format:nvfp4`, ... (`lo`/`hi` ±amax and `scale` amax/M for per-tensor rows; scheme empty).

use std::fmt::Write;

use crate::analysis::Analysis;
use crate::analysis::metrics::Metrics;

const HEADER: &str = "layer,source,shape,dtype,method,percentile,scheme,bits,lo,hi,scale,zero_point,candidates,mse,sqnr_db,max_abs_error,cosine,clipped_below,clipped_above,recommended,warnings,error";

/// Quotes a field when it holds a separator, quote or newline (RFC 4180).
pub(super) fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The six metric columns, mse to clipped_above, as every kind of row writes them.
fn metric_fields(m: &Metrics) -> String {
    format!(
        "{},{},{},{},{},{}",
        m.mse, m.sqnr_db, m.max_abs_error, m.cosine, m.clipped_below, m.clipped_above
    )
}

pub fn render(a: &Analysis) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for l in &a.layers {
        let shape = l
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let warnings = l
            .warnings
            .iter()
            .map(|w| w.kind.name())
            .collect::<Vec<_>>()
            .join(";");
        let head = format!(
            "{},{},{},{}",
            field(&l.name),
            field(&l.source),
            shape,
            field(&l.dtype)
        );
        let error = field(l.error.as_deref().unwrap_or(""));
        if l.methods.is_empty() {
            let _ = writeln!(out, "{head},,,,,,,,,,,,,,,,,{warnings},{error}");
        }
        for m in &l.methods {
            let rec = l.is_recommended(m);
            let _ = writeln!(
                out,
                "{head},{},{},{},{},{},{},{},{},{},{},{rec},{warnings},{error}",
                m.method.name(),
                m.percentile.map(|p| p.to_string()).unwrap_or_default(),
                m.scheme.name(),
                m.bits,
                m.range[0],
                m.range[1],
                m.scale,
                m.zero_point,
                m.candidates,
                metric_fields(&m.metrics),
            );
        }
        let rows = l
            .granularities
            .iter()
            .map(|g| (g.csv_method(), g.bits, &g.metrics));
        let in_float = l
            .channels
            .as_ref()
            .and_then(|c| c.outliers_in_float.as_ref())
            .map(|f| {
                (
                    "granularity:outliers_in_float".to_string(),
                    a.settings.bits,
                    &f.metrics,
                )
            });
        for (method, bits, m) in rows.chain(in_float) {
            let _ = writeln!(
                out,
                "{head},{method},,symmetric,{bits},,,,,,{},,{warnings},{error}",
                metric_fields(m),
            );
        }
        for h in l.validation.iter().flat_map(|v| &v.methods) {
            let _ = writeln!(
                out,
                "{head},heldout:{},{},{},{},,,,,,{},{},{warnings},{error}",
                h.method.name(),
                h.percentile.map(|p| p.to_string()).unwrap_or_default(),
                a.settings.scheme.name(),
                a.settings.bits,
                metric_fields(&h.heldout.metrics),
                l.recommended.as_deref() == Some(h.label().as_str()),
            );
        }
        for r in &l.formats {
            // Per-tensor rows: the range ±amax and the scale amax/M (float32, as used).
            let (lo, hi, scale) = match (r.amax, r.scale()) {
                (Some(a), Some(s)) => ((-a).to_string(), a.to_string(), s.to_string()),
                _ => Default::default(),
            };
            let _ = writeln!(
                out,
                "{head},{},{},,{},{lo},{hi},{scale},,,{},,{warnings},{error}",
                field(&r.csv_method()),
                r.percentile.map(|p| p.to_string()).unwrap_or_default(),
                r.format.bits(),
                metric_fields(&r.metrics),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(field("conv1"), "conv1");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
