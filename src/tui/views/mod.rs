//! Drawing: `draw(frame, &App)` is a pure function of the state, one module per view. Where
//! things go comes from [`super::layout`], which the mouse handling in `app` reads too.

mod channels;
mod compare;
pub(super) mod convergence;
mod formats;
mod fp8;
mod help;
mod main;
mod overview;
mod status;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};

use crate::analysis::formats::MSE_FP8;
use crate::analysis::metrics::Metrics;
use crate::analysis::{MethodKind, MethodResult};
use crate::report::fmt::{db_short, num_short, pct_short};

use super::app::App;
use super::layout::{self, MIN_HEIGHT, MIN_WIDTH, View};
use super::names::middle_cut;
use super::widgets::histogram::Marker;

pub fn draw(frame: &mut Frame, app: &App) {
    let size = frame.area();
    if layout::too_small(size) {
        draw_too_small(frame, size);
        return;
    }
    match app.view {
        View::Main => main::draw(frame, app, size),
        View::Overview => overview::draw(frame, app, size),
        View::Channels => channels::draw(frame, app, size),
        View::Formats => formats::draw(frame, app, size),
        View::Convergence => convergence::draw(frame, app, size),
        View::Compare => compare::draw(frame, app, size),
    }
    if app.help {
        // The compare view's floor is its own option.
        let floor = app
            .compare
            .as_ref()
            .map_or(app.opts.thresholds.sqnr_floor_db, |c| {
                c.result.settings.sqnr_floor_db
            });
        help::draw(frame, size, floor, app.help_scroll);
    }
}

fn draw_too_small(frame: &mut Frame, size: Rect) {
    let text = vec![
        Line::from("terminal too small".bold()),
        Line::from(format!(
            "{}×{}: need {MIN_WIDTH}×{MIN_HEIGHT}",
            size.width, size.height
        )),
        Line::from("q quits"),
    ];
    let y = size.y + size.height.saturating_sub(3) / 2;
    let area = Rect {
        y,
        height: size.height.saturating_sub(y - size.y).min(3),
        ..size
    };
    frame.render_widget(Paragraph::new(text).centered(), area);
}

// ---------------------------------------------------------------- colours and formatting

/// The calibrators' markers: letter and colour, the same in the int and FP8 views.
const MARKS: [(MethodKind, char, Color); 4] = [
    (MethodKind::Minmax, 'M', Color::LightBlue),
    (MethodKind::Ema, 'A', Color::Cyan),
    (MethodKind::Entropy, 'H', Color::Green),
    (MethodKind::Mse, 'S', Color::Yellow),
];
/// The FP8 view's FP8-aware MSE search (`mse_fp8`).
const MSE_FP8_MARK: (char, Color) = ('F', Color::LightYellow);
/// The percentiles' colours, in their order (the letters are their numbers: 1, 2, 3, …).
const PERCENTILE_COLORS: [Color; 4] = [
    Color::Magenta,
    Color::LightMagenta,
    Color::LightCyan,
    Color::White,
];

/// The letter and colour of a calibrator's markers: `method` as the JSON names it, `k` which
/// percentile it is (0 for the first) when it is one.
fn calibrator_mark(method: &str, k: usize) -> (char, Color) {
    if let Some(&(_, tag, color)) = MARKS.iter().find(|(m, ..)| m.name() == method) {
        return (tag, color);
    }
    if method == MSE_FP8 {
        return MSE_FP8_MARK;
    }
    let tag = char::from_digit((k as u32 + 1) % 10, 10).unwrap_or('P');
    (tag, PERCENTILE_COLORS[k % PERCENTILE_COLORS.len()])
}

/// The marks of a table's rows, given each row's calibrator name in table order.
fn marks<'a>(methods: impl IntoIterator<Item = &'a str>) -> Vec<(char, Color)> {
    let mut k = 0;
    methods
        .into_iter()
        .map(|m| {
            let mark = calibrator_mark(m, k);
            k += usize::from(m == MethodKind::Percentile.name());
            mark
        })
        .collect()
}

/// A method table's metric cells, the same in the int and FP8 tables: wide, clip↓% clip↑% MSE
/// SQNR cosine; narrow, clip% SQNR cosine. The SQNR badge follows the floor.
fn metric_cells(mx: &Metrics, floor: f64, wide: bool) -> Vec<ratatui::widgets::Cell<'static>> {
    use ratatui::widgets::Cell;
    let sq = Cell::from(db_short(mx.sqnr_db)).style(Style::new().fg(sqnr_color(mx.sqnr_db, floor)));
    if wide {
        vec![
            Cell::from(pct_short(mx.clipped_below)),
            Cell::from(pct_short(mx.clipped_above)),
            Cell::from(num_short(mx.mse)),
            sq,
            Cell::from(format!("{:.6}", mx.cosine)),
        ]
    } else {
        vec![
            Cell::from(pct_short(mx.clipped())),
            sq,
            Cell::from(format!("{:.4}", mx.cosine)),
        ]
    }
}

