//! Every key of the UI, written once: the action it triggers (`App::handle_key` dispatches on
//! it), its line in the help overlay (README's key table says the same, a test checks it) and
//! its hints in the status line. Prompts (filter, percentiles) edit text with their own keys.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::report::Format;

use super::layout::{Focus, View};

/// What a key does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Move the focused panel's cursor (the overview's, in the overview) by this many rows.
    Move(i64),
    FocusNext,
    FocusPrev,
    /// A layer → its methods; an overview row → that layer.
    Open,
    LogScale,
    Zoom,
    Scheme,
    /// Bit width up or down by this much.
    Bits(i8),
    Percentiles,
    /// Into the overview, or back from it.
    Overview,
    /// Into the selected layer's channel view, or back from it.
    Channels,
    /// Into the selected layer's formats panel, or back from it.
    Formats,
    /// Into the selected layer's convergence chart, or back from it.
    Convergence,
    /// The main view's number format: int, then each per-tensor FP8 format measured.
    NumberFormat,
    /// Move the channel view's cursor by this many columns; in the tree, fold (−) or unfold.
    Pan(i64),
    /// Group the layer list by module path, or back to a flat list.
    Tree,
    Filter,
    Sort,
    Export,
    Help,
    Quit,
    /// Leave the overview, else clear the filter, else quit.
    Back,
    /// The compare view: select the first degraded pair.
    FirstDegraded,
}

/// A move far enough to reach either end of any list.
const TO_END: i64 = 1 << 40;

/// One key and its action. `ctrl`: the key needs Ctrl and acts everywhere, even in a prompt or
/// the help; the others ignore modifiers (terminals report Shift with `G`, `?`, `+`).
#[derive(Clone, Copy, Debug)]
pub struct Binding {
    pub code: KeyCode,
    pub ctrl: bool,
    pub action: Action,
}

/// Where a status-line hint shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    Anywhere,
    /// The analysis screens (main and overview), not the compare view.
    Analysis,
    Main,
    Overview,
    Channels,
    Formats,
    Convergence,
    Compare,
    /// The main view with this panel focused.
    Panel(Focus),
}

impl On {
    fn shows(self, view: View, focus: Focus) -> bool {
        match self {
            On::Anywhere => true,
            On::Analysis => view != View::Compare,
            On::Main => view == View::Main,
            On::Overview => view == View::Overview,
            On::Channels => view == View::Channels,
            On::Formats => view == View::Formats,
            On::Convergence => view == View::Convergence,
            On::Compare => view == View::Compare,
            On::Panel(f) => view == View::Main && focus == f,
        }
    }
}

/// Order of the hints in the status line: by rank, then in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// Help and quit: first, so they survive the cut on a narrow terminal.
    First,
    /// Moving around: cursor, focus, into and out of views.
    Move,
    Other,
}

/// A hint in the status line: `keys` in bold, then `text`.
#[derive(Clone, Copy, Debug)]
pub struct Hint {
    pub on: On,
    pub keys: &'static str,
    pub text: &'static str,
    pub rank: Rank,
}

/// One line of the help overlay.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The keys as the help and the README list them.
    pub keys: &'static str,
    pub help: &'static str,
    pub bindings: &'static [Binding],
    pub hints: &'static [Hint],
}

const fn key(code: KeyCode, action: Action) -> Binding {
    Binding {
        code,
        ctrl: false,
        action,
    }
}

const fn ch(c: char, action: Action) -> Binding {
    key(KeyCode::Char(c), action)
}

const fn hint(on: On, keys: &'static str, text: &'static str, rank: Rank) -> Hint {
    Hint {
        on,
        keys,
        text,
        rank,
    }
}

