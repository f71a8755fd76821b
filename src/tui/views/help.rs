//! The help overlay: every key and what the markers and badges mean.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::YELLOW_BAND_DB;
use crate::tui::keys::KEYS;

/// `floor`: the SQNR floor (`--sqnr-floor`), which the badge colours follow.
pub(super) fn draw(frame: &mut Frame, size: Rect, floor: f64) {
    let w = 74.min(size.width.saturating_sub(2));
    let h = (KEYS.len() as u16 + 8).min(size.height.saturating_sub(2));
    let area = Rect::new(
        size.x + (size.width - w) / 2,
        size.y + (size.height - h) / 2,
        w,
        h,
    );
    frame.render_widget(Clear, area);
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|e| {
            Line::from(vec![
                Span::styled(
                    format!("{:>16}  ", e.keys),
                    Style::new().fg(Color::Yellow).bold(),
                ),
                Span::raw(e.help),
            ])
        })
        .collect();
    lines.push(Line::default());
    lines.push(Line::from(vec![
        Span::styled("markers  ", Style::new().fg(Color::DarkGray)),
        "M".light_blue().bold(),
        Span::raw(" minmax  "),
        "A".cyan().bold(),
        Span::raw(" ema  "),
        "H".green().bold(),
        Span::raw(" entropy  "),
        "S".yellow().bold(),
        Span::raw(" mse  "),
        "1 2 3".magenta().bold(),
        Span::raw(" percentiles  "),
        "╎".light_red(),
        Span::raw(" fp16"),
    ]));
    lines.push(Line::from(vec![
        Span::styled("badges   ", Style::new().fg(Color::DarkGray)),
        Span::raw("best SQNR in dB: "),
        format!(" <{floor} ").black().on_red(),
        Span::raw(" "),
        format!(" <{} ", floor + YELLOW_BAND_DB).black().on_yellow(),
        Span::raw(" "),
        format!(" ≥{} ", floor + YELLOW_BAND_DB).black().on_green(),
        Span::raw("  ⚠n warnings  ✖ error"),
    ]));
    let block = Block::bordered()
        .title(" keys · any key closes ")
        .border_style(Style::new().fg(Color::Yellow));
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
