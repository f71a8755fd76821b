//! The main view's details panel (casts, statistics, warnings, notes) as rows already wrapped
//! to the panel's width: the drawing shows them and the state scrolls them by the same count,
//! so ↓ and the wheel reach the last warning whatever the terminal size.

use ratatui::layout::{Constraint, Layout, Margin, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};

use crate::analysis::LayerAnalysis;
use crate::report::fmt::{count_short, db_short, num_short, pct_short};

/// Below this width the casts use their compact form.
const WIDE_CASTS: u16 = 90;
/// From this width the numbers stand left and the warnings scroll beside them.
const SIDE_BY_SIDE: u16 = 120;
/// The left column's width when side by side.
const LEFT_W: u16 = 62;

/// The panel's rows for one layer in the area below its title.
#[derive(Clone, Debug)]
pub struct Details {
    /// The numbers, in their own column when side by side (else empty).
    pub fixed: Vec<Line<'static>>,
    pub fixed_area: Option<Rect>,
    /// The rows that scroll: everything, or the warnings when side by side.
    pub scrolled: Vec<Line<'static>>,
    pub scrolled_area: Rect,
    /// Rows of `scrolled` shown at once.
    pub height: usize,
}

impl Details {
    /// The last useful scroll offset: the last row at the bottom.
    pub fn max_scroll(&self) -> usize {
        self.scrolled.len().saturating_sub(self.height)
    }
}

/// The details of `layer` in `area` (the panel inside its title line).
pub fn details(layer: &LayerAnalysis, area: Rect) -> Details {
    if area.width >= SIDE_BY_SIDE {
        let [left, right] =
            Layout::horizontal([Constraint::Length(LEFT_W), Constraint::Min(0)]).areas(area);
        let right = right.inner(Margin::new(1, 0));
        let mut fixed = cast_lines(layer, false);
        fixed.push(Line::default());
        fixed.push(stats_line(layer));
        return Details {
            fixed: wrap(fixed, usize::from(left.width)),
            fixed_area: Some(left),
            scrolled: wrap(warning_lines(layer), usize::from(right.width)),
            scrolled_area: right,
            height: usize::from(right.height),
        };
    }
    let mut lines = cast_lines(layer, area.width >= WIDE_CASTS);
    lines.extend(warning_lines(layer));
    lines.push(stats_line(layer));
    Details {
        fixed: Vec::new(),
        fixed_area: None,
        scrolled: wrap(lines, usize::from(area.width)),
        scrolled_area: area,
        height: usize::from(area.height),
    }
}

/// `lines` word-wrapped to `width` columns (a word longer than a row is split; the space at a
/// break is dropped), styles kept. Widths are counted in chars.
pub fn wrap(lines: Vec<Line<'static>>, width: usize) -> Vec<Line<'static>> {
    if width == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for line in lines {
        let cells: Vec<(char, Style)> = line
            .spans
            .iter()
            .flat_map(|s| {
                let st = line.style.patch(s.style);
                s.content.chars().map(move |c| (c, st))
            })
            .collect();
        if cells.is_empty() {
            out.push(Line::default());
            continue;
        }
        let mut start = 0;
        while start < cells.len() {
            let end = (start + width).min(cells.len());
            let (row_end, next) = if end == cells.len() {
                (end, end)
            } else {
                // The last space that leaves something on this row, else a hard split.
                match (start + 1..=end).rev().find(|&i| cells[i].0 == ' ') {
                    Some(sp) => (sp, sp + 1),
                    None => (end, end),
                }
            };
            out.push(join(&cells[start..row_end]));
            start = next;
        }
    }
    out
}

/// Cells back into spans, one per run of equal style.
fn join(cells: &[(char, Style)]) -> Line<'static> {
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut text = String::new();
    let mut style: Option<Style> = None;
    for &(c, st) in cells {
        if style.is_some_and(|s| s != st) {
            spans.push(Span::styled(
                std::mem::take(&mut text),
                style.unwrap_or_default(),
            ));
        }
        style = Some(st);
        text.push(c);
    }
    if let Some(st) = style {
        spans.push(Span::styled(text, st));
    }
    Line::from(spans)
}

fn stats_line(layer: &LayerAnalysis) -> Line<'static> {
    let Some(s) = &layer.stats else {
        return Line::from("no statistics".dark_gray());
    };
    let dim = Style::new().fg(Color::DarkGray);
    let mut spans = vec![
        Span::styled("n ", dim),
        Span::raw(count_short(s.count)),
        Span::styled("  min ", dim),
        Span::raw(num_short(s.min)),
        Span::styled("  max ", dim),
        Span::raw(num_short(s.max)),
        Span::styled("  mean ", dim),
        Span::raw(num_short(s.mean)),
        Span::styled("  std ", dim),
        Span::raw(num_short(s.std)),
        Span::styled("  kurt ", dim),
        Span::raw(num_short(s.kurtosis)),
        Span::styled("  zeros ", dim),
        Span::raw(format!("{}%", pct_short(s.zero_fraction))),
    ];
    let bad = s.nan + s.pos_inf + s.neg_inf;
    if bad > 0 {
        spans.push(Span::styled(
            format!("  NaN {} +Inf {} -Inf {}", s.nan, s.pos_inf, s.neg_inf),
            Style::new().fg(Color::Red),
        ));
    }
    Line::from(spans)
}