/// The keys, in the help overlay's order.
pub const KEYS: &[Entry] = &[
    Entry {
        keys: "↑/↓  j/k",
        help: "move in the focused panel (layers, methods, details)",
        bindings: &[
            key(KeyCode::Down, Action::Move(1)),
            ch('j', Action::Move(1)),
            key(KeyCode::Up, Action::Move(-1)),
            ch('k', Action::Move(-1)),
        ],
        hints: &[
            hint(On::Panel(Focus::Layers), "↑↓", "layer", Rank::Move),
            hint(On::Panel(Focus::Methods), "↑↓", "method", Rank::Move),
            hint(On::Panel(Focus::Details), "↑↓", "scroll", Rank::Move),
            hint(On::Overview, "↑↓", "move", Rank::Move),
            hint(On::Compare, "↑↓", "pair", Rank::Move),
            hint(On::Convergence, "↑↓", "method", Rank::Move),
        ],
    },
    Entry {
        keys: "PgUp/PgDn g/G",
        help: "move by 10 / to the ends",
        bindings: &[
            key(KeyCode::PageDown, Action::Move(10)),
            key(KeyCode::PageUp, Action::Move(-10)),
            key(KeyCode::Home, Action::Move(-TO_END)),
            ch('g', Action::Move(-TO_END)),
            key(KeyCode::End, Action::Move(TO_END)),
            ch('G', Action::Move(TO_END)),
        ],
        hints: &[],
    },
    Entry {
        keys: "Tab / Shift-Tab",
        help: "focus: layers → methods → details",
        bindings: &[
            key(KeyCode::Tab, Action::FocusNext),
            key(KeyCode::BackTab, Action::FocusPrev),
        ],
        hints: &[hint(On::Main, "Tab", "focus", Rank::Move)],
    },
    Entry {
        keys: "Enter",
        help: "layer → its methods; overview row → layer; group → fold",
        bindings: &[key(KeyCode::Enter, Action::Open)],
        hints: &[hint(On::Overview, "Enter", "open layer", Rank::Move)],
    },
    Entry {
        keys: "l",
        help: "histogram count scale: linear / log",
        bindings: &[ch('l', Action::LogScale)],
        hints: &[
            hint(On::Main, "l", "log", Rank::Other),
            hint(On::Compare, "l", "log", Rank::Other),
        ],
    },
    Entry {
        keys: "z",
        help: "zoom: histogram to clip ranges / channels ×4",
        bindings: &[ch('z', Action::Zoom)],
        hints: &[
            hint(On::Main, "z", "zoom", Rank::Other),
            hint(On::Channels, "z", "zoom", Rank::Other),
        ],
    },
    Entry {
        keys: "s",
        help: "scheme: symmetric / affine (re-runs, keeps histograms)",
        bindings: &[ch('s', Action::Scheme)],
        hints: &[hint(On::Analysis, "s", "scheme", Rank::Other)],
    },
    Entry {
        keys: "+ / -",
        help: "bit width 2..=16 (re-runs)",
        bindings: &[
            ch('+', Action::Bits(1)),
            ch('=', Action::Bits(1)),
            ch('-', Action::Bits(-1)),
            ch('_', Action::Bits(-1)),
        ],
        hints: &[hint(On::Analysis, "+/-", "bits", Rank::Other)],
    },
    Entry {
        keys: "p",
        help: "edit the percentiles, comma-separated (re-runs)",
        bindings: &[ch('p', Action::Percentiles)],
        hints: &[hint(On::Main, "p", "pct", Rank::Other)],
    },
    Entry {
        keys: "o",
        help: "overview: all layers × methods, most sensitive first",
        bindings: &[ch('o', Action::Overview)],
        hints: &[
            hint(On::Main, "o", "overview", Rank::Other),
            hint(On::Overview, "o/Esc", "back", Rank::Move),
        ],
    },
    Entry {
        keys: "c",
        help: "channels: per-channel absmax, per-token/block table",
        bindings: &[ch('c', Action::Channels)],
        hints: &[
            hint(On::Main, "c", "channels", Rank::Other),
            hint(On::Channels, "c/Esc", "back", Rank::Move),
        ],
    },
    Entry {
        keys: "f",
        help: "formats: the layer's FP8 / MX / NVFP4 rows and SQNR",
        bindings: &[ch('f', Action::Formats)],
        hints: &[
            hint(On::Main, "f", "formats", Rank::Other),
            hint(On::Formats, "f/Esc", "back", Rank::Move),
        ],
    },
    Entry {
        keys: "v",
        help: "convergence: range vs batches per method (--validate)",
        bindings: &[ch('v', Action::Convergence)],
        hints: &[
            hint(On::Main, "v", "convergence", Rank::Other),
            hint(On::Convergence, "v/Esc", "back", Rank::Move),
        ],
    },
    Entry {
        keys: "x",
        help: "number format of the main view: int → fp8_e4m3 → fp8_e5m2",
        bindings: &[ch('x', Action::NumberFormat)],
        hints: &[hint(On::Main, "x", "fp8", Rank::Other)],
    },
    Entry {
        keys: "←/→",
        help: "channels: cursor one column; tree: fold / unfold",
        bindings: &[
            key(KeyCode::Left, Action::Pan(-1)),
            key(KeyCode::Right, Action::Pan(1)),
        ],
        hints: &[hint(On::Channels, "←→", "channel", Rank::Move)],
    },
    Entry {
        keys: "t",
        help: "tree: group the layers by module path (a.b.c, a/b/c)",
        bindings: &[ch('t', Action::Tree)],
        hints: &[],
    },
    Entry {
        keys: "/",
        help: "filter layers by name (Esc clears)",
        bindings: &[ch('/', Action::Filter)],
        hints: &[hint(On::Main, "/", "filter", Rank::Other)],
    },
    Entry {
        keys: "S",
        help: "sort layers: name / sensitivity / warnings",
        bindings: &[ch('S', Action::Sort)],
        hints: &[hint(On::Main, "S", "sort", Rank::Other)],
    },
    Entry {
        keys: "d",
        help: "compare view: jump to the first degraded pair",
        bindings: &[ch('d', Action::FirstDegraded)],
        hints: &[hint(On::Compare, "d", "first degraded", Rank::Move)],
    },
    Entry {
        keys: "e",
        help: "export the report (text/json/csv/markdown) to ./",
        bindings: &[ch('e', Action::Export)],
        hints: &[hint(On::Anywhere, "e", "export", Rank::Other)],
    },
    Entry {
        keys: "?",
        help: "this help",
        bindings: &[ch('?', Action::Help)],
        hints: &[hint(On::Anywhere, "?", "help", Rank::First)],
    },
    Entry {
        keys: "q  Esc  Ctrl-C",
        help: "quit (Esc first leaves a view / clears the filter)",
        bindings: &[
            ch('q', Action::Quit),
            key(KeyCode::Esc, Action::Back),
            Binding {
                code: KeyCode::Char('c'),
                ctrl: true,
                action: Action::Quit,
            },
        ],
        hints: &[hint(On::Anywhere, "q", "quit", Rank::First)],
    },
    Entry {
        keys: "mouse",
        help: "click selects, wheel scrolls",
        bindings: &[],
        hints: &[],
    },
];

