//! The header (settings, progress) and the status line (prompts, messages, key hints).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::calib::Scheme;

use crate::tui::app::{App, Input};
use crate::tui::layout::{Focus, View};

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

fn progress_line(app: &App, width: usize) -> Line<'static> {
    let p = &app.progress;
    if !p.running {
        return Line::default();
    }
    let label = format!(" analysing {}/{} ", p.layers_done, p.layers_total);
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

fn key_hints(app: &App) -> Vec<(&'static str, &'static str)> {
    match app.view {
        // Help and quit first: they must survive truncation on a narrow terminal.
        View::Overview => vec![
            ("?", "help"),
            ("q", "quit"),
            ("↑↓", "move"),
            ("Enter", "open layer"),
            ("o/Esc", "back"),
            ("s", "scheme"),
            ("+/-", "bits"),
            ("e", "export"),
        ],
        View::Main => {
            let mut v = vec![
                ("?", "help"),
                ("q", "quit"),
                match app.focus {
                    Focus::Layers => ("↑↓", "layer"),
                    Focus::Methods => ("↑↓", "method"),
                    Focus::Details => ("↑↓", "scroll"),
                },
            ];
            v.extend([
                ("Tab", "focus"),
                ("l", "log"),
                ("z", "zoom"),
                ("s", "scheme"),
                ("+/-", "bits"),
                ("p", "pct"),
                ("o", "overview"),
                ("/", "filter"),
                ("S", "sort"),
                ("e", "export"),
            ]);
            v
        }
    }
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
        Some(Input::Export) => Line::from(vec![
            Span::styled(" export ", key),
            Span::raw(" as "),
            "t".bold().yellow(),
            Span::raw("ext  "),
            "j".bold().yellow(),
            Span::raw("son  "),
            "c".bold().yellow(),
            Span::raw("sv  "),
            "m".bold().yellow(),
            Span::raw("arkdown  "),
            Span::styled("(any other key cancels)", Style::new().fg(Color::DarkGray)),
        ]),
        None => {
            if let Some(m) = &app.message {
                Line::from(vec![Span::styled(
                    format!(" {m}"),
                    Style::new().fg(Color::Yellow),
                )])
            } else {
                let mut spans = vec![Span::raw(" ")];
                for (k, what) in key_hints(app) {
                    spans.push(Span::styled(k, Style::new().fg(Color::Yellow).bold()));
                    spans.push(Span::styled(
                        format!(" {what}  "),
                        Style::new().fg(Color::Gray),
                    ));
                }
                Line::from(spans)
            }
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}
