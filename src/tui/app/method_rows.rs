//! The method table's rows and the number format they are shown in (`x`): the int methods, or
//! one FP8 format's per-tensor rows (one per calibrator's amax, README "Formats").

use crate::analysis::FormatResult;
use crate::analysis::formats::recommended_fp8;

use super::*;

/// What a row measures, the same in every number format: the calibrator's name (`mse_fp8` for
/// the FP8 search) and its percentile. The selection follows it when the format changes.
pub type RowKey = (String, Option<f64>);

impl App {
    /// The selected layer's per-tensor rows of the FP8 format shown (none in the int view).
    pub fn fp8_rows(&self) -> Vec<&FormatResult> {
        match (self.number_format, self.selected_layer()) {
            (Some(kind), Some(layer)) => layer.fp8_tensor_rows(kind),
            _ => Vec::new(),
        }
    }

    /// Rows of the method table in the number format shown.
    pub fn method_count(&self) -> usize {
        match self.number_format {
            None => self.selected_layer().map_or(0, |l| l.methods.len()),
            Some(_) => self.fp8_rows().len(),
        }
    }

    /// The FP8 view's ★: the row with the best SQNR (the one `--export json --method
    /// recommended` writes).
    pub fn best_fp8_row(&self) -> Option<usize> {
        recommended_fp8(&self.fp8_rows())
    }

    /// The highlighted method row: the user's pick, else the recommended one (in the FP8
    /// view: the best SQNR).
    pub fn method_index(&self) -> Option<usize> {
        let layer = self.selected_layer()?;
        let n = self.method_count();
        if n == 0 {
            return None;
        }
        if let Some(i) = self.method {
            return Some(i.min(n - 1));
        }
        let recommended = match self.number_format {
            None => layer.methods.iter().position(|m| layer.is_recommended(m)),
            Some(_) => self.best_fp8_row(),
        };
        Some(recommended.unwrap_or(0))
    }

    /// The per-tensor FP8 formats some layer has rows for, in `--formats` order.
    pub fn fp8_formats(&self) -> Vec<FormatKind> {
        FormatKind::ALL
            .into_iter()
            .filter(|&k| {
                k.is_fp8()
                    && self.slots.iter().any(|s| {
                        s.result
                            .as_ref()
                            .is_some_and(|r| !r.fp8_tensor_rows(k).is_empty())
                    })
            })
            .collect()
    }

    /// `x`: int → each FP8 format with rows → int. With none, says why in the status line.
    pub(super) fn switch_number_format(&mut self) {
        let have = self.fp8_formats();
        if have.is_empty() && self.number_format.is_none() {
            let fp8_asked = self.opts.formats.iter().any(|f| f.is_fp8());
            self.message = Some(if fp8_asked {
                "no layer has per-tensor FP8 rows yet".into()
            } else {
                let asked: Vec<&str> = self.opts.formats.iter().map(|f| f.name()).collect();
                format!(
                    "no FP8 rows to show: the analysis ran with --formats {}",
                    if asked.is_empty() {
                        "none".to_string()
                    } else {
                        asked.join(",")
                    }
                )
            });
            return;
        }
        let next = match self.number_format {
            None => have.first().copied(),
            Some(cur) => have.iter().copied().find(|&k| k > cur),
        };
        // A row the user picked stays picked when the other format has it (same calibrator).
        let picked = self.method.and_then(|i| self.row_keys().into_iter().nth(i));
        self.number_format = next;
        self.method = picked.and_then(|k| self.row_keys().iter().position(|r| *r == k));
        if self.view != View::Main {
            self.message = Some(format!(
                "the main view now shows {}",
                next.map_or("int", FormatKind::name)
            ));
        }
    }

    /// What the method cursor's row measures (the convergence chart highlights that calibrator,
    /// whichever number format the table shows).
    pub fn selected_row_key(&self) -> Option<RowKey> {
        self.row_keys().into_iter().nth(self.method_index()?)
    }

    /// What each row of the method table measures, in table order.
    fn row_keys(&self) -> Vec<RowKey> {
        match self.number_format {
            None => self.selected_layer().map_or_else(Vec::new, |l| {
                l.methods
                    .iter()
                    .map(|m| (m.method.name().to_string(), m.percentile))
                    .collect()
            }),
            Some(_) => self
                .fp8_rows()
                .iter()
                .map(|f| (f.method.clone().unwrap_or_default(), f.percentile))
                .collect(),
        }
    }
}
