//! The channel view's part of the state: its cursor, zoom and panning.

use super::*;

impl App {
    /// The selected layer's channel count (from its profile, which arrives first).
    pub fn channel_count(&self) -> usize {
        self.selected_slot()
            .and_then(|s| s.profile.as_ref())
            .and_then(|p| p.channels.as_ref())
            .map_or(0, |c| c.absmax.len())
    }

    /// Columns of the channel chart at the current size.
    pub(super) fn channel_cols(&self) -> usize {
        usize::from(layout::channel_areas(self.size).chart.width)
    }

    /// Opens the channel view on the largest channel, zoomed out.
    pub(super) fn open_channels(&mut self) {
        self.view = View::Channels;
        self.channel_zoom = 0;
        self.channel_cursor = self
            .selected_layer()
            .and_then(|l| l.channels.as_ref())
            .and_then(|c| c.top.first())
            .map_or(0, |t| t.channel);
    }

    /// Zooms in ×4 around the cursor, back out once a column holds one channel.
    pub(super) fn zoom_channels(&mut self) {
        let (n, cols) = (self.channel_count(), self.channel_cols());
        let (_, span) = layout::channel_window(n, self.channel_cursor, self.channel_zoom, cols);
        let (_, next) = layout::channel_window(n, self.channel_cursor, self.channel_zoom + 1, cols);
        self.channel_zoom = if next < span {
            self.channel_zoom + 1
        } else {
            0
        };
    }

    /// Moves the channel cursor by `delta` columns of the chart.
    pub(super) fn pan(&mut self, delta: i64) {
        let (n, cols) = (self.channel_count(), self.channel_cols());
        let (_, span) = layout::channel_window(n, self.channel_cursor, self.channel_zoom, cols);
        let per_col = (span / cols.max(1)).max(1) as i64;
        self.channel_cursor = offset(self.channel_cursor, delta.saturating_mul(per_col), n);
    }
}
