//! The histogram plot: one column per terminal cell, bar heights in eighth blocks, each
//! method's clip points as coloured markers, the values the selected method clips drawn red.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::Widget;

use crate::analysis::cast::F16_MAX;
use crate::histogram::PackedHistogram;

/// One clip point of one method.
#[derive(Clone, Debug)]
pub struct Marker {
    pub x: f64,
    pub color: Color,
    /// Letter drawn in the top row so markers can be told apart without colour.
    pub tag: char,
    pub selected: bool,
}

/// The plot of `hist` over the view `[lo, hi]`.
pub struct HistogramPlot<'a> {
    pub hist: &'a PackedHistogram,
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
    pub markers: &'a [Marker],
    /// The selected method's range: columns outside it are drawn as clipped.
    pub keep: Option<(f64, f64)>,
}

const EIGHTHS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Counts of `hist` resampled to `cols` equal columns over `[lo, hi]`: each fine bin adds its
/// count in proportion to its overlap with a column (exact sums when the columns are whole
/// groups of fine bins, i.e. the same as `Histogram::coarsen`).
pub fn resample(hist: &PackedHistogram, lo: f64, hi: f64, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; cols];
    let bins = hist.bins();
    let fw = hist.width();
    if cols == 0
        || hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater)
        || !fw.is_finite()
        || fw <= 0.0
        || !lo.is_finite()
        || !hi.is_finite()
    {
        return out;
    }
    let dx = (hi - lo) / cols as f64;
    // Only the fine bins that overlap the view.
    let first = (((lo - hist.lo) / fw).floor().max(0.0) as usize).min(bins);
    let last = ((((hi - hist.lo) / fw).ceil().max(0.0)) as usize).min(bins);
    for (b, c) in hist.nonzero().skip_while(|&(b, _)| b < first) {
        if b >= last {
            break;
        }
        let b0 = hist.lo + fw * b as f64;
        let b1 = b0 + fw;
        let c0 = (((b0 - lo) / dx).floor().max(0.0) as usize).min(cols - 1);
        let c1 = (((b1 - lo) / dx).ceil().max(0.0) as usize).min(cols);
        for (col, slot) in out.iter_mut().enumerate().take(c1.max(c0 + 1)).skip(c0) {
            let x0 = lo + dx * col as f64;
            let x1 = x0 + dx;
            let overlap = (b1.min(x1) - b0.max(x0)).max(0.0);
            *slot += c as f64 * overlap / fw;
        }
    }
    out
}

/// Column of `x` in a view of `cols` columns over `[lo, hi]`, if in view.
pub fn column_of(x: f64, lo: f64, hi: f64, cols: usize) -> Option<usize> {
    if cols == 0
        || !x.is_finite()
        || hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater)
        || x < lo
        || x > hi
    {
        return None;
    }
    let c = ((x - lo) / (hi - lo) * cols as f64).floor() as usize;
    Some(c.min(cols - 1))
}

