//! The UI state and how events change it. No drawing and no I/O here: handlers return
//! [`Command`]s (start a job, export, quit) that the runner in `mod.rs` carries out, so every
//! key can be unit-tested on a plain `App`.

use std::collections::HashSet;
use std::sync::Arc;

use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};

use crate::analysis::compare::{self, CompareOptions, Comparison, Pairing};
use crate::analysis::options::parse_percentiles;
use crate::analysis::{
    Analysis, FormatKind, JSON_VERSION, KeptProfile, LayerAnalysis, Options, Settings,
};
use crate::calib::Scheme;
use crate::calib::scheme::{MAX_BITS, MIN_BITS};
use crate::report::Format;
use crate::source::{LayerSpec, LoadError};

use super::details;
use super::event::Event;
use super::keys::{self, Action};
use super::layout::{self, Focus, View};
use super::names::{self, NameTable, TreeRow};

mod channel_view;
mod compare_view;
mod layer_list;
mod method_rows;
mod mouse;

/// Order of the layer list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Discovery order (file names, which usually follow the network).
    Name,
    /// Lowest best-SQNR first: the layers that hurt most.
    Sensitivity,
    /// Most warnings first.
    Warnings,
}

impl Sort {
    pub fn name(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::Sensitivity => "sensitivity",
            Sort::Warnings => "warnings",
        }
    }
    fn next(self) -> Sort {
        match self {
            Sort::Name => Sort::Sensitivity,
            Sort::Sensitivity => Sort::Warnings,
            Sort::Warnings => Sort::Name,
        }
    }
}

/// A one-line text prompt in the status line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Filter(String),
    Percentiles(String),
    /// Waiting for the export format key.
    Export,
}

/// One layer: where it comes from and its latest result.
#[derive(Clone, Debug)]
pub struct Slot {
    /// None for inputs that failed before a layer could be formed.
    pub spec: Option<LayerSpec>,
    pub name: String,
    pub result: Option<LayerAnalysis>,
    /// A re-run with new options is under way; `result` still holds the old numbers.
    pub stale: bool,
    /// Histograms and stats, as soon as passes 1–2 are done (kept across re-runs).
    pub profile: Option<Arc<KeptProfile>>,
}

impl Slot {
    pub fn warnings(&self) -> usize {
        self.result.as_ref().map_or(0, |r| r.warnings.len())
    }
    pub fn sensitivity(&self) -> Option<f64> {
        self.result.as_ref().and_then(|r| r.sensitivity_sqnr_db)
    }
    pub fn errored(&self) -> bool {
        self.result.as_ref().is_some_and(|r| r.error.is_some())
    }
}

/// A snapshot of the job's progress counters (the runner copies them in on each tick).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgressView {
    pub done: u64,
    pub total: u64,
    pub layers_done: usize,
    pub layers_total: usize,
    pub running: bool,
}

impl ProgressView {
    pub fn ratio(&self) -> f64 {
        if self.layers_total == 0 {
            return 1.0;
        }
        // Values processed (over all passes) is the honest measure with one huge layer; before
        // any layer has opened (total 0) fall back to the layer count.
        if self.total > 0 {
            (self.done as f64 / self.total as f64).clamp(0.0, 1.0)
        } else {
            (self.layers_done as f64 / self.layers_total as f64).clamp(0.0, 1.0)
        }
    }
}

/// Work for the runner.
#[derive(Debug)]
pub enum Command {
    Quit,
    /// Analyse the listed layers with `opts`; results come back tagged with `generation`.
    Analyze {
        generation: u64,
        opts: Options,
        work: Vec<Work>,
    },
    Export(Format),
    /// Compare the pairs of `pairing`; results come back tagged with `generation`.
    Compare {
        generation: u64,
        pairing: Pairing,
        opts: CompareOptions,
    },
}

