//! The header (settings, progress) and the status line (prompts, messages, key hints).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::calib::Scheme;

use crate::tui::app::{App, Input};
use crate::tui::keys;

/// `compact`: leave out the percentiles (room for the progress bar on 80 columns).
fn header(app: &App, compact: bool) -> Line<'static> {
    let o = &app.opts;
    let ty = match o.scheme {
        Scheme::Symmetric => format!("int{}", o.bits),
        Scheme::Affine => format!("uint{}", o.bits),
    };
    let pcts = o
        .percentiles
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut spans = vec![
        " calibscope ".black().on_cyan().bold(),
        Span::raw(format!(
            " {} layer{} · ",
            app.slots.len(),
            if app.slots.len() == 1 { "" } else { "s" }
        )),
        Span::styled(
            format!("{ty} {}", o.scheme.name()),
            Style::new().add_modifier(Modifier::BOLD),
        ),
    ];
    if !compact {
        spans.push(Span::raw(format!(" · pct {pcts}")));
    }
    let filter = app.filter_text();
    if !filter.is_empty() {
        spans.push(Span::styled(
            format!(" · filter “{filter}”"),
            Style::new().fg(Color::Yellow),
        ));
    }
    spans.push(Span::raw(" "));
    Line::from(spans)
}

pub(super) fn progress_line(app: &App, width: usize) -> Line<'static> {
    let p = &app.progress;
    if !p.running {
        return Line::default();
    }
    let verb = if app.compare.is_some() {
        "comparing"
    } else {
        "analysing"
    };
    let label = format!(" {verb} {}/{} ", p.layers_done, p.layers_total);
    let bar_w = width.saturating_sub(label.len() + 6).min(16);
    let filled = ((p.ratio() * bar_w as f64).round() as usize).min(bar_w);
    Line::from(vec![
        Span::styled(label, Style::new().fg(Color::Cyan)),
        Span::styled("█".repeat(filled), Style::new().fg(Color::Cyan)),
        Span::styled("░".repeat(bar_w - filled), Style::new().fg(Color::DarkGray)),
        Span::raw(format!(" {:>3.0}%", 100.0 * p.ratio())),
    ])
}

pub(super) fn draw_header(frame: &mut Frame, app: &App, area: Rect) {
    let left = header(app, app.progress.running && area.width < 110);
    let right = progress_line(app, usize::from(area.width / 2));
    let rw = (right.width() as u16).min(area.width);
    let [l, r] = Layout::horizontal([Constraint::Min(0), Constraint::Length(rw)]).areas(area);
    frame.render_widget(Paragraph::new(left), l);
    frame.render_widget(Paragraph::new(right), r);
}

pub(super) fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let key = Style::new().fg(Color::Black).bg(Color::Gray);
    let line = match &app.input {
        Some(Input::Filter(s)) => Line::from(vec![
            Span::styled(" filter ", key),
            Span::raw(format!(" {s}")),
            Span::styled("▏", Style::new().fg(Color::Yellow)),
            Span::styled(
                "  Enter keep · Esc cancel",
                Style::new().fg(Color::DarkGray),
            ),
        ]),
        Some(Input::Percentiles(s)) => {
            let mut v = vec![
                Span::styled(" percentiles % ", key),
                Span::raw(format!(" {s}")),
                Span::styled("▏", Style::new().fg(Color::Yellow)),
                Span::styled(
                    "  comma-separated · Enter apply · Esc cancel",
                    Style::new().fg(Color::DarkGray),
                ),
            ];
            if let Some(m) = &app.message {
                v.push(Span::styled(format!("  {m}"), Style::new().fg(Color::Red)));
            }
            Line::from(v)
        }
        Some(Input::Export) => {
            let mut v = vec![Span::styled(" export ", key), Span::raw(" as ")];
            for (name, _) in keys::EXPORT_FORMATS {
                // The first letter is the key.
                let (first, rest) = name.split_at(name.chars().next().map_or(0, char::len_utf8));
                v.push(first.bold().yellow());
                v.push(Span::raw(format!("{rest}  ")));
            }
            v.push(Span::styled(
                "(any other key cancels)",
                Style::new().fg(Color::DarkGray),
            ));
            Line::from(v)
        }
        None => {
            if let Some(m) = &app.message {
                Line::from(vec![Span::styled(
                    format!(" {m}"),
                    Style::new().fg(Color::Yellow),
                )])
            } else {
                let mut spans = vec![Span::raw(" ")];
                for h in keys::hints(app.view, app.focus) {
                    spans.push(Span::styled(h.keys, Style::new().fg(Color::Yellow).bold()));
                    spans.push(Span::styled(
                        format!(" {}  ", h.text),
                        Style::new().fg(Color::Gray),
                    ));
                }
                Line::from(spans)
            }
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}
