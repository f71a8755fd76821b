//! CSV: one row per layer × method (a layer with no methods, e.g. a failed one, gets one row).

use std::fmt::Write;

use crate::analysis::Analysis;

const HEADER: &str = "layer,source,shape,dtype,method,percentile,scheme,bits,lo,hi,scale,zero_point,candidates,mse,sqnr_db,max_abs_error,cosine,clipped_below,clipped_above,recommended,warnings,error";

/// Quotes a field when it holds a separator, quote or newline (RFC 4180).
pub(super) fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
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
                "{head},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{warnings},{error}",
                m.method.name(),
                m.percentile.map(|p| p.to_string()).unwrap_or_default(),
                m.scheme.name(),
                m.bits,
                m.range[0],
                m.range[1],
                m.scale,
                m.zero_point,
                m.candidates,
                m.metrics.mse,
                m.metrics.sqnr_db,
                m.metrics.max_abs_error,
                m.metrics.cosine,
                m.metrics.clipped_below,
                m.metrics.clipped_above,
                rec,
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
