//! The layer list's part of the state: display order, filter, and the tree's rows and folds.

use super::*;

impl App {
    /// Slot indices in display order (sorted, filtered).
    pub fn visible(&self) -> Vec<usize> {
        let needle = self.filter_text().to_lowercase();
        let mut v: Vec<usize> = (0..self.slots.len())
            .filter(|&i| needle.is_empty() || self.slots[i].name.to_lowercase().contains(&needle))
            .collect();
        match self.sort {
            Sort::Name => {}
            Sort::Sensitivity => {
                v.sort_by(|&a, &b| sensitivity_order(&self.slots[a], &self.slots[b]))
            }
            Sort::Warnings => v.sort_by(|&a, &b| {
                self.slots[b]
                    .warnings()
                    .cmp(&self.slots[a].warnings())
                    .then(sensitivity_order(&self.slots[a], &self.slots[b]))
            }),
        }
        v
    }

    /// Slots ordered most sensitive first (the overview's rows), unfiltered.
    pub fn by_sensitivity(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.slots.len()).collect();
        v.sort_by(|&a, &b| sensitivity_order(&self.slots[a], &self.slots[b]));
        v
    }

    /// The filter being typed counts as the filter (live filtering).
    pub fn filter_text(&self) -> &str {
        match &self.input {
            Some(Input::Filter(s)) => s,
            _ => &self.filter,
        }
    }

    /// Row of the selected layer in `visible` (the first row if it is not there).
    pub fn layer_cursor(&self, visible: &[usize]) -> usize {
        self.selected
            .and_then(|s| visible.iter().position(|&v| v == s))
            .unwrap_or(0)
    }

    /// The layer list's rows: the visible layers, or in tree mode their groups and the layers
    /// of the open ones.
    pub fn list_rows(&self) -> Vec<TreeRow> {
        let vis = self.visible();
        if !self.tree {
            return vis
                .into_iter()
                .map(|slot| TreeRow::Layer {
                    slot,
                    label: self.names.rest(slot).to_string(),
                    depth: 0,
                })
                .collect();
        }
        let items: Vec<(usize, &str)> = vis.iter().map(|&i| (i, self.names.rest(i))).collect();
        names::tree_rows(&items, &self.folded)
    }

    /// The cursor's row in `rows`: the group under it, else the selected layer's row, else the
    /// folded group that holds the selected layer, else the first.
    pub fn list_cursor(&self, rows: &[TreeRow]) -> usize {
        if let Some(k) = &self.group_cursor
            && let Some(p) = rows.iter().position(|r| r.key() == Some(k))
        {
            return p;
        }
        let Some(sel) = self.selected else { return 0 };
        if let Some(p) = rows.iter().position(|r| r.slot() == Some(sel)) {
            return p;
        }
        rows.iter()
            .rposition(|r| matches!(r, TreeRow::Group { members, .. } if members.contains(&sel)))
            .unwrap_or(0)
    }

    /// Puts the list's cursor on `row`: a layer is selected, a group only highlighted.
    pub(super) fn move_to_row(&mut self, row: &TreeRow) {
        match row {
            TreeRow::Layer { slot, .. } => {
                self.group_cursor = None;
                self.select(*slot);
            }
            TreeRow::Group { key, .. } => self.group_cursor = Some(key.clone()),
        }
    }

    /// Folds (`fold`) or unfolds the group `key`.
    pub(super) fn set_fold(&mut self, key: &str, fold: bool) {
        if fold {
            self.folded.insert(key.to_string());
        } else {
            self.folded.remove(key);
        }
    }

    /// ← / → in the tree: ← folds the open group under the cursor, else goes to the group
    /// above; → unfolds a folded group.
    pub(super) fn fold_step(&mut self, delta: i64) {
        let rows = self.list_rows();
        let Some(cur) = rows.get(self.list_cursor(&rows)) else {
            return;
        };
        match (cur, delta < 0) {
            (TreeRow::Group { key, open, .. }, true) if *open => {
                let key = key.clone();
                self.set_fold(&key, true);
            }
            (TreeRow::Group { key, open, .. }, false) if !*open => {
                let key = key.clone();
                self.set_fold(&key, false);
            }
            (_, true) => {
                let (pos, depth) = (self.list_cursor(&rows), cur.depth());
                if let Some(parent) = rows[..pos].iter().rev().find(|r| r.depth() < depth) {
                    let parent = parent.clone();
                    self.move_to_row(&parent);
                }
            }
            _ => {}
        }
    }
}