/// The compare view's state: the pairs as they finish, and the selection.
#[derive(Debug)]
pub struct CompareState {
    pub pairing: Pairing,
    pub opts: CompareOptions,
    /// Every pair from the start (metrics `None` until it finishes), re-derived as pairs come.
    pub result: Comparison,
    /// Which pairs have finished (indices of `pairing.pairs`).
    pub done: Vec<bool>,
    /// Selected row of `result.pairs`.
    pub selected: usize,
}

impl CompareState {
    pub fn selected_pair(&self) -> Option<&compare::Pair> {
        self.result.pairs.get(self.selected)
    }

    /// Index of the first degraded pair, if any.
    pub fn first_degraded(&self) -> Option<usize> {
        let name = self.result.first_degraded.as_ref()?;
        self.result.pairs.iter().position(|p| &p.name == name)
    }
}

/// One layer to (re)analyse. With a profile only calibration and the metrics pass run again.
#[derive(Debug)]
pub struct Work {
    pub slot: usize,
    pub spec: LayerSpec,
    pub profile: Option<Arc<KeptProfile>>,
}

/// Everything the screen shows.
#[derive(Debug)]
pub struct App {
    pub slots: Vec<Slot>,
    pub opts: Options,
    pub view: View,
    pub focus: Focus,
    pub sort: Sort,
    pub filter: String,
    pub input: Option<Input>,
    pub help: bool,
    /// The help overlay's first line shown (when it does not fit).
    pub help_scroll: usize,
    /// Selected layer (index into `slots`).
    pub selected: Option<usize>,
    /// Selected method row; None follows the recommended method.
    pub method: Option<usize>,
    /// The main view's number format (`x`): None for int (the methods' own grid), else the
    /// FP8 format whose per-tensor rows the histogram markers and the method table show.
    pub number_format: Option<FormatKind>,
    pub log_scale: bool,
    pub zoom: bool,
    pub details_scroll: usize,
    pub overview_scroll: usize,
    /// The channel view's cursor (a channel index) and zoom level (each a quarter of the last).
    pub channel_cursor: usize,
    pub channel_zoom: u32,
    /// The formats panel's first row shown.
    pub formats_scroll: usize,
    pub generation: u64,
    pub progress: ProgressView,
    /// Last message for the status line (export path, errors).
    pub message: Option<String>,
    /// Size of the terminal, for mouse hit-testing with the same layout `draw` uses.
    pub size: Rect,
    pub running: bool,
    /// Set in the compare view (`calibscope compare`).
    pub compare: Option<CompareState>,
    /// The names of `slots` (or of the compare view's pairs) as the lists show them.
    pub names: NameTable,
    /// The layer list grouped by module path (`t`).
    pub tree: bool,
    /// Keys of the folded groups.
    pub folded: HashSet<String>,
    /// The tree's cursor is on this group's row (else on the selected layer's).
    pub group_cursor: Option<String>,
}

impl App {
    pub fn new(specs: Vec<LayerSpec>, errors: Vec<LoadError>, opts: Options) -> App {
        let mut slots: Vec<Slot> = specs
            .into_iter()
            .map(|s| Slot {
                name: s.name.clone(),
                spec: Some(s),
                result: None,
                stale: false,
                profile: None,
            })
            .collect();
        slots.extend(errors.iter().map(|e| Slot {
            spec: None,
            name: e.path.clone(),
            result: Some(LayerAnalysis::from_error(e)),
            stale: false,
            profile: None,
        }));
        let selected = if slots.is_empty() { None } else { Some(0) };
        let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
        let names = NameTable::new(&names);
        App {
            slots,
            opts,
            view: View::Main,
            focus: Focus::Layers,
            sort: Sort::Name,
            filter: String::new(),
            input: None,
            help: false,
            help_scroll: 0,
            selected,
            method: None,
            number_format: None,
            log_scale: false,
            zoom: false,
            details_scroll: 0,
            overview_scroll: 0,
            channel_cursor: 0,
            formats_scroll: 0,
            channel_zoom: 0,
            generation: 0,
            progress: ProgressView::default(),
            message: None,
            size: Rect::new(0, 0, 80, 24),
            running: true,
            compare: None,
            names,
            tree: false,
            folded: HashSet::new(),
            group_cursor: None,
        }
    }