impl Widget for HistogramPlot<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let area = area.intersection(buf.area);
        if area.width == 0 || area.height == 0 {
            return;
        }
        let cols = usize::from(area.width);
        let rows = usize::from(area.height);
        let counts = resample(self.hist, self.lo, self.hi, cols);
        let scale = |v: f64| if self.log { v.ln_1p() } else { v };
        let peak = counts.iter().copied().fold(0.0, f64::max);
        let top = scale(peak);
        let dx = (self.hi - self.lo) / cols as f64;
        for (c, &v) in counts.iter().enumerate() {
            let mut eighths = if top > 0.0 {
                (scale(v) / top * (rows * 8) as f64).round() as usize
            } else {
                0
            };
            // A few outliers among millions still deserve a visible tick.
            if v > 0.0 && eighths == 0 {
                eighths = 1;
            }
            let centre = self.lo + dx * (c as f64 + 0.5);
            let clipped = self.keep.is_some_and(|(a, b)| centre < a || centre > b);
            let color = if clipped { Color::Red } else { Color::Gray };
            for r in 0..rows {
                // r = 0 is the bottom row.
                let fill = eighths.saturating_sub(r * 8).min(8);
                let y = area.bottom() - 1 - r as u16;
                let x = area.x + c as u16;
                if fill > 0
                    && let Some(cell) = buf.cell_mut((x, y))
                {
                    cell.set_char(EIGHTHS[fill]).set_fg(color);
                }
            }
        }
        // The fp16 limit, under the method markers.
        for limit in [-F16_MAX, F16_MAX] {
            if let Some(c) = column_of(limit, self.lo, self.hi, cols) {
                let x = area.x + c as u16;
                for y in area.top()..area.bottom() {
                    if let Some(cell) = buf.cell_mut((x, y)) {
                        cell.set_char('╎').set_fg(Color::LightRed);
                    }
                }
            }
        }
        // Markers beyond the view: their tags at the edge they are past (◂MA … S3▸).
        let top = area.top();
        let (left, right) = edge_tags(self.markers, self.lo, self.hi, cols);
        let edge = Style::new().fg(Color::DarkGray);
        if !left.is_empty() {
            if let Some(cell) = buf.cell_mut((area.x, top)) {
                cell.set_char('◂').set_style(edge);
            }
            for (k, m) in left.iter().enumerate() {
                if let Some(cell) = buf.cell_mut((area.x + 1 + k as u16, top)) {
                    cell.set_char(m.tag)
                        .set_style(Style::new().fg(m.color).add_modifier(Modifier::BOLD));
                }
            }
        }
        if !right.is_empty() {
            let x0 = area.right() - 1 - right.len() as u16;
            for (k, m) in right.iter().enumerate() {
                if let Some(cell) = buf.cell_mut((x0 + k as u16, top)) {
                    cell.set_char(m.tag)
                        .set_style(Style::new().fg(m.color).add_modifier(Modifier::BOLD));
                }
            }
            if let Some(cell) = buf.cell_mut((area.right() - 1, top)) {
                cell.set_char('▸').set_style(edge);
            }
        }
        // Each method's tag in its column; tags that share a column stack downwards (the
        // selected method's first), so none hides another. Below them the column's line: bold
        // for the selected method, dotted (over empty cells only) for the others.
        let placed = place_tags(self.markers, self.lo, self.hi, cols, rows);
        let mut stacked = vec![0usize; cols];
        for &(k, c, r) in &placed {
            let m = &self.markers[k];
            stacked[c] = stacked[c].max(r + 1);
            if let Some(cell) = buf.cell_mut((area.x + c as u16, top + r as u16)) {
                cell.set_char(m.tag)
                    .set_style(Style::new().fg(m.color).add_modifier(Modifier::BOLD));
            }
        }
        for m in self.markers {
            let Some(c) = column_of(m.x, self.lo, self.hi, cols) else {
                continue;
            };
            let x = area.x + c as u16;
            for r in stacked[c]..rows {
                let Some(cell) = buf.cell_mut((x, top + r as u16)) else {
                    continue;
                };
                if m.selected {
                    cell.set_char('┃')
                        .set_style(Style::new().fg(m.color).add_modifier(Modifier::BOLD));
                } else if cell.symbol() == " " {
                    // Unselected markers only over empty cells: the bars stay readable.
                    cell.set_char('┊').set_fg(m.color);
                }
            }
        }
    }
}

/// The markers past the view's left and right ends, one per tag, in the order drawn at that
/// edge of the top row (`◂` or `▸` beside them); none when they would not fit in `cols`.
fn edge_tags(markers: &[Marker], lo: f64, hi: f64, cols: usize) -> (Vec<&Marker>, Vec<&Marker>) {
    let mut left: Vec<&Marker> = Vec::new();
    let mut right: Vec<&Marker> = Vec::new();
    for m in markers {
        if m.x < lo && !left.iter().any(|o| o.tag == m.tag) {
            left.push(m);
        } else if m.x > hi && !right.iter().any(|o| o.tag == m.tag) {
            right.push(m);
        }
    }
    for v in [&mut left, &mut right] {
        if cols <= v.len() + 1 {
            v.clear();
        }
    }
    (left, right)
}

