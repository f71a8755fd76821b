//! The screens, their panels and where each goes. Drawing (`views`) and mouse hit-testing
//! (`app`) both read these, so a click lands on what is drawn there.

use ratatui::layout::{Constraint, Layout, Position, Rect};

/// Which screen is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Main,
    Overview,
    /// The selected layer's channels: per-channel absmax and the granularity table.
    Channels,
    /// The selected layer's format rows (FP8, MX, NVFP4) with their SQNR.
    Formats,
    /// The selected layer's ranges over batch prefixes (`--validate`), one line per method.
    Convergence,
    /// `calibscope compare`: two runs layer by layer.
    Compare,
}

/// Which panel of the main view receives ↑/↓.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Layers,
    Methods,
    Details,
}

impl Focus {
    pub fn next(self) -> Focus {
        match self {
            Focus::Layers => Focus::Methods,
            Focus::Methods => Focus::Details,
            Focus::Details => Focus::Layers,
        }
    }
    pub fn prev(self) -> Focus {
        match self {
            Focus::Layers => Focus::Details,
            Focus::Methods => Focus::Layers,
            Focus::Details => Focus::Methods,
        }
    }
}

/// Below this the screen shows a "too small" message instead of the UI.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

pub fn too_small(size: Rect) -> bool {
    size.width < MIN_WIDTH || size.height < MIN_HEIGHT
}

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
    /// The details' text (below their title line).
    pub details_text: Rect,
    pub status: Rect,
}

impl MainAreas {
    /// The panel under `at`, if any.
    pub fn panel_at(&self, at: Position) -> Option<Focus> {
        if self.layers_rows.contains(at) || self.layers.contains(at) {
            Some(Focus::Layers)
        } else if self.methods.contains(at) {
            Some(Focus::Methods)
        } else if self.details.contains(at) {
            Some(Focus::Details)
        } else {
            None
        }
    }
}

/// Method rows the table reserves room for at least (4 methods + the default 3 percentiles).
const METHOD_ROWS: u16 = 7;

/// The frame the main and compare views share: a header line, a list on the left (3/10 of the
/// width, 24 to 48 columns), the rest on the right, and a status line.
fn list_frame(size: Rect) -> [Rect; 4] {
    let [header, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(size);
    let list_w = (body.width * 3 / 10).clamp(24, 48).min(body.width);
    let [list, right] =
        Layout::horizontal([Constraint::Length(list_w), Constraint::Min(0)]).areas(body);
    [header, list, right, status]
}

/// The main view's panels when the method table has `method_rows` rows: the table grows past
/// [`METHOD_ROWS`] up to half the height (the FP8 view's `mse_fp8` row, more percentiles) and
/// scrolls beyond that.
pub fn main_areas(size: Rect, method_rows: usize) -> MainAreas {
    let [header, layers, right, status] = list_frame(size);
    let h = right.height;
    let rows = u16::try_from(method_rows).unwrap_or(u16::MAX);
    let methods_h = (rows.max(METHOD_ROWS) + 2)
        .min((h / 2).max(METHOD_ROWS + 2))
        .min(h);
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
    let details_text = Rect {
        y: details.y.saturating_add(1),
        height: details.height.saturating_sub(1),
        ..details
    };
    MainAreas {
        header,
        layers,
        layers_rows,
        hist,
        methods,
        method_rows,
        details,
        details_text,
        status,
    }
}

/// The widest help overlay: the key column (18) and the longest help text (58).
const HELP_WIDTH: u16 = 78;

/// The help overlay over `size` with `lines` lines of text: its box (centred, bordered) and how
/// many of the lines show at once (the others scroll).
pub fn help_area(size: Rect, lines: usize) -> (Rect, usize) {
    let w = HELP_WIDTH.min(size.width.saturating_sub(2));
    let want = u16::try_from(lines).unwrap_or(u16::MAX).saturating_add(2);
    let h = want.min(size.height.saturating_sub(2));
    let area = Rect::new(
        size.x + (size.width - w) / 2,
        size.y + (size.height - h) / 2,
        w,
        h,
    );
    (area, usize::from(h.saturating_sub(2)))
}

/// Where each part of the overview goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct OverviewAreas {
    pub header: Rect,
    pub title: Rect,
    /// The table, its header row included.
    pub table: Rect,
    /// The table's data rows (below its header).
    pub rows: Rect,
    pub status: Rect,
}

pub fn overview_areas(size: Rect) -> OverviewAreas {
    let [header, title, table, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(size);
    let rows = Rect {
        y: table.y.saturating_add(1),
        height: table.height.saturating_sub(1),
        ..table
    };
    OverviewAreas {
        header,
        title,
        table,
        rows,
        status,
    }
}

/// Where each part of the channel view goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChannelAreas {
    pub header: Rect,
    pub title: Rect,
    /// The per-channel absmax bars.
    pub chart: Rect,
    /// Channel indices under the chart.
    pub axis: Rect,
    /// The granularity table (its title line included).
    pub table: Rect,
    pub status: Rect,
}