/// Lines of the help overlay below the keys: a blank line, two of markers, one of badges.
pub const HELP_LEGEND_LINES: usize = 4;

/// Lines of the help overlay: one per key, then the legend.
pub fn help_lines() -> usize {
    KEYS.len() + HELP_LEGEND_LINES
}

/// The binding `key` triggers, if any (a Ctrl binding before a plain one on the same key).
pub fn binding(key: &KeyEvent) -> Option<&'static Binding> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let all = || KEYS.iter().flat_map(|e| e.bindings.iter());
    all()
        .find(|b| b.ctrl && ctrl && b.code == key.code)
        .or_else(|| all().find(|b| !b.ctrl && b.code == key.code))
}

/// The status line's hints for a screen, in the order shown.
pub fn hints(view: View, focus: Focus) -> Vec<&'static Hint> {
    let mut v: Vec<&Hint> = KEYS
        .iter()
        .flat_map(|e| e.hints.iter())
        .filter(|h| h.on.shows(view, focus))
        .collect();
    // Stable: table order within a rank.
    v.sort_by_key(|h| h.rank);
    v
}

/// The export prompt's formats; each is chosen by the first letter of its name.
pub const EXPORT_FORMATS: &[(&str, Format)] = &[
    ("text", Format::Text),
    ("json", Format::Json),
    ("csv", Format::Csv),
    ("markdown", Format::Markdown),
];