    /// The UI on a saved analysis: every layer's result (and profile) in place from the start.
    /// `rerun`: the options differ from the saved ones, so [`App::start`] runs the layers
    /// again, from their profiles when they `fit` the options (else from their files).
    pub fn from_saved(
        layers: Vec<(Option<LayerSpec>, LayerAnalysis)>,
        opts: Options,
        rerun: bool,
        fit: bool,
    ) -> App {
        let mut app = App::new(Vec::new(), Vec::new(), opts);
        app.slots = layers
            .into_iter()
            .map(|(spec, mut result)| {
                if !fit {
                    result.profile = None;
                }
                Slot {
                    name: result.name.clone(),
                    stale: rerun && spec.is_some(),
                    spec,
                    profile: result.profile.clone(),
                    result: Some(result),
                }
            })
            .collect();
        app.selected = (!app.slots.is_empty()).then_some(0);
        app
    }

    /// The first job: every layer with a spec, from scratch (every pair, in the compare view);
    /// on a saved analysis, nothing unless its options changed.
    pub fn start(&mut self) -> Option<Command> {
        if let Some(c) = &self.compare {
            self.generation += 1;
            let n = c.pairing.pairs.len();
            self.progress = ProgressView {
                layers_total: n,
                running: n > 0,
                ..ProgressView::default()
            };
            return (n > 0).then(|| Command::Compare {
                generation: self.generation,
                pairing: c.pairing.clone(),
                opts: c.opts.clone(),
            });
        }
        if self.slots.iter().all(|s| s.result.is_some()) {
            let rerun = self.slots.iter().any(|s| s.stale);
            return if rerun { self.analyze(true) } else { None };
        }
        self.analyze(false)
    }