/// One line per cast. `wide`: aligned columns with full labels; else compact (80 columns).
fn cast_lines(layer: &LayerAnalysis, wide: bool) -> Vec<Line<'static>> {
    let dim = Style::new().fg(Color::DarkGray);
    let bad = |n: u64| {
        if n > 0 {
            Style::new().fg(Color::Red).bold()
        } else {
            Style::new()
        }
    };
    let sub_style = |n: u64| {
        if n > 0 {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new()
        }
    };
    layer
        .casts
        .iter()
        .map(|c| {
            if wide {
                Line::from(vec![
                    Span::styled(format!("{:<9}", c.dtype.name()), Style::new().bold()),
                    Span::styled("overflow ", dim),
                    Span::styled(format!("{:<7}", count_short(c.overflow)), bad(c.overflow)),
                    Span::styled("flush-to-0 ", dim),
                    Span::styled(format!("{:<7}", count_short(c.underflow)), bad(c.underflow)),
                    Span::styled("subnormal ", dim),
                    Span::styled(
                        format!("{:<7}", count_short(c.subnormal)),
                        sub_style(c.subnormal),
                    ),
                    Span::styled("SQNR ", dim),
                    Span::raw(format!("{:>6} dB  ", db_short(c.sqnr_db))),
                    Span::styled("max rel err ", dim),
                    Span::raw(num_short(c.max_rel_error)),
                ])
            } else {
                let name = match c.dtype {
                    crate::analysis::cast::CastType::Float16 => "fp16",
                    crate::analysis::cast::CastType::Bfloat16 => "bf16",
                };
                Line::from(vec![
                    Span::styled(format!("{name} "), Style::new().bold()),
                    Span::styled("ovf ", dim),
                    Span::styled(format!("{} ", count_short(c.overflow)), bad(c.overflow)),
                    Span::styled("ftz ", dim),
                    Span::styled(format!("{} ", count_short(c.underflow)), bad(c.underflow)),
                    Span::styled("sub ", dim),
                    Span::styled(
                        format!("{} ", count_short(c.subnormal)),
                        sub_style(c.subnormal),
                    ),
                    Span::raw(format!("{}dB ", db_short(c.sqnr_db))),
                    Span::styled("rel ", dim),
                    Span::raw(num_short(c.max_rel_error)),
                ])
            }
        })
        .collect()
}

fn warning_lines(layer: &LayerAnalysis) -> Vec<Line<'static>> {
    let mut v: Vec<Line> = layer
        .warnings
        .iter()
        .map(|w| {
            Line::from(vec![
                Span::styled("⚠ ", Style::new().fg(Color::Yellow)),
                Span::styled(
                    format!("{} ", w.kind.name()),
                    Style::new().fg(Color::Yellow).bold(),
                ),
                Span::styled(
                    format!("({}) ", num_short(w.value)),
                    Style::new().fg(Color::DarkGray),
                ),
                Span::raw(w.message.clone()),
            ])
        })
        .collect();
    v.extend(layer.notes.iter().map(|n| {
        Line::from(vec![
            Span::styled("· ", Style::new().fg(Color::DarkGray)),
            Span::styled(n.clone(), Style::new().fg(Color::DarkGray)),
        ])
    }));
    if v.is_empty() {
        v.push(Line::from("no warnings".green()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn wrap_breaks_at_spaces_and_splits_long_words() {
        let bold = Style::new().bold();
        let line = Line::from(vec![
            Span::styled("⚠ kind ", bold),
            Span::raw("aaa bbb ccc"),
        ]);
        let rows = wrap(vec![line, Line::default()], 7);
        assert_eq!(texts(&rows), ["⚠ kind", "aaa bbb", "ccc", ""]);
        // Styles stay with their chars.
        assert_eq!(rows[0].spans[0].style, bold);
        assert_eq!(rows[1].spans[0].style, Style::new());
        assert_eq!(
            texts(&wrap(vec![Line::from("abcdefghij")], 4)),
            ["abcd", "efgh", "ij"]
        );
        assert!(wrap(vec![Line::from("x")], 0).is_empty());
        // Every row fits.
        let long = Line::from("the quick brown fox jumps over the lazy dog ".repeat(5));
        for w in 1..30 {
            assert!(wrap(vec![long.clone()], w).iter().all(|r| r.width() <= w));
        }
    }
}