/// The format whose name starts with the typed letter.
pub fn export_format(code: KeyCode) -> Option<Format> {
    let KeyCode::Char(c) = code else { return None };
    EXPORT_FORMATS
        .iter()
        .find(|(name, _)| name.starts_with(c))
        .map(|&(_, f)| f)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));

    /// The cells of a Markdown table row (`\|` is a literal bar inside a cell).
    fn cells(line: &str) -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        inner
            .replace("\\|", "\u{0}")
            .split('|')
            .map(|c| c.replace('\u{0}', "|").trim().to_string())
            .collect()
    }

    fn words(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// README's key column as the help writes it: no backticks, commas as spaces.
    fn readme_keys(cell: &str) -> String {
        words(&cell.replace('`', "").replace(',', " "))
    }

    #[test]
    fn readme_key_table_lists_every_key_with_the_help_text() {
        let mut lines = README.lines().skip_while(|l| cells(l) != ["key", "action"]);
        assert!(
            lines.next().is_some(),
            "README.md has no `| key | action |` table"
        );
        assert!(lines.next().is_some_and(|l| l.starts_with("|---")));
        let rows: Vec<(String, String)> = lines
            .take_while(|l| l.starts_with('|'))
            .map(|l| {
                let c = cells(l);
                assert_eq!(c.len(), 2, "README key table row {l:?}");
                (readme_keys(&c[0]), words(&c[1]))
            })
            .collect();
        let table: Vec<(String, String)> = KEYS
            .iter()
            .map(|e| (words(e.keys), words(e.help)))
            .collect();
        assert_eq!(rows, table);
    }

    #[test]
    fn no_key_is_bound_twice() {
        let all: Vec<&Binding> = KEYS.iter().flat_map(|e| e.bindings.iter()).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(
                    a.code != b.code || a.ctrl != b.ctrl,
                    "{:?} (ctrl {}) bound to {:?} and {:?}",
                    a.code,
                    a.ctrl,
                    a.action,
                    b.action
                );
            }
        }
    }

    #[test]
    fn keys_find_their_actions() {
        let ev = |code, mods| KeyEvent::new(code, mods);
        let act = |code, mods| binding(&ev(code, mods)).map(|b| b.action);
        assert_eq!(
            act(KeyCode::Char('j'), KeyModifiers::NONE),
            Some(Action::Move(1))
        );
        // Shift as terminals report it with capitals and symbols.
        assert_eq!(
            act(KeyCode::Char('G'), KeyModifiers::SHIFT),
            Some(Action::Move(TO_END))
        );
        assert_eq!(
            act(KeyCode::Char('?'), KeyModifiers::SHIFT),
            Some(Action::Help)
        );
        assert_eq!(
            act(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Some(Action::Quit)
        );
        assert!(
            binding(&ev(KeyCode::Char('c'), KeyModifiers::CONTROL))
                .unwrap()
                .ctrl
        );
        assert_eq!(
            act(KeyCode::Char('c'), KeyModifiers::NONE),
            Some(Action::Channels)
        );
        assert_eq!(act(KeyCode::Esc, KeyModifiers::NONE), Some(Action::Back));
        assert_eq!(act(KeyCode::F(1), KeyModifiers::NONE), None);
    }

    #[test]
    fn hints_follow_the_view_and_focus() {
        let shown = |view, focus| -> Vec<String> {
            hints(view, focus)
                .iter()
                .map(|h| format!("{} {}", h.keys, h.text))
                .collect()
        };
        assert_eq!(
            shown(View::Main, Focus::Details),
            [
                "? help",
                "q quit",
                "↑↓ scroll",
                "Tab focus",
                "l log",
                "z zoom",
                "s scheme",
                "+/- bits",
                "p pct",
                "o overview",
                "c channels",
                "f formats",
                "v convergence",
                "x fp8",
                "/ filter",
                "S sort",
                "e export"
            ]
        );
        assert_eq!(
            shown(View::Overview, Focus::Details),
            [
                "? help",
                "q quit",
                "↑↓ move",
                "Enter open layer",
                "o/Esc back",
                "s scheme",
                "+/- bits",
                "e export"
            ]
        );
    }

    #[test]
    fn the_compare_view_hints_only_its_keys() {
        let shown: Vec<String> = hints(View::Compare, Focus::Layers)
            .iter()
            .map(|h| format!("{} {}", h.keys, h.text))
            .collect();
        assert_eq!(
            shown,
            [
                "? help",
                "q quit",
                "↑↓ pair",
                "d first degraded",
                "l log",
                "e export"
            ]
        );
    }

    #[test]
    fn export_formats_by_first_letter() {
        assert_eq!(export_format(KeyCode::Char('t')), Some(Format::Text));
        assert_eq!(export_format(KeyCode::Char('j')), Some(Format::Json));
        assert_eq!(export_format(KeyCode::Char('c')), Some(Format::Csv));
        assert_eq!(export_format(KeyCode::Char('m')), Some(Format::Markdown));
        assert_eq!(export_format(KeyCode::Char('x')), None);
        assert_eq!(export_format(KeyCode::Esc), None);
    }
}