/// Granularity rows the table reserves room for: tensor, token, channel, two blocks and the
/// outliers kept in float.
const GRANULARITY_ROWS: u16 = 6;

pub fn channel_areas(size: Rect) -> ChannelAreas {
    let [header, title, chart, axis, table, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(GRANULARITY_ROWS + 2),
        Constraint::Length(1),
    ])
    .areas(size);
    ChannelAreas {
        header,
        title,
        chart,
        axis,
        table,
        status,
    }
}

/// Where each part of the formats view goes.
pub struct FormatAreas {
    pub header: Rect,
    pub table: Rect,
    pub status: Rect,
}

pub fn format_areas(size: Rect) -> FormatAreas {
    let [header, table, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(size);
    FormatAreas {
        header,
        table,
        status,
    }
}

/// Where each part of the convergence view goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvergenceAreas {
    pub header: Rect,
    /// The panel's title line.
    pub title: Rect,
    /// The verdict and its sentence (two lines: it wraps at 80 columns).
    pub verdict: Rect,
    /// The chart: y labels, y axis and the lines.
    pub chart: Rect,
    /// The x axis line under the chart and its tick labels (the batch counts).
    pub axis: Rect,
    pub ticks: Rect,
    /// The method table, its header row included.
    pub table: Rect,
    pub status: Rect,
}

/// `methods`: rows of the method table, which takes at most a third of the height (at least
/// the main view's method rows).
pub fn convergence_areas(size: Rect, methods: usize) -> ConvergenceAreas {
    let rows = u16::try_from(methods).unwrap_or(u16::MAX).saturating_add(1);
    let table_h = rows.min((METHOD_ROWS + 1).max(size.height / 3));
    let [header, title, verdict, chart, axis, ticks, table, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(table_h),
        Constraint::Length(1),
    ])
    .areas(size);
    ConvergenceAreas {
        header,
        title,
        verdict,
        chart,
        axis,
        ticks,
        table,
        status,
    }
}

/// Where each part of the compare view goes.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompareAreas {
    pub header: Rect,
    pub pairs: Rect,
    /// The rows of the pair list (inside its block).
    pub pairs_rows: Rect,
    /// SQNR over layer order.
    pub spark: Rect,
    /// The reference's and the test's histograms, one above the other on one x axis.
    pub values: Rect,
    /// The histogram of t − r.
    pub error: Rect,
    pub metrics: Rect,
    pub status: Rect,
}

/// Rows of the compare view's metrics panel (its title and six lines).
const COMPARE_METRICS_ROWS: u16 = 7;

pub fn compare_areas(size: Rect) -> CompareAreas {
    let [header, pairs, right, status] = list_frame(size);
    let h = right.height;
    let spark_h = (h / 8).clamp(4, 7).min(h);
    let metrics_h = COMPARE_METRICS_ROWS.min(h - spark_h);
    let rest = h - spark_h - metrics_h;
    let values_h = rest * 3 / 5;
    let [spark, values, error, metrics] = Layout::vertical([
        Constraint::Length(spark_h),
        Constraint::Length(values_h),
        Constraint::Min(0),
        Constraint::Length(metrics_h),
    ])
    .areas(right);
    let pairs_rows = Rect {
        x: pairs.x,
        y: pairs.y.saturating_add(1),
        width: pairs.width.saturating_sub(1),
        height: pairs.height.saturating_sub(1),
    };
    CompareAreas {
        header,
        pairs,
        pairs_rows,
        spark,
        values,
        error,
        metrics,
        status,
    }
}

/// The channels the chart shows: `(first, span)` for `count` channels at zoom level `zoom`
/// (each level a quarter of the last, never below one channel per column of `cols`), centred
/// on `cursor` where the ends allow.
pub fn channel_window(count: usize, cursor: usize, zoom: u32, cols: usize) -> (usize, usize) {
    if count == 0 {
        return (0, 0);
    }
    let floor = cols.clamp(1, count);
    let span = count.checked_shr(2 * zoom).unwrap_or(0).clamp(floor, count);
    let first = cursor.saturating_sub(span / 2).min(count - span);
    (first, span)
}

/// Channels `[a, b)` drawn in column `col` of `cols` columns over the window `(first, span)`.
pub fn channel_column(first: usize, span: usize, col: usize, cols: usize) -> (usize, usize) {
    let cols = cols.clamp(1, span.max(1));
    let a = first + col * span / cols;
    let b = first + ((col + 1) * span / cols).max(col * span / cols + 1);
    (a, b.min(first + span))
}

/// First row shown so that `pos` stays visible in a window of `h` rows over `n` rows.
pub fn scroll_start(pos: usize, h: usize, n: usize) -> usize {
    if h == 0 || n <= h {
        return 0;
    }
    // Keep the cursor a bit away from the bottom edge while possible.
    pos.saturating_sub(h.saturating_sub(2)).min(n - h)
}
