//! The compare view's part of the state: building it, its pairs arriving, its keys and mouse.

use ratatui::crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::Position;

use super::*;

impl App {
    /// The compare view on `pairing`: every pair listed at once, filled in as it finishes.
    pub fn compare(pairing: Pairing, opts: CompareOptions) -> App {
        let mut app = App::new(Vec::new(), Vec::new(), Options::default());
        app.view = View::Compare;
        let result = compare::pending(&pairing, &opts);
        let names: Vec<&str> = result.pairs.iter().map(|p| p.name.as_str()).collect();
        app.names = NameTable::new(&names);
        app.compare = Some(CompareState {
            result,
            done: vec![false; pairing.pairs.len()],
            pairing,
            opts,
            selected: 0,
        });
        app
    }

    /// A pair of the compare job finished.
    pub fn on_pair(&mut self, generation: u64, index: usize, pair: compare::Pair) {
        if generation != self.generation {
            return;
        }
        if let Some(c) = &mut self.compare
            && let Some(slot) = c.result.pairs.get_mut(index)
        {
            *slot = pair;
            if let Some(d) = c.done.get_mut(index) {
                *d = true;
            }
            c.result.derive();
        }
    }

    /// Keys in the compare view: moving, the first degraded pair, the log scale, export, help
    /// and quit; the analysis keys say they do not apply.
    pub(super) fn act_compare(&mut self, action: Action) -> Option<Command> {
        match action {
            Action::Quit | Action::Back => {
                self.running = false;
                return Some(Command::Quit);
            }
            Action::Help => self.open_help(),
            Action::Export => self.input = Some(Input::Export),
            Action::LogScale => self.log_scale = !self.log_scale,
            Action::Move(delta) => {
                if let Some(c) = &mut self.compare {
                    c.selected = offset(c.selected, delta, c.result.pairs.len());
                }
            }
            Action::FirstDegraded => {
                if let Some(c) = &mut self.compare {
                    match c.first_degraded() {
                        Some(i) => c.selected = i,
                        None => self.message = Some("no pair is degraded".into()),
                    }
                }
            }
            _ => self.message = Some("not in the compare view".into()),
        }
        None
    }

    /// Wheel over the pair list moves; a click on a row selects it.
    pub(super) fn compare_mouse(&mut self, m: MouseEvent, at: Position) {
        let areas = layout::compare_areas(self.size);
        match m.kind {
            MouseEventKind::ScrollDown => self.act_compare(Action::Move(1)),
            MouseEventKind::ScrollUp => self.act_compare(Action::Move(-1)),
            MouseEventKind::Down(MouseButton::Left) if areas.pairs_rows.contains(at) => {
                if let Some(c) = &mut self.compare {
                    let n = c.result.pairs.len();
                    let h = usize::from(areas.pairs_rows.height);
                    let first = layout::scroll_start(c.selected, h, n);
                    let row = first + usize::from(at.y - areas.pairs_rows.y);
                    if row < n {
                        c.selected = row;
                    }
                }
                None
            }
            _ => None,
        };
    }
}
