//! Mouse events: clicks select what the layout shows at the point, the wheel scrolls.

use super::*;

impl App {
    pub fn handle_mouse(&mut self, m: MouseEvent) {
        let at = Position::new(m.column, m.row);
        if self.help {
            match m.kind {
                MouseEventKind::Down(_) => self.help = false,
                MouseEventKind::ScrollDown => self.scroll_help(1),
                MouseEventKind::ScrollUp => self.scroll_help(-1),
                _ => {}
            }
            return;
        }
        match self.view {
            View::Channels => {
                let chart = layout::channel_areas(self.size).chart;
                match m.kind {
                    MouseEventKind::ScrollDown => self.pan(1),
                    MouseEventKind::ScrollUp => self.pan(-1),
                    MouseEventKind::Down(MouseButton::Left) if chart.contains(at) => {
                        let (n, cols) = (self.channel_count(), usize::from(chart.width));
                        let (first, span) =
                            layout::channel_window(n, self.channel_cursor, self.channel_zoom, cols);
                        let col = usize::from(at.x - chart.x);
                        if col < cols.min(span) {
                            self.channel_cursor = layout::channel_column(first, span, col, cols).0;
                        }
                    }
                    _ => {}
                }
            }
            View::Compare => self.compare_mouse(m, at),
            View::Formats | View::Convergence => match m.kind {
                MouseEventKind::ScrollDown => self.step(1),
                MouseEventKind::ScrollUp => self.step(-1),
                _ => {}
            },
            View::Overview => {
                let rows = layout::overview_areas(self.size).rows;
                match m.kind {
                    MouseEventKind::ScrollDown => self.step(3),
                    MouseEventKind::ScrollUp => self.step(-3),
                    MouseEventKind::Down(MouseButton::Left) if rows.contains(at) => {
                        let first = layout::scroll_start(
                            self.overview_scroll,
                            usize::from(rows.height),
                            self.slots.len(),
                        );
                        let row = first + usize::from(at.y - rows.y);
                        if row < self.slots.len() {
                            if self.overview_scroll == row {
                                self.enter();
                            } else {
                                self.overview_scroll = row;
                            }
                        }
                    }
                    _ => {}
                }
            }
            View::Main => {
                let areas = layout::main_areas(self.size, self.method_count());
                let Some(panel) = areas.panel_at(at) else {
                    return;
                };
                match m.kind {
                    MouseEventKind::ScrollDown => {
                        self.focus = panel;
                        self.step(1);
                    }
                    MouseEventKind::ScrollUp => {
                        self.focus = panel;
                        self.step(-1);
                    }
                    MouseEventKind::Down(MouseButton::Left) => {
                        self.focus = panel;
                        match panel {
                            Focus::Layers if areas.layers_rows.contains(at) => {
                                let rows = self.list_rows();
                                let h = usize::from(areas.layers_rows.height);
                                let cursor = self.list_cursor(&rows);
                                let first = layout::scroll_start(cursor, h, rows.len());
                                let row = first + usize::from(at.y - areas.layers_rows.y);
                                match rows.get(row) {
                                    // A click on the group under the cursor folds or
                                    // unfolds it.
                                    Some(TreeRow::Group { key, open, .. }) if row == cursor => {
                                        let (key, open) = (key.clone(), *open);
                                        self.set_fold(&key, open);
                                    }
                                    Some(r) => {
                                        let r = r.clone();
                                        self.move_to_row(&r);
                                    }
                                    None => {}
                                }
                            }
                            Focus::Methods if areas.method_rows.contains(at) => {
                                // The rows as drawn: int methods or FP8 rows, maybe scrolled.
                                let n = self.method_count();
                                let h = usize::from(areas.method_rows.height);
                                let cursor = self.method_index().unwrap_or(0);
                                let first = layout::scroll_start(cursor, h, n);
                                let row = first + usize::from(at.y - areas.method_rows.y);
                                if row < n {
                                    self.method = Some(row);
                                }
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
