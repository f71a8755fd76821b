//! The formats panel: every FP8 / MX / NVFP4 row of the selected layer (the JSON `formats`
//! entries) with its amax, clipped shares and SQNR in the method table's colours.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Borders, Cell, Paragraph, Row, Table};

use super::status::{draw_header, draw_status};
use super::{fit, panel, sqnr_color};
use crate::report::fmt::{count_short, db_short, num_short, pct_short};
use crate::tui::app::App;
use crate::tui::layout;

/// The label column: `fp8_e4m3 percentile 99.99` is the longest label.
const LABEL_W: u16 = 26;

pub(super) fn draw(frame: &mut Frame, app: &App, size: Rect) {
    let a = layout::format_areas(size);
    draw_header(frame, app, a.header);
    draw_status(frame, app, a.status);
    let floor = app.opts.thresholds.sqnr_floor_db;
    let name = app
        .selected
        .map(|i| app.names.full(i, usize::from(a.table.width / 3)))
        .unwrap_or_default();
    let title = Line::from(vec![
        Span::raw(format!(" formats {name} ")),
        Span::styled(
            format!("· SQNR floor {floor:.0} dB "),
            Style::new().fg(Color::DarkGray),
        ),
    ]);
    let block = panel(title, true, Borders::TOP);
    let inner = block.inner(a.table);
    frame.render_widget(block, a.table);
    let layer = app.selected_layer();
    let msg = match (app.selected_slot(), layer) {
        (None, _) => Some("no layer selected"),
        (Some(_), None) => Some("reading…"),
        (Some(_), Some(l)) if l.error.is_some() => Some("this layer could not be read"),
        (Some(_), Some(l)) if l.formats.is_empty() => Some("no format rows: --formats none"),
        _ => None,
    };
    let Some(layer) = layer.filter(|_| msg.is_none()) else {
        frame.render_widget(
            Paragraph::new(msg.unwrap_or_default()).fg(Color::DarkGray),
            inner,
        );
        return;
    };
    let wide = inner.width >= 96;
    let label_w = LABEL_W.min(inner.width.saturating_sub(8 + 8 + 2).max(8));
    // The header takes one line; the scroll keeps the first row shown within reach.
    let h = usize::from(inner.height.saturating_sub(1));
    let n = layer.formats.len();
    let first = app.formats_scroll.min(n.saturating_sub(h.max(1)));
    let rows = layer.formats.iter().skip(first).take(h).map(|f| {
        let m = &f.metrics;
        let mut cells = vec![
            Cell::from(fit(&f.label(), usize::from(label_w))),
            Cell::from(f.amax.map_or_else(|| "—".into(), num_short)),
            Cell::from(db_short(m.sqnr_db)).style(Style::new().fg(sqnr_color(m.sqnr_db, floor))),
            Cell::from(pct_short(m.clipped_below)),
            Cell::from(pct_short(m.clipped_above)),
        ];
        if wide {
            cells.extend([
                Cell::from(num_short(m.mse)),
                Cell::from(format!("{:.6}", m.cosine)),
                match f.unclamped_nonfinite {
                    Some(0) => Cell::from("0"),
                    Some(k) => Cell::from(count_short(k)).fg(Color::Red),
                    None => Cell::from("—").fg(Color::DarkGray),
                },
            ]);
        }
        Row::new(cells)
    });
    let mut header = vec!["format", "amax", "SQNR dB", "clip↓%", "clip↑%"];
    let mut widths = vec![
        Constraint::Length(label_w),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(7),
    ];
    if wide {
        header.extend(["MSE", "cosine", "unclamped NaN/inf"]);
        widths.extend([
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(17),
        ]);
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().fg(Color::DarkGray).bold()))
        .column_spacing(1);
    frame.render_widget(table, inner);
}