/// A method table's row, highlighted when it is the selected one (brighter with the focus).
fn method_row(
    cells: Vec<ratatui::widgets::Cell<'static>>,
    selected: bool,
    focused: bool,
) -> ratatui::widgets::Row<'static> {
    let row = ratatui::widgets::Row::new(cells);
    match (selected, focused) {
        (false, _) => row,
        (true, true) => row.style(Style::new().bg(Color::Blue).bold()),
        (true, false) => row.style(Style::new().bg(Color::DarkGray)),
    }
}

/// The mark of the int method table's row `i` (the convergence chart draws its lines in it).
fn int_mark(methods: &[MethodResult], i: usize) -> (char, Color) {
    marks(methods.iter().map(|m| m.method.name()))
        .get(i)
        .copied()
        .unwrap_or(('?', Color::Gray))
}

/// One row of the method table as the histogram draws it: its clip points, mark and label.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipRow {
    pub range: [f64; 2],
    pub tag: char,
    pub color: Color,
    /// `minmax`, `p99.9`, `mse_fp8`: the legend's label.
    pub label: String,
}

/// The int view's rows: each method's range.
fn int_clip_rows(methods: &[MethodResult]) -> Vec<ClipRow> {
    let marks = marks(methods.iter().map(|m| m.method.name()));
    methods
        .iter()
        .zip(marks)
        .map(|(m, (tag, color))| ClipRow {
            range: m.range,
            tag,
            color,
            label: short_label(m),
        })
        .collect()
}

/// The histogram's markers: each row's two clip points, `sel`'s emphasised.
pub fn clip_markers(rows: &[ClipRow], sel: Option<usize>) -> Vec<Marker> {
    rows.iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.range.into_iter().map(move |x| Marker {
                x,
                color: r.color,
                tag: r.tag,
                selected: sel == Some(i),
            })
        })
        .collect()
}

/// `p99.99` for a percentile, else the calibrator's name.
fn short_name(method: &str, percentile: Option<f64>) -> String {
    match percentile {
        Some(p) => format!("p{p}"),
        None => method.to_string(),
    }
}

/// Short label: `p99.99` for percentiles.
fn short_label(m: &MethodResult) -> String {
    short_name(m.method.name(), m.percentile)
}

/// Above the floor by less than this, an SQNR is shown yellow.
const YELLOW_BAND_DB: f64 = 10.0;

/// SQNR colour relative to the floor: red below it, yellow within [`YELLOW_BAND_DB`], green
/// above.
pub(super) fn sqnr_color(db: f64, floor: f64) -> Color {
    if db.is_nan() {
        Color::DarkGray
    } else if db < floor {
        Color::Red
    } else if db < floor + YELLOW_BAND_DB {
        Color::Yellow
    } else {
        Color::Green
    }
}

/// Cuts `s` to `w` characters, ending with `…` if cut.
fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else if w == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(w - 1).collect();
        t.push('…');
        t
    }
}

/// A list panel's title in `width` columns: `what count`, the names' shared prefix (the rows
/// show the names without it) and `extra`, dropping what does not fit (extra first, then the
/// word `what`, then the middle of the prefix).
fn list_title(what: &str, count: usize, prefix: &str, extra: &str, width: u16) -> Line<'static> {
    let dim = Style::new().fg(Color::DarkGray);
    let pre = Style::new().fg(Color::Cyan);
    let w = usize::from(width);
    let fits = |spans: &[Span]| spans.iter().map(Span::width).sum::<usize>() <= w;
    if prefix.is_empty() {
        let full = [
            Span::raw(format!(" {what} {count}")),
            Span::styled(format!(" · {extra} "), dim),
        ];
        if fits(&full) || extra.is_empty() {
            return Line::from(full.to_vec());
        }
        return Line::from(format!(" {what} {count} "));
    }
    let shown = format!("{prefix}…");
    let variants = [
        vec![
            Span::raw(format!(" {what} {count} · ")),
            Span::styled(shown.clone(), pre),
            Span::styled(format!(" · {extra} "), dim),
        ],
        vec![
            Span::styled(format!(" {shown}"), pre),
            Span::raw(format!(" {count}")),
            Span::styled(format!(" · {extra} "), dim),
        ],
        vec![
            Span::styled(format!(" {shown}"), pre),
            Span::raw(format!(" {count} ")),
        ],
    ];
    if let Some(v) = variants.iter().find(|v| fits(v)) {
        return Line::from(v.clone());
    }
    let room = w.saturating_sub(format!("  {count} ").chars().count());
    Line::from(vec![
        Span::styled(format!(" {}", middle_cut(&shown, room)), pre),
        Span::raw(format!(" {count} ")),
    ])
}

fn panel(title: Line<'static>, focused: bool, borders: Borders) -> Block<'static> {
    let style = if focused {
        Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(Color::DarkGray)
    };
    Block::new()
        .borders(borders)
        .border_style(style)
        .title(title)
}
