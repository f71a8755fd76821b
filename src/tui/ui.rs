//! Drawing: `draw(frame, &App)` is a pure function of the state. The layout helpers are shared
//! with the mouse handling in `app.rs` so clicks land where things are drawn.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Margin, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};

use crate::analysis::{LayerAnalysis, MethodKind, MethodResult};
use crate::calib::Scheme;

use super::app::{App, Focus, Input, Slot, View};
use super::widgets::histogram::{FP16_MAX, HistogramPlot, Marker, column_of};

/// Below this the screen shows a "too small" message instead of the UI.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

/// Where each panel of the main view goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct MainAreas {
    pub header: Rect,
    pub layers: Rect,
    /// The rows of the layer list (inside its block).
    pub layers_rows: Rect,
    pub hist: Rect,
    pub methods: Rect,
    /// The method rows (below the table header).
    pub method_rows: Rect,
    pub details: Rect,
    pub status: Rect,
}

/// Method rows the table reserves room for (4 methods + the default 3 percentiles).
const METHOD_ROWS: u16 = 7;

pub fn main_areas(size: Rect) -> MainAreas {
    let [header, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(size);
    let list_w = (body.width * 3 / 10).clamp(24, 48).min(body.width);
    let [layers, right] =
        Layout::horizontal([Constraint::Length(list_w), Constraint::Min(0)]).areas(body);
    let h = right.height;
    let methods_h = (METHOD_ROWS + 2).min(h);
    // The details get 2/5 of what the method table leaves (at least 5 rows: two casts and
    // the first warning at 80×24); the histogram gets the rest.
    let rest = h.saturating_sub(methods_h);
    let details_h = (rest * 2 / 5).max(5).min(rest);
    let [hist, methods, details] = Layout::vertical([
        Constraint::Min(0),
        Constraint::Length(methods_h),
        Constraint::Length(details_h),
    ])
    .areas(right);
    let layers_rows = Rect {
        x: layers.x,
        y: layers.y.saturating_add(1),
        width: layers.width.saturating_sub(1),
        height: layers.height.saturating_sub(1),
    };
    let method_rows = Rect {
        y: methods.y.saturating_add(2),
        height: methods.height.saturating_sub(2),
        ..methods
    };
    MainAreas {
        header,
        layers,
        layers_rows,
        hist,
        methods,
        method_rows,
        details,
        status,
    }
}

/// The overview's data rows (below its header).
pub fn overview_rows(size: Rect) -> Rect {
    Rect {
        x: size.x,
        y: size.y.saturating_add(3),
        width: size.width,
        height: size.height.saturating_sub(4),
    }
}

/// First row shown so that `pos` stays visible in a window of `h` rows over `n` rows.
pub fn scroll_start(pos: usize, h: usize, n: usize) -> usize {
    if h == 0 || n <= h {
        return 0;
    }
    // Keep the cursor a bit away from the bottom edge while possible.
    pos.saturating_sub(h.saturating_sub(2)).min(n - h)
}

pub fn overview_first(app: &App, h: usize) -> usize {
    scroll_start(app.overview_scroll, h, app.slots.len())
}

/// Lines of the details panel (for scrolling).
pub fn details_len(layer: &LayerAnalysis) -> usize {
    3 + layer.warnings.len() + layer.notes.len()
}

pub fn draw(frame: &mut Frame, app: &App) {
    let size = frame.area();
    if size.width < MIN_WIDTH || size.height < MIN_HEIGHT {
        draw_too_small(frame, size);
        return;
    }
    match app.view {
        View::Main => draw_main(frame, app, size),
        View::Overview => draw_overview(frame, app, size),
    }
    if app.help {
        draw_help(frame, size);
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

/// Colour of a method's markers (distinct per row of the table).
pub fn method_color(i: usize, m: &MethodResult) -> Color {
    match m.method {
        MethodKind::Minmax => Color::LightBlue,
        MethodKind::Ema => Color::Cyan,
        MethodKind::Entropy => Color::Green,
        MethodKind::Mse => Color::Yellow,
        MethodKind::Percentile => [
            Color::Magenta,
            Color::LightMagenta,
            Color::LightCyan,
            Color::White,
        ][i % 4],
    }
}

/// The letter of a method's markers.
pub fn method_tag(i: usize, m: &MethodResult, methods: &[MethodResult]) -> char {
    match m.method {
        MethodKind::Minmax => 'M',
        MethodKind::Ema => 'A',
        MethodKind::Entropy => 'H',
        MethodKind::Mse => 'S',
        MethodKind::Percentile => {
            let k = methods[..i]
                .iter()
                .filter(|x| x.method == MethodKind::Percentile)
                .count();
            char::from_digit((k as u32 + 1) % 10, 10).unwrap_or('P')
        }
    }
}

/// Short label: `p99.99` for percentiles.
fn short_label(m: &MethodResult) -> String {
    match m.percentile {
        Some(p) => format!("p{p}"),
        None => m.method.name().to_string(),
    }
}

/// SQNR colour relative to the floor: red below it, yellow within 10 dB, green above.
fn sqnr_color(db: f64, floor: f64) -> Color {
    if db.is_nan() {
        Color::DarkGray
    } else if db < floor {
        Color::Red
    } else if db < floor + 10.0 {
        Color::Yellow
    } else {
        Color::Green
    }
}

/// Compact number: 4 significant digits, scientific outside [1e-3, 1e5).
pub fn num(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e5 || v.abs() < 1e-3 {
        format!("{v:.2e}")
    } else {
        let digits = 3 - v.abs().log10().floor() as i32;
        let d = digits.clamp(0, 6) as usize;
        let s = format!("{v:.d$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    }
}

fn db(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.is_infinite() {
        if v > 0.0 { "∞".into() } else { "-∞".into() }
    } else {
        format!("{v:.1}")
    }
}

fn pct(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v == 0.0 {
        "0".into()
    } else if v < 0.0001 {
        "<.01".into()
    } else {
        format!("{:.2}", 100.0 * v)
    }
}

fn count(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..10_000_000 => format!("{:.1}k", n as f64 / 1e3),
        10_000_000..10_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

fn shape(s: &[usize]) -> String {
    if s.is_empty() {
        return "—".into();
    }
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// Cuts `s` to `w` characters with `…` in the middle, so `archive/member` names keep both the
/// file's number and the member (`09_s…/fc1_relu`).
pub fn fit_middle(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        return s.to_string();
    }
    if w < 6 {
        return fit(s, w);
    }
    let head = (w - 1) / 3;
    let tail = w - 1 - head;
    let mut t: String = s.chars().take(head).collect();
    t.push('…');
    t.extend(s.chars().skip(n - tail));
    t
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

// ---------------------------------------------------------------- header and status

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

fn draw_header(frame: &mut Frame, app: &App, area: Rect) {
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

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
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

// ---------------------------------------------------------------- main view

fn draw_main(frame: &mut Frame, app: &App, size: Rect) {
    let a = main_areas(size);
    draw_header(frame, app, a.header);
    draw_layers(frame, app, &a);
    let slot = app.selected_slot();
    let layer = app.selected_layer();
    draw_hist(frame, app, slot, a.hist);
    draw_methods(frame, app, layer, a.methods);
    draw_details(frame, app, layer, a.details);
    draw_status(frame, app, a.status);
}

fn draw_layers(frame: &mut Frame, app: &App, a: &MainAreas) {
    let vis = app.visible();
    let title = Line::from(vec![
        Span::raw(format!(" layers {}", vis.len())),
        Span::styled(
            format!(" · by {} ", app.sort.name()),
            Style::new().fg(Color::DarkGray),
        ),
    ]);
    let block = panel(
        title,
        app.focus == Focus::Layers,
        Borders::TOP | Borders::RIGHT,
    );
    frame.render_widget(block, a.layers);
    let rows = a.layers_rows;
    if rows.height == 0 || rows.width == 0 {
        return;
    }
    if vis.is_empty() {
        let msg = if app.slots.is_empty() {
            "no layers found"
        } else {
            "no layer matches the filter"
        };
        frame.render_widget(
            Paragraph::new(msg)
                .fg(Color::DarkGray)
                .wrap(Wrap { trim: true }),
            rows,
        );
        return;
    }
    let pos = app
        .selected
        .and_then(|s| vis.iter().position(|&v| v == s))
        .unwrap_or(0);
    let h = usize::from(rows.height);
    let first = scroll_start(pos, h, vis.len());
    let w = usize::from(rows.width);
    let show_shape = w >= 44;
    let floor = app.opts.thresholds.sqnr_floor_db;
    for (row, &i) in vis.iter().enumerate().skip(first).take(h) {
        let slot = &app.slots[i];
        let y = rows.y + (row - first) as u16;
        let line = layer_row(slot, w, show_shape, floor, app.progress.running);
        let selected = app.selected == Some(i);
        let mut p = Paragraph::new(line);
        if selected {
            p = p.style(if app.focus == Focus::Layers {
                Style::new().bg(Color::Blue).fg(Color::White).bold()
            } else {
                Style::new().bg(Color::DarkGray)
            });
        }
        frame.render_widget(p, Rect::new(rows.x, y, rows.width, 1));
    }
}

fn layer_row(slot: &Slot, w: usize, show_shape: bool, floor: f64, running: bool) -> Line<'static> {
    // Mark (3) + name + [shape] + badge (5).
    let (mark, mark_style) = match &slot.result {
        None if running => ("…".to_string(), Style::new().fg(Color::DarkGray)),
        None => (String::new(), Style::new()),
        Some(r) if r.error.is_some() => ("✖".to_string(), Style::new().fg(Color::Red)),
        Some(r) if r.warnings.is_empty() => (String::new(), Style::new()),
        Some(r) => (
            format!("⚠{}", r.warnings.len().min(9)),
            Style::new().fg(Color::Yellow).bold(),
        ),
    };
    let (badge, badge_style) = match &slot.result {
        None => ("  ·  ".to_string(), Style::new().fg(Color::DarkGray)),
        Some(r) if r.error.is_some() => ("error".to_string(), Style::new().fg(Color::Red)),
        Some(r) => match r.sensitivity_sqnr_db {
            Some(v) => (
                format!("{:>5}", db(v)),
                Style::new().fg(Color::Black).bg(sqnr_color(v, floor)),
            ),
            None => ("  —  ".to_string(), Style::new().fg(Color::DarkGray)),
        },
    };
    let badge_style = if slot.stale {
        badge_style.add_modifier(Modifier::DIM)
    } else {
        badge_style
    };
    let shape_txt = if show_shape {
        slot.result
            .as_ref()
            .filter(|r| !r.shape.is_empty())
            .map(|r| shape(&r.shape))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let shape_w = if show_shape { 12 } else { 0 };
    let name_w = w.saturating_sub(3 + 5 + 2 + shape_w);
    let name = fit_middle(&slot.name, name_w);
    let mut spans = vec![
        Span::styled(format!("{mark:<3}"), mark_style),
        Span::raw(format!("{name:<name_w$} ")),
    ];
    if show_shape {
        spans.push(Span::styled(
            format!("{:>11} ", fit(&shape_txt, 11)),
            Style::new().fg(Color::DarkGray),
        ));
    }
    spans.push(Span::styled(badge, badge_style));
    Line::from(spans)
}

/// The x range shown: the data range, or (zoom) the narrowest method's range with a quarter of
/// its width as margin on each side — the bulk of the data, where the clipping methods differ.
/// Markers outside the view are listed at its edges.
pub fn view_range(app: &App, layer: &LayerAnalysis) -> Option<(f64, f64)> {
    let p = layer.profile.as_ref()?;
    let (dlo, dhi) = (p.hist.lo, p.hist.hi);
    if !(dlo.is_finite() && dhi.is_finite()) || dhi <= dlo {
        return None;
    }
    if !app.zoom {
        return Some((dlo, dhi));
    }
    let narrowest = layer
        .methods
        .iter()
        .map(|m| (m.range[0], m.range[1]))
        .filter(|(a, b)| a.is_finite() && b.is_finite() && b > a)
        .min_by(|x, y| (x.1 - x.0).total_cmp(&(y.1 - y.0)));
    let Some((lo, hi)) = narrowest else {
        return Some((dlo, dhi));
    };
    let pad = (hi - lo) * 0.25;
    let (lo, hi) = ((lo - pad).max(dlo), (hi + pad).min(dhi));
    if hi > lo {
        Some((lo, hi))
    } else {
        Some((dlo, dhi))
    }
}

fn draw_hist(frame: &mut Frame, app: &App, slot: Option<&Slot>, area: Rect) {
    let Some(slot) = slot else {
        frame.render_widget(panel(Line::from(" histogram "), false, Borders::TOP), area);
        return;
    };
    let layer = slot.result.as_ref();
    // The title shares its line with the scale/view mode drawn at the right end.
    let room = usize::from(area.width).saturating_sub(18);
    let name = fit_middle(&slot.name, room.saturating_sub(2));
    let mut used = name.chars().count() + 2;
    let mut title = vec![Span::styled(
        format!(" {name} "),
        Style::new().add_modifier(Modifier::BOLD).fg(Color::White),
    )];
    if let Some(l) = layer
        && l.error.is_none()
    {
        let extra = format!("{} {} ", shape(&l.shape), l.dtype);
        if used + extra.chars().count() <= room {
            used += extra.chars().count();
            title.push(Span::styled(extra, Style::new().fg(Color::DarkGray)));
        }
    }
    if slot.stale && used + 14 <= room {
        title.push(Span::styled("recomputing… ", Style::new().fg(Color::Cyan)));
    }
    let block = panel(Line::from(title), false, Borders::TOP);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let Some(layer) = layer else {
        // Passes 1–2 done: the histogram is known before the methods are measured.
        if let Some(p) = &slot.profile
            && p.hist.lo.is_finite()
            && p.hist.hi > p.hist.lo
        {
            let [plot, axis, note] = Layout::vertical([
                Constraint::Min(1),
                Constraint::Length(1),
                Constraint::Length(1),
            ])
            .areas(inner);
            frame.render_widget(
                HistogramPlot {
                    hist: &p.hist,
                    lo: p.hist.lo,
                    hi: p.hist.hi,
                    log: app.log_scale,
                    markers: &[],
                    keep: None,
                },
                plot,
            );
            draw_axis(frame, axis, p.hist.lo, p.hist.hi);
            frame.render_widget(
                Paragraph::new("measuring every method's error (pass 3)…").fg(Color::Cyan),
                note,
            );
            return;
        }
        let msg = if app.progress.running {
            "analysing… the histogram appears after the first two passes"
        } else {
            "not analysed"
        };
        let mid = Rect {
            y: inner.y + inner.height / 2,
            height: 1,
            ..inner
        };
        frame.render_widget(Paragraph::new(msg).fg(Color::DarkGray).centered(), mid);
        return;
    };
    if let Some(e) = &layer.error {
        let text = vec![
            Line::from("this layer could not be analysed".red().bold()),
            Line::from(""),
            Line::from(e.clone()),
        ];
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), inner);
        return;
    }
    let (Some(profile), Some((lo, hi))) = (&layer.profile, view_range(app, layer)) else {
        let msg = if layer.stats.as_ref().is_some_and(|s| s.finite == 0) {
            "no finite values: nothing to plot"
        } else {
            "no histogram"
        };
        frame.render_widget(Paragraph::new(msg).fg(Color::DarkGray), inner);
        return;
    };
    // Rows: plot, axis, legend (when there is room).
    let legend_h = u16::from(inner.height >= 9);
    let [plot, axis, legend] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(legend_h),
    ])
    .areas(inner);
    let sel = app.method_index();
    let markers: Vec<Marker> = layer
        .methods
        .iter()
        .enumerate()
        .flat_map(|(i, m)| {
            let color = method_color(i, m);
            let tag = method_tag(i, m, &layer.methods);
            let selected = sel == Some(i);
            m.range.into_iter().map(move |x| Marker {
                x,
                color,
                tag,
                selected,
            })
        })
        .collect();
    let keep = sel
        .and_then(|i| layer.methods.get(i))
        .map(|m| (m.range[0], m.range[1]));
    frame.render_widget(
        HistogramPlot {
            hist: &profile.hist,
            lo,
            hi,
            log: app.log_scale,
            markers: &markers,
            keep,
        },
        plot,
    );
    draw_axis(frame, axis, lo, hi);
    if legend_h > 0 {
        draw_legend(frame, app, layer, legend, lo, hi);
    }
    // Scale and view in the top-right corner of the block.
    let mode = format!(
        " {} · {} ",
        if app.log_scale { "log" } else { "linear" },
        if app.zoom { "zoom" } else { "full" }
    );
    let mw = (mode.chars().count() as u16).min(area.width);
    frame.render_widget(
        Paragraph::new(mode).fg(Color::Cyan),
        Rect::new(area.right() - mw, area.y, mw, 1),
    );
}

fn draw_axis(frame: &mut Frame, area: Rect, lo: f64, hi: f64) {
    let w = usize::from(area.width);
    if w == 0 {
        return;
    }
    let mut chars: Vec<char> = vec!['─'; w];
    let put = |at: usize, s: &str, chars: &mut Vec<char>| {
        let s: Vec<char> = s.chars().collect();
        let start = at.min(w.saturating_sub(s.len()));
        for (k, c) in s.into_iter().enumerate() {
            if let Some(slot) = chars.get_mut(start + k) {
                *slot = c;
            }
        }
    };
    let left = num(lo);
    let right = num(hi);
    put(0, &left, &mut chars);
    put(w.saturating_sub(right.chars().count()), &right, &mut chars);
    if let Some(c) = column_of(0.0, lo, hi, w) {
        let label = "┴0";
        let l0 = left.chars().count() + 1;
        let r0 = w.saturating_sub(right.chars().count() + 3);
        if c > l0 && c < r0 {
            put(c, label, &mut chars);
        }
    }
    let s: String = chars.into_iter().collect();
    frame.render_widget(Paragraph::new(s).fg(Color::DarkGray), area);
}

fn draw_legend(frame: &mut Frame, app: &App, layer: &LayerAnalysis, area: Rect, lo: f64, hi: f64) {
    let sel = app.method_index();
    let mut spans = Vec::new();
    for (i, m) in layer.methods.iter().enumerate() {
        let style = Style::new().fg(method_color(i, m));
        let style = if sel == Some(i) {
            style.add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        } else {
            style
        };
        spans.push(Span::styled(
            format!("{}", method_tag(i, m, &layer.methods)),
            style.add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::styled(format!(" {}  ", short_label(m)), style));
    }
    if lo <= -FP16_MAX || hi >= FP16_MAX {
        spans.push(Span::styled(
            "╎ fp16 ±65504  ",
            Style::new().fg(Color::LightRed),
        ));
    }
    if sel.is_some() {
        spans.push(Span::styled("▇ clipped", Style::new().fg(Color::Red)));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_methods(frame: &mut Frame, app: &App, layer: Option<&LayerAnalysis>, area: Rect) {
    let focused = app.focus == Focus::Methods;
    let title = Line::from(vec![
        Span::raw(" methods "),
        Span::styled(
            format!(
                "{} {}-bit · ★ best SQNR ",
                app.opts.scheme.name(),
                app.opts.bits
            ),
            Style::new().fg(Color::DarkGray),
        ),
    ]);
    let block = panel(title, focused, Borders::TOP);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(layer) = layer.filter(|l| !l.methods.is_empty()) else {
        return;
    };
    let wide = inner.width >= 96;
    let sel = app.method_index();
    let floor = app.opts.thresholds.sqnr_floor_db;
    let rec = layer.recommended.as_deref();
    let header: Vec<&str> = if wide {
        vec![
            "", "method", "lo", "hi", "scale", "zp", "clip↓%", "clip↑%", "MSE", "SQNR dB", "cosine",
        ]
    } else {
        vec!["", "method", "lo", "hi", "clip%", "SQNR", "cos"]
    };
    let rows = layer.methods.iter().enumerate().map(|(i, m)| {
        let tag = method_tag(i, m, &layer.methods);
        let color = method_color(i, m);
        let star = if Some(m.label().as_str()) == rec {
            "★"
        } else {
            " "
        };
        let mx = &m.metrics;
        let sq = Cell::from(db(mx.sqnr_db)).style(Style::new().fg(sqnr_color(mx.sqnr_db, floor)));
        let name = format!("{star}{}", short_label(m));
        let mut cells = vec![
            Cell::from(tag.to_string()).style(Style::new().fg(color).bold()),
            Cell::from(name).style(Style::new().fg(color)),
            Cell::from(num(m.range[0])),
            Cell::from(num(m.range[1])),
        ];
        if wide {
            cells.extend([
                Cell::from(num(m.scale)),
                Cell::from(m.zero_point.to_string()),
                Cell::from(pct(mx.clipped_below)),
                Cell::from(pct(mx.clipped_above)),
                Cell::from(num(mx.mse)),
                sq,
                Cell::from(format!("{:.6}", mx.cosine)),
            ]);
        } else {
            cells.extend([
                Cell::from(pct(mx.clipped())),
                sq,
                Cell::from(format!("{:.4}", mx.cosine)),
            ]);
        }
        let mut row = Row::new(cells);
        if sel == Some(i) {
            row = row.style(if focused {
                Style::new().bg(Color::Blue).bold()
            } else {
                Style::new().bg(Color::DarkGray)
            });
        }
        row
    });
    let widths: Vec<Constraint> = if wide {
        vec![
            Constraint::Length(1),
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(9),
        ]
    } else {
        vec![
            Constraint::Length(1),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(6),
        ]
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().fg(Color::DarkGray).bold()))
        .column_spacing(1);
    frame.render_widget(table, inner);
}

fn stats_line(layer: &LayerAnalysis) -> Line<'static> {
    let Some(s) = &layer.stats else {
        return Line::from("no statistics".dark_gray());
    };
    let dim = Style::new().fg(Color::DarkGray);
    let mut spans = vec![
        Span::styled("n ", dim),
        Span::raw(count(s.count)),
        Span::styled("  min ", dim),
        Span::raw(num(s.min)),
        Span::styled("  max ", dim),
        Span::raw(num(s.max)),
        Span::styled("  mean ", dim),
        Span::raw(num(s.mean)),
        Span::styled("  std ", dim),
        Span::raw(num(s.std)),
        Span::styled("  kurt ", dim),
        Span::raw(num(s.kurtosis)),
        Span::styled("  zeros ", dim),
        Span::raw(format!("{}%", pct(s.zero_fraction))),
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
                    Span::styled(format!("{:<7}", count(c.overflow)), bad(c.overflow)),
                    Span::styled("flush-to-0 ", dim),
                    Span::styled(format!("{:<7}", count(c.underflow)), bad(c.underflow)),
                    Span::styled("subnormal ", dim),
                    Span::styled(format!("{:<7}", count(c.subnormal)), sub_style(c.subnormal)),
                    Span::styled("SQNR ", dim),
                    Span::raw(format!("{:>6} dB  ", db(c.sqnr_db))),
                    Span::styled("max rel err ", dim),
                    Span::raw(num(c.max_rel_error)),
                ])
            } else {
                let name = match c.dtype {
                    crate::analysis::cast::CastType::Float16 => "fp16",
                    crate::analysis::cast::CastType::Bfloat16 => "bf16",
                };
                Line::from(vec![
                    Span::styled(format!("{name} "), Style::new().bold()),
                    Span::styled("ovf ", dim),
                    Span::styled(format!("{} ", count(c.overflow)), bad(c.overflow)),
                    Span::styled("ftz ", dim),
                    Span::styled(format!("{} ", count(c.underflow)), bad(c.underflow)),
                    Span::styled("sub ", dim),
                    Span::styled(format!("{} ", count(c.subnormal)), sub_style(c.subnormal)),
                    Span::raw(format!("{}dB ", db(c.sqnr_db))),
                    Span::styled("rel ", dim),
                    Span::raw(num(c.max_rel_error)),
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
                    format!("({}) ", num(w.value)),
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

fn draw_details(frame: &mut Frame, app: &App, layer: Option<&LayerAnalysis>, area: Rect) {
    let focused = app.focus == Focus::Details;
    let nwarn = layer.map_or(0, |l| l.warnings.len());
    let title = Line::from(vec![
        Span::raw(" casts · stats · warnings "),
        Span::styled(
            format!("{nwarn} "),
            if nwarn > 0 {
                Style::new().fg(Color::Yellow).bold()
            } else {
                Style::new().fg(Color::DarkGray)
            },
        ),
    ]);
    let block = panel(title, focused, Borders::TOP);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(layer) = layer.filter(|l| l.error.is_none() || l.stats.is_some()) else {
        return;
    };
    let scroll = app.details_scroll.min(u16::MAX as usize) as u16;
    if inner.width >= 120 {
        // Side by side: numbers left, warnings right.
        let [left, right] =
            Layout::horizontal([Constraint::Length(62), Constraint::Min(0)]).areas(inner);
        let mut lines = cast_lines(layer, false);
        lines.push(Line::default());
        lines.push(stats_line(layer));
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), left);
        frame.render_widget(
            Paragraph::new(warning_lines(layer))
                .wrap(Wrap { trim: false })
                .scroll((scroll, 0)),
            right.inner(Margin::new(1, 0)),
        );
    } else {
        let mut lines = cast_lines(layer, inner.width >= 90);
        lines.extend(warning_lines(layer));
        lines.push(stats_line(layer));
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .scroll((scroll, 0)),
            inner,
        );
    }
}

// ---------------------------------------------------------------- overview

fn draw_overview(frame: &mut Frame, app: &App, size: Rect) {
    let [header, title, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(size);
    draw_header(frame, app, header);
    draw_status(frame, app, status);
    frame.render_widget(
        panel(
            Line::from(vec![
                Span::raw(" overview "),
                Span::styled(
                    "· SQNR dB per method, most sensitive layer first · ★ best ",
                    Style::new().fg(Color::DarkGray),
                ),
            ]),
            true,
            Borders::TOP,
        ),
        title,
    );
    let order = app.by_sensitivity();
    // Method columns from the first layer that has methods (all share the options).
    let methods: Vec<MethodResult> = app
        .slots
        .iter()
        .filter_map(|s| s.result.as_ref())
        .find(|l| !l.methods.is_empty())
        .map(|l| l.methods.clone())
        .unwrap_or_default();
    let floor = app.opts.thresholds.sqnr_floor_db;
    let wide = body.width >= 120;
    let col_w: u16 = if wide { 8 } else { 6 };
    let n_m = methods.len() as u16;
    // name + best(6) + [method(10) + bar] + methods + warn(3), one space between columns.
    // Columns: name, best, [bar, method], methods..., warn; one space between each.
    let spacing = if wide { n_m + 4 } else { n_m + 2 };
    let fixed = 6 + n_m * col_w + 4 + spacing;
    let longest = app
        .slots
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(5)
        .max(5) as u16;
    let (name_w, bar_w) = if wide {
        let name_w = longest.min(40);
        let bar_w = body.width.saturating_sub(fixed + name_w + 10);
        (name_w, bar_w)
    } else {
        (body.width.saturating_sub(fixed).max(8), 0)
    };
    let top_db = order
        .iter()
        .filter_map(|&i| app.slots[i].sensitivity())
        .filter(|v| v.is_finite())
        .fold(60.0_f64, f64::max);
    let h = usize::from(body.height.saturating_sub(1));
    let first = scroll_start(app.overview_scroll, h, order.len());
    let rows = order
        .iter()
        .enumerate()
        .skip(first)
        .take(h)
        .map(|(pos, &i)| {
            let slot = &app.slots[i];
            let mut cells = vec![Cell::from(fit_middle(&slot.name, usize::from(name_w)))];
            match &slot.result {
                None => cells.push(Cell::from("   …").fg(Color::DarkGray)),
                Some(l) if l.error.is_some() => cells.push(Cell::from(" error").fg(Color::Red)),
                Some(l) => {
                    let best = l.sensitivity_sqnr_db.unwrap_or(f64::NAN);
                    cells.push(
                        Cell::from(format!("{:>5} ", db(best)))
                            .style(Style::new().fg(Color::Black).bg(sqnr_color(best, floor))),
                    );
                    if wide {
                        let filled = if best.is_finite() && best > 0.0 {
                            ((best / top_db * f64::from(bar_w)).round() as usize)
                                .min(usize::from(bar_w))
                        } else {
                            0
                        };
                        cells.push(Cell::from("▇".repeat(filled)).fg(sqnr_color(best, floor)));
                        cells.push(Cell::from(
                            l.recommended_method().map(short_label).unwrap_or_default(),
                        ));
                    }
                    for m in &methods {
                        let label = m.label();
                        let cell = match l.methods.iter().find(|x| x.label() == label) {
                            Some(x) => {
                                let v = x.metrics.sqnr_db;
                                let is_best = l.recommended.as_deref() == Some(label.as_str());
                                let mut st = Style::new().fg(sqnr_color(v, floor));
                                if is_best {
                                    st = st.bold();
                                }
                                let w = usize::from(col_w) - 1;
                                Cell::from(format!(
                                    "{:>w$}{}",
                                    db(v),
                                    if is_best { "★" } else { " " }
                                ))
                                .style(st)
                            }
                            None => Cell::from("  —").fg(Color::DarkGray),
                        };
                        cells.push(cell);
                    }
                    cells.push(
                        Cell::from(if l.warnings.is_empty() {
                            String::new()
                        } else {
                            format!("⚠{}", l.warnings.len())
                        })
                        .fg(Color::Yellow),
                    );
                }
            }
            let mut row = Row::new(cells);
            if pos == app.overview_scroll {
                row = row.style(Style::new().bg(Color::Blue).bold());
            }
            row
        });
    let mut head: Vec<String> = vec!["layer".into(), " best".into()];
    let mut widths = vec![Constraint::Length(name_w), Constraint::Length(6)];
    if wide {
        head.push(format!("best SQNR (0–{top_db:.0} dB)"));
        head.push("method".into());
        widths.push(Constraint::Length(bar_w));
        widths.push(Constraint::Length(10));
    }
    for m in &methods {
        let label = if wide {
            short_label(m)
        } else {
            match (m.method, m.percentile) {
                (MethodKind::Entropy, _) => "entr".into(),
                (_, Some(p)) => format!("{p}"),
                _ => m.method.name().to_string(),
            }
        };
        let w = usize::from(col_w);
        head.push(format!("{:>w$}", fit(&label, w)));
        widths.push(Constraint::Length(col_w));
    }
    head.push("warn".into());
    widths.push(Constraint::Length(4));
    let table = Table::new(rows, widths)
        .header(Row::new(head).style(Style::new().fg(Color::DarkGray).bold()))
        .column_spacing(1);
    frame.render_widget(table, body);
}

// ---------------------------------------------------------------- help

pub const KEYS: &[(&str, &str)] = &[
    (
        "↑/↓  j/k",
        "move in the focused panel (layers, methods, details)",
    ),
    ("PgUp/PgDn g/G", "move by 10 / to the ends"),
    ("Tab / Shift-Tab", "focus: layers → methods → details"),
    ("Enter", "open: layer → its methods; overview row → layer"),
    ("l", "histogram count scale: linear / log"),
    ("z", "histogram x range: full / zoomed to the clip ranges"),
    (
        "s",
        "scheme: symmetric / affine (re-runs, keeps histograms)",
    ),
    ("+ / -", "bit width 2..=16 (re-runs)"),
    ("p", "edit the percentiles, comma-separated (re-runs)"),
    ("o", "overview: all layers × methods, most sensitive first"),
    ("/", "filter layers by name (Esc clears)"),
    ("S", "sort layers: name / sensitivity / warnings"),
    ("e", "export the report (text/json/csv/markdown) to ./"),
    ("?", "this help"),
    (
        "q  Esc  Ctrl-C",
        "quit (Esc first leaves overview / clears the filter)",
    ),
    ("mouse", "click selects, wheel scrolls"),
];

fn draw_help(frame: &mut Frame, size: Rect) {
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
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:>16}  "), Style::new().fg(Color::Yellow).bold()),
                Span::raw(*what),
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
        " <20 ".black().on_red(),
        Span::raw(" "),
        " <30 ".black().on_yellow(),
        Span::raw(" "),
        " ≥30 ".black().on_green(),
        Span::raw("  ⚠n warnings  ✖ error"),
    ]));
    let block = Block::bordered()
        .title(" keys · any key closes ")
        .border_style(Style::new().fg(Color::Yellow));
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