    /// Starts a new generation. `reuse`: keep profiles (no re-reading for histograms).
    fn analyze(&mut self, reuse: bool) -> Option<Command> {
        self.generation += 1;
        let mut work = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            let Some(spec) = &s.spec else { continue };
            let profile = if reuse {
                s.profile
                    .clone()
                    .or_else(|| s.result.as_ref().and_then(|r| r.profile.clone()))
            } else {
                None
            };
            s.stale = s.result.is_some();
            work.push(Work {
                slot: i,
                spec: spec.clone(),
                profile,
            });
        }
        self.progress = ProgressView {
            layers_total: work.len(),
            running: !work.is_empty(),
            ..ProgressView::default()
        };
        if work.is_empty() {
            return None;
        }
        Some(Command::Analyze {
            generation: self.generation,
            opts: self.opts.clone(),
            work,
        })
    }

    /// A layer finished. Results of an older generation are dropped.
    pub fn on_layer(&mut self, generation: u64, slot: usize, layer: LayerAnalysis) {
        if generation != self.generation {
            return;
        }
        if let Some(s) = self.slots.get_mut(slot) {
            if layer.profile.is_some() {
                s.profile = layer.profile.clone();
            }
            s.result = Some(layer);
            s.stale = false;
        }
    }

    /// A layer's histograms are ready (its methods are still being measured).
    pub fn on_profile(&mut self, generation: u64, slot: usize, profile: Arc<KeptProfile>) {
        if generation != self.generation {
            return;
        }
        if let Some(s) = self.slots.get_mut(slot) {
            s.profile = Some(profile);
        }
    }

    /// Applies a message of the analysis job (a layer, a profile, the end); other events are
    /// not the job's and are left alone.
    pub fn on_job_event(&mut self, ev: Event) {
        match ev {
            Event::Layer {
                generation,
                slot,
                layer,
            } => self.on_layer(generation, slot, *layer),
            Event::Profiled {
                generation,
                slot,
                profile,
            } => self.on_profile(generation, slot, profile),
            Event::Compared {
                generation,
                index,
                pair,
            } => self.on_pair(generation, index, *pair),
            Event::JobDone { generation } => self.on_job_done(generation),
            _ => {}
        }
    }

    pub fn on_job_done(&mut self, generation: u64) {
        if generation == self.generation {
            self.progress.running = false;
            self.progress.layers_done = self.progress.layers_total;
        }
    }

    pub fn set_progress(&mut self, done: u64, total: u64, layers_done: usize) {
        self.progress.done = done;
        self.progress.total = total;
        self.progress.layers_done = layers_done.min(self.progress.layers_total);
    }

    pub fn selected_slot(&self) -> Option<&Slot> {
        self.selected.and_then(|i| self.slots.get(i))
    }

    pub fn selected_layer(&self) -> Option<&LayerAnalysis> {
        self.selected_slot().and_then(|s| s.result.as_ref())
    }

    /// The analysis as it stands (finished layers only), for exports.
    pub fn analysis(&self) -> Analysis {
        Analysis {
            version: JSON_VERSION,
            settings: Settings::of(&self.opts),
            layers: self.slots.iter().filter_map(|s| s.result.clone()).collect(),
        }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Command> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let binding = keys::binding(&key);
        // Ctrl keys act everywhere: Ctrl-C arrives as a key in raw mode and must always quit.
        if let Some(b) = binding
            && b.ctrl
        {
            return self.act(b.action);
        }
        if self.input.is_some() {
            return self.handle_input(key);
        }
        let action = binding.map(|b| b.action);
        if self.help {
            // The moving keys scroll a help taller than the screen; any other key closes it,
            // and quit still quits.
            return match action {
                Some(Action::Move(delta)) => {
                    self.scroll_help(delta);
                    None
                }
                Some(Action::Quit) => self.act(Action::Quit),
                _ => {
                    self.help = false;
                    None
                }
            };
        }
        self.message = None;
        self.act(action?)
    }

    fn act(&mut self, action: Action) -> Option<Command> {
        if self.view == View::Compare {
            return self.act_compare(action);
        }
        match action {
            Action::Quit => {
                self.running = false;
                return Some(Command::Quit);
            }
            Action::Back => {
                if self.view != View::Main {
                    self.view = View::Main;
                } else if !self.filter.is_empty() {
                    self.filter.clear();
                } else {
                    return self.act(Action::Quit);
                }
            }
            Action::Help => self.open_help(),
            Action::Move(delta) => self.step(delta),
            Action::FocusNext => self.focus = self.focus.next(),
            Action::FocusPrev => self.focus = self.focus.prev(),
            Action::Open => self.enter(),
            Action::LogScale => self.log_scale = !self.log_scale,
            Action::Zoom if self.view == View::Channels => self.zoom_channels(),
            Action::Zoom => self.zoom = !self.zoom,
            Action::Overview => {
                self.view = match self.view {
                    View::Main | View::Channels | View::Formats | View::Convergence => {
                        View::Overview
                    }
                    View::Overview | View::Compare => View::Main,
                };
            }
            Action::Channels => match self.view {
                View::Channels => self.view = View::Main,
                View::Overview => {
                    self.enter();
                    self.open_channels();
                }
                View::Main | View::Formats | View::Convergence => self.open_channels(),
                View::Compare => {}
            },
            Action::Formats => match self.view {
                View::Formats => self.view = View::Main,
                View::Overview => {
                    self.enter();
                    self.open_formats();
                }
                View::Main | View::Channels | View::Convergence => self.open_formats(),
                View::Compare => {}
            },
            Action::Convergence => match self.view {
                View::Convergence => self.view = View::Main,
                View::Overview => {
                    self.enter();
                    self.view = View::Convergence;
                }
                View::Main | View::Channels | View::Formats => self.view = View::Convergence,
                View::Compare => {}
            },
            Action::Pan(delta) => {
                if self.view == View::Channels {
                    self.pan(delta);
                } else if self.view == View::Main && self.tree && self.focus == Focus::Layers {
                    self.fold_step(delta);
                }
            }
            Action::Tree => {
                self.tree = !self.tree;
                self.group_cursor = None;
                if self.view != View::Main {
                    self.view = View::Main;
                }
                self.focus = Focus::Layers;
            }
            Action::Sort => self.sort = self.sort.next(),
            Action::Filter => self.input = Some(Input::Filter(self.filter.clone())),
            Action::Percentiles => {
                let text = self
                    .opts
                    .percentiles
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                self.input = Some(Input::Percentiles(text));
            }
            Action::Export => self.input = Some(Input::Export),
            Action::Scheme => {
                self.opts.scheme = match self.opts.scheme {
                    Scheme::Symmetric => Scheme::Affine,
                    Scheme::Affine => Scheme::Symmetric,
                };
                return self.analyze(true);
            }
            Action::Bits(delta) => return self.set_bits(i32::from(delta)),
            Action::NumberFormat => self.switch_number_format(),
            Action::FirstDegraded => {
                self.message = Some("d works in the compare view (calibscope compare)".into());
            }
        }
        None
    }

    pub(super) fn open_help(&mut self) {
        self.help = true;
        self.help_scroll = 0;
    }

    /// Scrolls the help overlay, its last line at most to the bottom of its box.
    pub(super) fn scroll_help(&mut self, delta: i64) {
        let lines = keys::help_lines();
        let (_, shown) = layout::help_area(self.size, lines);
        let last = lines.saturating_sub(shown);
        self.help_scroll = offset(self.help_scroll.min(last), delta, last + 1);
    }

    /// Opens the formats panel at its first row.
    fn open_formats(&mut self) {
        self.view = View::Formats;
        self.formats_scroll = 0;
    }

    fn set_bits(&mut self, delta: i32) -> Option<Command> {
        let bits =
            (i32::from(self.opts.bits) + delta).clamp(MIN_BITS.into(), MAX_BITS.into()) as u8;
        if bits == self.opts.bits {
            self.message = Some(format!(
                "bit width stays within {MIN_BITS}..={MAX_BITS} ({bits})"
            ));
            return None;
        }
        self.opts.bits = bits;
        self.analyze(true)
    }

    fn handle_input(&mut self, key: KeyEvent) -> Option<Command> {
        let input = self.input.take()?;
        match input {
            Input::Export => return keys::export_format(key.code).map(Command::Export),
            Input::Filter(mut s) => match key.code {
                KeyCode::Enter => {
                    self.filter = s;
                    self.keep_selection_visible();
                }
                KeyCode::Esc => {}
                KeyCode::Backspace => {
                    s.pop();
                    self.input = Some(Input::Filter(s));
                    self.keep_selection_visible();
                }
                KeyCode::Char(c) => {
                    s.push(c);
                    self.input = Some(Input::Filter(s));
                    self.keep_selection_visible();
                }
                _ => self.input = Some(Input::Filter(s)),
            },
            Input::Percentiles(mut s) => match key.code {
                KeyCode::Enter => match parse_percentiles(&s) {
                    Ok(p) => {
                        if p != self.opts.percentiles {
                            self.opts.percentiles = p;
                            self.method = None;
                            return self.analyze(true);
                        }
                    }
                    Err(e) => {
                        self.message = Some(e.to_string());
                        self.input = Some(Input::Percentiles(s));
                    }
                },
                KeyCode::Esc => {}
                KeyCode::Backspace => {
                    s.pop();
                    self.input = Some(Input::Percentiles(s));
                }
                KeyCode::Char(c) if c.is_ascii_digit() || matches!(c, '.' | ',' | ' ') => {
                    s.push(c);
                    self.input = Some(Input::Percentiles(s));
                }
                _ => self.input = Some(Input::Percentiles(s)),
            },
        }
        None
    }

    fn enter(&mut self) {
        match self.view {
            View::Overview => {
                let rows = self.by_sensitivity();
                if let Some(&slot) = rows.get(self.overview_scroll) {
                    self.select(slot);
                    // The overview is unfiltered: clear a filter that would hide the layer.
                    self.filter.clear();
                }
                self.view = View::Main;
                self.focus = Focus::Methods;
            }
            View::Main => {
                if self.focus != Focus::Layers {
                    return;
                }
                // On a group: fold or unfold it; on a layer: its methods.
                let rows = self.list_rows();
                match rows.get(self.list_cursor(&rows)) {
                    Some(TreeRow::Group { key, open, .. }) => {
                        let (key, open) = (key.clone(), *open);
                        self.set_fold(&key, open);
                    }
                    _ => self.focus = Focus::Methods,
                }
            }
            View::Channels | View::Formats | View::Convergence => {}
            View::Compare => {}
        }
    }

    fn select(&mut self, slot: usize) {
        if self.selected != Some(slot) {
            self.selected = Some(slot);
            self.method = None;
            self.details_scroll = 0;
        }
    }

    /// If the selection was filtered out, select the first visible layer.
    fn keep_selection_visible(&mut self) {
        let vis = self.visible();
        if let Some(sel) = self.selected
            && vis.contains(&sel)
        {
            return;
        }
        if let Some(&first) = vis.first() {
            self.select(first);
        }
    }

    /// Moves the focused panel's cursor by `delta` rows.
    fn step(&mut self, delta: i64) {
        if self.view == View::Channels {
            self.pan(delta);
            return;
        }
        if self.view == View::Formats {
            let n = self.selected_layer().map_or(0, |l| l.formats.len());
            self.formats_scroll = offset(self.formats_scroll, delta, n);
            return;
        }
        if self.view == View::Convergence {
            self.step_method(delta);
            return;
        }
        if self.view == View::Overview {
            let n = self.slots.len();
            self.overview_scroll = offset(self.overview_scroll, delta, n);
            return;
        }
        match self.focus {
            Focus::Layers => {
                let rows = self.list_rows();
                if rows.is_empty() {
                    return;
                }
                let pos = offset(self.list_cursor(&rows), delta, rows.len());
                self.move_to_row(&rows[pos]);
            }
            Focus::Methods => self.step_method(delta),
            Focus::Details => {
                // The rows as drawn at this size: the last offset shows the last row.
                let text = layout::main_areas(self.size, self.method_count()).details_text;
                let last = self
                    .selected_layer()
                    .map_or(0, |l| details::details(l, text).max_scroll());
                self.details_scroll = offset(self.details_scroll.min(last), delta, last + 1);
            }
        }
    }

    /// Moves the method cursor (the main view's method table, the convergence chart's line).
    fn step_method(&mut self, delta: i64) {
        let n = self.method_count();
        if let Some(cur) = self.method_index() {
            self.method = Some(offset(cur, delta, n));
        }
    }
}

/// Errored layers first (they need attention), then lowest best SQNR, then unfinished ones.
fn sensitivity_order(a: &Slot, b: &Slot) -> std::cmp::Ordering {
    let key = |s: &Slot| -> (u8, f64) {
        if s.errored() {
            (0, 0.0)
        } else {
            match s.sensitivity() {
                Some(v) if !v.is_nan() => (1, v),
                _ => (2, 0.0),
            }
        }
    };
    let (ka, va) = key(a);
    let (kb, vb) = key(b);
    ka.cmp(&kb).then(va.total_cmp(&vb))
}

/// `pos + delta` clamped to `0..n`.
fn offset(pos: usize, delta: i64, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let p = pos as i64 + delta;
    p.clamp(0, n as i64 - 1) as usize
}
