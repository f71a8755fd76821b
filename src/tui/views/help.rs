//! The help overlay: every key and what the markers and badges mean. Taller than the screen
//! (80×24), it scrolls with the moving keys and says where it stands.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::{MARKS, MSE_FP8_MARK, PERCENTILE_COLORS, YELLOW_BAND_DB};
use crate::analysis::cast::F16_MAX;
use crate::tui::keys::{HELP_LEGEND_LINES, KEYS, help_lines};
use crate::tui::layout;

/// `floor`: the SQNR floor (`--sqnr-floor`), which the badge colours follow; `scroll`: the
/// first line shown.
pub(super) fn draw(frame: &mut Frame, size: Rect, floor: f64, scroll: usize) {
    let (area, shown) = layout::help_area(size, help_lines());
    frame.render_widget(Clear, area);
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|e| {
            Line::from(vec![
                Span::styled(
                    format!(" {:>15}  ", e.keys),
                    Style::new().fg(Color::Yellow).bold(),
                ),
                Span::raw(e.help),
            ])
        })
        .collect();
    lines.extend(legend(floor));
    let last = lines.len().saturating_sub(shown);
    let scroll = scroll.min(last);
    let mut block = Block::bordered()
        .title(if last > 0 {
            " keys · ↑↓ scroll · other keys close "
        } else {
            " keys · any key closes "
        })
        .border_style(Style::new().fg(Color::Yellow));
    if last > 0 {
        let at = match (scroll > 0, scroll < last) {
            (true, true) => " ↑ more ↓ ",
            (false, _) => " more ↓ ",
            (true, false) => " ↑ more ",
        };
        block = block.title_bottom(Line::from(at.cyan()).right_aligned());
    }
    let top = u16::try_from(scroll).unwrap_or(u16::MAX);
    frame.render_widget(Paragraph::new(lines).block(block).scroll((top, 0)), area);
}

/// The lines below the keys: a blank line, the markers (two lines), the badges.
fn legend(floor: f64) -> [Line<'static>; HELP_LEGEND_LINES] {
    let dim = Style::new().fg(Color::DarkGray);
    let mut methods = vec![Span::styled("markers  ", dim)];
    for (kind, tag, color) in MARKS {
        methods.push(Span::styled(tag.to_string(), Style::new().fg(color).bold()));
        methods.push(Span::raw(format!(" {}  ", kind.name())));
    }
    for (k, color) in PERCENTILE_COLORS.iter().take(3).enumerate() {
        methods.push(Span::styled(
            format!("{} ", k + 1),
            Style::new().fg(*color).bold(),
        ));
    }
    methods.push(Span::raw("percentiles"));
    let (tag, color) = MSE_FP8_MARK;
    let more = vec![
        Span::raw("         "),
        Span::styled(tag.to_string(), Style::new().fg(color).bold()),
        Span::raw(" mse_fp8 (FP8 view, x)  "),
        "╎".light_red(),
        Span::raw(format!(" fp16 ±{F16_MAX}")),
    ];
    let badges = vec![
        Span::styled("badges   ", dim),
        Span::raw("best SQNR in dB: "),
        format!(" <{floor} ").black().on_red(),
        Span::raw(" "),
        format!(" <{} ", floor + YELLOW_BAND_DB).black().on_yellow(),
        Span::raw(" "),
        format!(" ≥{} ", floor + YELLOW_BAND_DB).black().on_green(),
        Span::raw("  ⚠n warnings  ✖ error"),
    ];
    [
        Line::default(),
        Line::from(methods),
        Line::from(more),
        Line::from(badges),
    ]
}