/// Where each in-view marker's tag goes: `(marker, column, row)`, row 0 at the top. One tag per
/// method and column (a method's two ends can share one); tags sharing a column take rows
/// 0, 1, … (the selected method's first, then in table order), below the edge's tags of
/// markers past the view; when a column has more tags than rows, the rest go to the nearest
/// columns with a free top row.
pub fn place_tags(
    markers: &[Marker],
    lo: f64,
    hi: f64,
    cols: usize,
    rows: usize,
) -> Vec<(usize, usize, usize)> {
    if cols == 0 || rows == 0 {
        return Vec::new();
    }
    let mut by_col: Vec<Vec<usize>> = vec![Vec::new(); cols];
    for (k, m) in markers.iter().enumerate() {
        let Some(c) = column_of(m.x, lo, hi, cols) else {
            continue;
        };
        if !by_col[c].iter().any(|&o| markers[o].tag == m.tag) {
            by_col[c].push(k);
        }
    }
    // The top row's cells the past-the-view tags take (with their ◂ and ▸).
    let mut used = vec![0usize; cols];
    let (left, right) = edge_tags(markers, lo, hi, cols);
    if !left.is_empty() {
        used[..=left.len()].fill(1);
    }
    if !right.is_empty() {
        used[cols - 1 - right.len()..].fill(1);
    }
    let mut out = Vec::new();
    let mut overflow = Vec::new();
    for (c, ks) in by_col.iter_mut().enumerate() {
        ks.sort_by_key(|&k| !markers[k].selected);
        for &k in ks.iter() {
            if used[c] < rows {
                out.push((k, c, used[c]));
                used[c] += 1;
            } else {
                overflow.push((k, c));
            }
        }
    }
    for (k, c) in overflow {
        let free = (1..cols).find_map(|d| {
            [c.checked_add(d), c.checked_sub(d)]
                .into_iter()
                .flatten()
                .find(|&x| x < cols && used[x] == 0)
        });
        if let Some(x) = free {
            out.push((k, x, 0));
            used[x] = 1;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::histogram::Histogram;

    fn dense() -> Histogram {
        let mut h = Histogram::new(-1.0, 1.0, 65536);
        let v: Vec<f32> = (0..1000).map(|i| (i as f32 / 500.0) - 1.0).collect();
        h.add_values(&v);
        h
    }

    fn hist() -> PackedHistogram {
        PackedHistogram::pack(&dense())
    }

    #[test]
    fn resample_keeps_the_total_in_full_view() {
        let h = hist();
        for cols in [1, 7, 80, 160, 65536, 100_000] {
            let r = resample(&h, h.lo, h.hi, cols);
            let s: f64 = r.iter().sum();
            assert!((s - 1000.0).abs() < 1e-6, "{cols}: {s}");
        }
    }

    #[test]
    fn a_zoomed_view_counts_only_the_bins_inside_it() {
        // [-0.5, 0.5) is fine bins 16384..49152 exactly, so the columns hold their sum.
        let d = dense();
        let inside: u64 = d.counts[16384..49152].iter().sum();
        for cols in [1, 13, 64, 300] {
            let s: f64 = resample(&hist(), -0.5, 0.5, cols).iter().sum();
            assert!((s - inside as f64).abs() < 1e-6, "{cols}: {s} vs {inside}");
        }
    }

    #[test]
    fn resample_matches_coarsen_when_it_divides() {
        let h = hist();
        let r = resample(&h, h.lo, h.hi, 64);
        let c = dense().coarsen(1024);
        for (a, b) in r.iter().zip(&c.counts) {
            assert!((a - *b as f64).abs() < 1e-6);
        }
    }

    #[test]
    fn degenerate_views_do_not_panic() {
        let h = hist();
        for (lo, hi) in [
            (0.0, 0.0),
            (1.0, -1.0),
            (f64::NAN, 1.0),
            (-1e300, 1e300),
            (5.0, 6.0),
            (f64::NEG_INFINITY, 0.0),
        ] {
            let _ = resample(&h, lo, hi, 10);
            let mut buf = Buffer::empty(Rect::new(0, 0, 10, 4));
            let markers = [Marker {
                x: f64::NAN,
                color: Color::Green,
                tag: 'M',
                selected: true,
            }];
            HistogramPlot {
                hist: &h,
                lo,
                hi,
                log: true,
                markers: &markers,
                keep: Some((f64::NAN, 0.0)),
            }
            .render(Rect::new(0, 0, 10, 4), &mut buf);
        }
        for (w, hgt) in [(0, 0), (1, 1), (0, 5), (3, 0)] {
            let mut buf = Buffer::empty(Rect::new(0, 0, w, hgt));
            HistogramPlot {
                hist: &h,
                lo: -1.0,
                hi: 1.0,
                log: false,
                markers: &[],
                keep: None,
            }
            .render(Rect::new(0, 0, w, hgt), &mut buf);
        }
    }

    fn marker(x: f64, tag: char, selected: bool) -> Marker {
        Marker {
            x,
            color: Color::Green,
            tag,
            selected,
        }
    }

    /// The chars of column `x` of `buf`, top to bottom.
    fn column(buf: &Buffer, x: u16) -> String {
        (0..buf.area.height).map(|y| buf[(x, y)].symbol()).collect()
    }

    /// The histogram of [`hist`] over [-1, 1], 20 columns wide, with these markers.
    fn plot(markers: &[Marker], height: u16) -> Buffer {
        let area = Rect::new(0, 0, 20, height);
        let mut buf = Buffer::empty(area);
        HistogramPlot {
            hist: &hist(),
            lo: -1.0,
            hi: 1.0,
            log: false,
            markers,
            keep: None,
        }
        .render(area, &mut buf);
        buf
    }

    #[test]
    fn markers_in_one_column_stack_instead_of_hiding_each_other() {
        // minmax and p99.999 both at the data's ends (as on a tensor whose max is rare); the
        // selected percentile's tag goes first, then the line below the stack is its own.
        let markers = [
            marker(-1.0, 'M', false),
            marker(1.0, 'M', false),
            marker(-0.999, '3', true),
            marker(0.999, '3', true),
            marker(0.0, 'H', false),
        ];
        let buf = plot(&markers, 5);
        assert_eq!(&column(&buf, 0)[..], "3M┃┃┃");
        assert_eq!(&column(&buf, 19)[..], "3M┃┃┃");
        assert!(column(&buf, 10).starts_with('H'));
    }

    #[test]
    fn tags_past_the_view_do_not_hide_tags_in_it() {
        // M past the left end, 3 past the right; S and A in view in the edge columns.
        let markers = [
            marker(-2.0, 'M', false),
            marker(-0.99, 'S', false),
            marker(0.99, 'A', false),
            marker(2.0, '3', false),
        ];
        let buf = plot(&markers, 4);
        let top: String = (0..20).map(|x| buf[(x, 0)].symbol()).collect();
        assert!(top.starts_with("◂M") && top.ends_with("3▸"), "{top:?}");
        // The in-view tags go below the edge's row.
        assert!(column(&buf, 0).starts_with("◂S"), "{:?}", column(&buf, 0));
        assert!(column(&buf, 19).starts_with("▸A"), "{:?}", column(&buf, 19));
        // One row: no room below, so they move to the nearest free column.
        let placed = place_tags(&markers, -1.0, 1.0, 20, 1);
        assert_eq!(placed, [(1, 2, 0), (2, 17, 0)]);
    }

    #[test]
    fn more_tags_than_rows_spill_to_free_columns() {
        let tags = ['M', 'A', 'H', 'S', '1', '2', '3'];
        let markers: Vec<Marker> = tags.iter().map(|&t| marker(0.5, t, t == 'S')).collect();
        let placed = place_tags(&markers, 0.0, 1.0, 10, 3);
        assert_eq!(placed.len(), 7);
        // The selected first, then table order, down column 5; the rest beside it.
        assert_eq!(placed[..3], [(3, 5, 0), (0, 5, 1), (1, 5, 2)]);
        let cells: std::collections::HashSet<(usize, usize)> =
            placed.iter().map(|&(_, c, r)| (c, r)).collect();
        assert_eq!(cells.len(), 7, "two tags in one cell: {placed:?}");
        // With no room at all, nothing is placed rather than overwritten.
        assert!(place_tags(&markers, 0.0, 1.0, 0, 3).is_empty());
        assert_eq!(place_tags(&markers, 0.0, 1.0, 2, 1).len(), 2);
    }

    #[test]
    fn huge_counts_scale() {
        let mut h = Histogram::new(0.0, 1.0, 16);
        h.counts[3] = u64::MAX;
        h.counts[4] = 1;
        let h = PackedHistogram::pack(&h);
        let mut buf = Buffer::empty(Rect::new(0, 0, 16, 3));
        HistogramPlot {
            hist: &h,
            lo: 0.0,
            hi: 1.0,
            log: false,
            markers: &[],
            keep: None,
        }
        .render(Rect::new(0, 0, 16, 3), &mut buf);
        // The single value next to the huge bin still shows a tick.
        assert_eq!(buf[(4, 2)].symbol(), "▁");
        assert_eq!(buf[(3, 0)].symbol(), "█");
    }
}
