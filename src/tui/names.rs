//! Layer names as people can read them in narrow columns. Dumps of a real model are named
//! `model.layers.17.mlp.down_proj.input`: what tells layers apart is the layer number and a
//! word or two, so a plain cut in the middle drops exactly that. Here:
//!
//! - a prefix every name shares (cut at a separator) is taken off once ([`NameTable::prefix`]),
//!   for the panel title;
//! - a name still too long loses its least informative words first: those found in the most
//!   names (`proj`, `input` in every one of 96), each elided run marked `…`; digit runs (layer
//!   and block numbers) are never elided;
//! - the layer list can group names as a tree by their dotted/slashed module path
//!   ([`tree_rows`]).
//!
//! Widths are counted in chars (names are expected to be narrow-character text).

use std::collections::{HashMap, HashSet};

/// The names of one list (the layers, or the compare view's pairs) and what the width-fitting
/// needs to know about all of them.
#[derive(Clone, Debug, Default)]
pub struct NameTable {
    /// Shared by every name (empty unless there are two names or more); ends at a separator.
    pub prefix: String,
    /// Each name without the prefix.
    rests: Vec<String>,
    /// In how many names each word occurs.
    freq: HashMap<String, usize>,
    /// Words always followed by the same number (`fp16`, `bf16`): the number is part of the
    /// word, not a layer number, and goes with it.
    fused: HashSet<String>,
}

/// The fewest chars of a cut word's head worth showing.
const MIN_HEAD: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Digits,
    Word,
    Sep,
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    text: &'a str,
    kind: Kind,
}

fn kind_of(c: char) -> Kind {
    if c.is_ascii_digit() {
        Kind::Digits
    } else if c.is_alphanumeric() {
        Kind::Word
    } else {
        Kind::Sep
    }
}

/// Digit runs, word runs and separator runs, in order.
fn tokens(s: &str) -> Vec<Token<'_>> {
    let mut out: Vec<Token> = Vec::new();
    let mut start = 0;
    let mut cur: Option<Kind> = None;
    for (i, c) in s.char_indices() {
        let k = kind_of(c);
        match cur {
            Some(prev) if prev == k => {}
            Some(prev) => {
                out.push(Token {
                    text: &s[start..i],
                    kind: prev,
                });
                start = i;
                cur = Some(k);
            }
            None => cur = Some(k),
        }
    }
    if let Some(k) = cur {
        out.push(Token {
            text: &s[start..],
            kind: k,
        });
    }
    out
}

/// `toks` with each word in `fused` joined to the digit run right after it.
fn fuse<'a>(s: &'a str, toks: Vec<Token<'a>>, fused: &HashSet<String>) -> Vec<Token<'a>> {
    let mut out: Vec<Token<'a>> = Vec::with_capacity(toks.len());
    let mut at = 0;
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        let len = t.text.len();
        if t.kind == Kind::Word
            && fused.contains(t.text)
            && let Some(d) = toks.get(i + 1).filter(|d| d.kind == Kind::Digits)
        {
            out.push(Token {
                text: &s[at..at + len + d.text.len()],
                kind: Kind::Word,
            });
            at += len + d.text.len();
            i += 2;
            continue;
        }
        out.push(t);
        at += len;
        i += 1;
    }
    out
}

fn is_path_sep(c: char) -> bool {
    !c.is_alphanumeric()
}

/// The longest prefix of every name that ends right after a separator and leaves every name
/// something after it.
fn common_prefix(names: &[&str]) -> String {
    let Some((first, rest)) = names.split_first() else {
        return String::new();
    };
    if rest.is_empty() {
        return String::new();
    }
    let mut len = first.len();
    for n in rest {
        len = first
            .char_indices()
            .zip(n.chars())
            .find(|((_, a), b)| a != b)
            .map_or(len.min(n.len()), |((i, _), _)| i.min(len));
    }
    let shared = &first[..len];
    // Back off to the last separator, so no word or number is split.
    let cut = shared
        .char_indices()
        .filter(|&(_, c)| is_path_sep(c))
        .map(|(i, c)| i + c.len_utf8())
        .next_back()
        .unwrap_or(0);
    // A name that is all prefix would show as nothing.
    if names.iter().any(|n| n.len() <= cut) {
        return String::new();
    }
    first[..cut].to_string()
}

impl NameTable {
    pub fn new<S: AsRef<str>>(names: &[S]) -> NameTable {
        let names: Vec<&str> = names.iter().map(|s| s.as_ref()).collect();
        let prefix = common_prefix(&names);
        let rests: Vec<String> = names
            .iter()
            .map(|n| n[prefix.len()..].to_string())
            .collect();
        // The numbers each word is directly followed by.
        let mut numbers: HashMap<&str, HashSet<&str>> = HashMap::new();
        for r in &rests {
            for w in tokens(r).windows(2) {
                if w[0].kind == Kind::Word && w[1].kind == Kind::Digits {
                    numbers.entry(w[0].text).or_default().insert(w[1].text);
                }
            }
        }
        let fused: HashSet<String> = numbers
            .iter()
            .filter(|(_, n)| n.len() == 1)
            .map(|(w, _)| w.to_string())
            .collect();
        let mut freq: HashMap<String, usize> = HashMap::new();
        for r in &rests {
            let mut seen: HashSet<&str> = HashSet::new();
            for t in fuse(r, tokens(r), &fused) {
                if t.kind == Kind::Word && seen.insert(t.text) {
                    *freq.entry(t.text.to_string()).or_default() += 1;
                }
            }
        }
        NameTable {
            prefix,
            rests,
            freq,
            fused,
        }
    }

    /// Name `i` without the shared prefix ("" past the end).
    pub fn rest(&self, i: usize) -> &str {
        self.rests.get(i).map_or("", String::as_str)
    }

    /// Name `i` without the shared prefix, fitted to `w` chars.
    pub fn short(&self, i: usize, w: usize) -> String {
        self.fit(self.rest(i), w)
    }

    /// Name `i` with its prefix, fitted to `w` chars: whole if it fits, else the middle of the
    /// prefix goes first, then what [`NameTable::fit`] takes from the rest.
    pub fn full(&self, i: usize, w: usize) -> String {
        let rest = self.rest(i);
        let (p, r) = (self.prefix.chars().count(), rest.chars().count());
        if p + r <= w {
            return format!("{}{rest}", self.prefix);
        }
        // Two chars of prefix at least (`…` and one more), or none.
        if w >= r + 2 && p > 0 {
            return format!("{}{rest}", middle_cut(&self.prefix, w - r));
        }
        if p > 0 && w >= 1 {
            return format!("…{}", self.fit(rest, w - 1));
        }
        self.fit(rest, w)
    }

    /// `text` (a name or a part of one) in at most `w` chars: whole if it fits; else its words
    /// found in the most names go first (earlier first among equals: a name's end tends to say
    /// what it is; among words in every name, later first), each run of elided text becoming one `…`, the last word cut keeping its head
    /// if there is room; numbers stay (unless fused to a word). Only if the numbers and
    /// separators alone are too long is it cut in the middle.
    pub fn fit(&self, text: &str, w: usize) -> String {
        let toks = fuse(text, tokens(text), &self.fused);
        let total: usize = toks.iter().map(|t| t.text.chars().count()).sum();
        if total <= w {
            return text.to_string();
        }
        let mut keep: Vec<usize> = toks.iter().map(|t| t.text.chars().count()).collect();
        let mut order: Vec<usize> = (0..toks.len())
            .filter(|&i| toks[i].kind == Kind::Word)
            .collect();
        let n = self.rests.len().max(1);
        // Fewest names holding it = most informative; sorted least informative first.
        let count = |i: usize| self.freq.get(toks[i].text).copied().unwrap_or(1).min(n);
        // Among words every name has, the later first: they tell nothing wherever they are,
        // and cutting from the end keeps the rest in one piece.
        order.sort_by(|&a, &b| {
            let pos = if count(a) == n { b.cmp(&a) } else { a.cmp(&b) };
            count(b).cmp(&count(a)).then(pos)
        });
        let full = keep.clone();
        for (done, &i) in order.iter().enumerate() {
            keep[i] = 0;
            if rendered_len(&toks, &keep) <= w {
                // Room left goes back to the heads of the cut words, most informative first;
                // a word every name has tells nothing even in part.
                // A head shorter than 2 chars is more noise than help.
                for &j in order[..=done].iter().rev().filter(|&&j| count(j) < n) {
                    for k in (MIN_HEAD..full[j]).rev() {
                        keep[j] = k;
                        if rendered_len(&toks, &keep) <= w {
                            break;
                        }
                        keep[j] = 0;
                    }
                }
                return render(&toks, &keep);
            }
        }
        middle_cut(&render(&toks, &keep), w)
    }
}

/// Which chars of the text stay: a word keeps its first `keep` chars; digits always stay; a
/// separator stays when the token before it is whole (or it starts the text) and the token after
/// it keeps its first char (or it ends the text).
fn mask(toks: &[Token], keep: &[usize]) -> Vec<bool> {
    let whole = |i: usize| keep[i] == toks[i].text.chars().count();
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t.kind {
            Kind::Digits => out.extend(t.text.chars().map(|_| true)),
            Kind::Word => out.extend((0..t.text.chars().count()).map(|k| k < keep[i])),
            Kind::Sep => {
                let before = i == 0 || whole(i - 1);
                let after = i + 1 == toks.len() || keep[i + 1] > 0;
                out.extend(t.text.chars().map(|_| before && after));
            }
        }
    }
    out
}

fn rendered_len(toks: &[Token], keep: &[usize]) -> usize {
    let m = mask(toks, keep);
    let kept = m.iter().filter(|&&k| k).count();
    let runs = m
        .iter()
        .enumerate()
        .filter(|&(i, &k)| !k && (i == 0 || m[i - 1]))
        .count();
    kept + runs
}

fn render(toks: &[Token], keep: &[usize]) -> String {
    let m = mask(toks, keep);
    let mut out = String::new();
    let chars = toks.iter().flat_map(|t| t.text.chars());
    for (i, c) in chars.enumerate() {
        if m[i] {
            out.push(c);
        } else if i == 0 || m[i - 1] {
            out.push('…');
        }
    }
    out
}

/// `s` in `w` chars with `…` in the middle (two thirds of the room for the end, which holds
/// the distinguishing part more often than the start).
pub fn middle_cut(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        return s.to_string();
    }
    if w == 0 {
        return String::new();
    }
    let head = (w - 1) / 3;
    let tail = w - 1 - head;
    let mut t: String = s.chars().take(head).collect();
    t.push('…');
    t.extend(s.chars().skip(n - tail));
    t
}

// ---------------------------------------------------------------- tree

/// One row of the layer list grouped by module path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeRow {
    Group {
        /// The path up to and including this group (`17.self_attn`): the fold state's key.
        key: String,
        /// The path parts this row stands for (single-child chains are merged: `self_attn`).
        label: String,
        depth: usize,
        /// Every layer below it (slot indices, in list order).
        members: Vec<usize>,
        open: bool,
    },
    Layer {
        slot: usize,
        /// The rest of the name below its group (`q_proj.input`).
        label: String,
        depth: usize,
    },
}

impl TreeRow {
    pub fn depth(&self) -> usize {
        match self {
            TreeRow::Group { depth, .. } | TreeRow::Layer { depth, .. } => *depth,
        }
    }
    pub fn slot(&self) -> Option<usize> {
        match self {
            TreeRow::Layer { slot, .. } => Some(*slot),
            TreeRow::Group { .. } => None,
        }
    }
    pub fn key(&self) -> Option<&str> {
        match self {
            TreeRow::Group { key, .. } => Some(key),
            TreeRow::Layer { .. } => None,
        }
    }
}

/// The module-path separators of the tree (`_` and `-` join words, they do not nest).
fn is_module_sep(c: char) -> bool {
    c == '.' || c == '/'
}

#[derive(Default)]
struct Node {
    /// (part, node): the part as written, with the separator before it (none for the first).
    children: Vec<(String, Node)>,
    /// The layers ending here (a name that is also a prefix of others: `a` beside `a.b`; a
    /// name given twice).
    slots: Vec<usize>,
}

impl Node {
    fn insert(&mut self, parts: &[&str], slot: usize) {
        match parts.split_first() {
            None => self.slots.push(slot),
            Some((p, rest)) => {
                let i = match self.children.iter().position(|(q, _)| q == p) {
                    Some(i) => i,
                    None => {
                        self.children.push((p.to_string(), Node::default()));
                        self.children.len() - 1
                    }
                };
                self.children[i].1.insert(rest, slot);
            }
        }
    }

    fn members(&self, out: &mut Vec<usize>) {
        out.extend(&self.slots);
        for (_, c) in &self.children {
            c.members(out);
        }
    }
}

/// `name` split before each module separator: `17.mlp/x` → `17`, `.mlp`, `/x`.
fn module_parts(name: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in name.char_indices() {
        if is_module_sep(c) && i > start {
            out.push(&name[start..i]);
            start = i;
        }
    }
    if start < name.len() {
        out.push(&name[start..]);
    }
    out
}

/// The rows of `items` (slot, name without the shared prefix; in list order) grouped by
/// module path: a group per path part shared by two names or more, single-child chains
/// merged into one row, groups in the order of their first layer; groups whose key is in
/// `folded` show no rows below them.
pub fn tree_rows(items: &[(usize, &str)], folded: &HashSet<String>) -> Vec<TreeRow> {
    let mut root = Node::default();
    for &(slot, name) in items {
        root.insert(&module_parts(name), slot);
    }
    // Empty names have no path part.
    let mut out: Vec<TreeRow> = root
        .slots
        .iter()
        .map(|&slot| TreeRow::Layer {
            slot,
            label: String::new(),
            depth: 0,
        })
        .collect();
    for (part, node) in &root.children {
        emit(part, node, "", 0, folded, &mut out);
    }
    out
}

fn emit(
    part: &str,
    node: &Node,
    parent_key: &str,
    depth: usize,
    folded: &HashSet<String>,
    out: &mut Vec<TreeRow>,
) {
    // Merge the chain of single children below this part into one label.
    let mut label = part.to_string();
    let mut node = node;
    while node.slots.is_empty() && node.children.len() == 1 {
        let (p, c) = &node.children[0];
        label.push_str(p);
        node = c;
    }
    let key = format!("{parent_key}{label}");
    let shown = label
        .strip_prefix(|c: char| is_module_sep(c))
        .unwrap_or(&label)
        .to_string();
    if node.children.is_empty() {
        out.extend(node.slots.iter().map(|&slot| TreeRow::Layer {
            slot,
            label: shown.clone(),
            depth,
        }));
        return;
    }
    let mut members = Vec::new();
    node.members(&mut members);
    let open = !folded.contains(&key);
    out.push(TreeRow::Group {
        key: key.clone(),
        label: shown,
        depth,
        members,
        open,
    });
    if !open {
        return;
    }
    // The group's own layers (a name that other names extend) first.
    out.extend(node.slots.iter().map(|&slot| TreeRow::Layer {
        slot,
        label: shown_last(&key),
        depth: depth + 1,
    }));
    // Children are in the order of their first layer (insertion order).
    for (p, c) in &node.children {
        emit(p, c, &key, depth + 1, folded, out);
    }
}

/// The last path part of `key`, for a group's own layer.
fn shown_last(key: &str) -> String {
    let parts = module_parts(key);
    let last = parts.last().copied().unwrap_or(key);
    last.strip_prefix(|c: char| is_module_sep(c))
        .unwrap_or(last)
        .to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // The real-model name sets the UI tests use too.
    use crate::tui::tests::names::{hf_names, minilm_names};

    #[test]
    fn tokens_split_digits_words_and_separators() {
        let t: Vec<&str> = tokens("layer00.q_proj/x1").iter().map(|t| t.text).collect();
        assert_eq!(t, ["layer", "00", ".", "q", "_", "proj", "/", "x", "1"]);
        assert!(tokens("").is_empty());
    }

    #[test]
    fn the_shared_prefix_ends_at_a_separator() {
        let t = NameTable::new(&hf_names());
        assert_eq!(t.prefix, "model.layers.");
        assert_eq!(t.rest(0), "0.self_attn.q_proj.input");
        // `layer0` is shared by layer00..layer05 but would split the number.
        let t = NameTable::new(&["layer00.a", "layer01.a"]);
        assert_eq!(t.prefix, "");
        // No prefix for one name, or when a name would be left empty.
        assert_eq!(NameTable::new(&["a.b.c"]).prefix, "");
        assert_eq!(NameTable::new(&["a/", "a/b"]).prefix, "");
        assert_eq!(NameTable::new(&["x/a", "x/b"]).prefix, "x/");
        assert_eq!(NameTable::new(&["é/α", "é/β"]).prefix, "é/");
        assert_eq!(NameTable::new::<&str>(&[]).prefix, "");
    }

    #[test]
    fn words_in_every_name_go_first_and_numbers_stay() {
        let t = NameTable::new(&hf_names());
        // `input` and `proj` are in all 96 names; `mlp`, `self`, `attn` in 48; q/o/up/down in
        // 24: the short forms keep the layer number and the projection.
        assert_eq!(t.fit("17.mlp.down_proj.input", 13), "17.mlp.down…");
        assert_eq!(t.fit("17.mlp.up_proj.input", 13), "17.mlp.up…");
        assert_eq!(t.fit("17.self_attn.q_proj.input", 13), "17.se…attn.q…");
        assert_eq!(t.fit("17.self_attn.o_proj.input", 16), "17.self_attn.o…");
        assert_eq!(t.fit("17.self_attn.o_proj.input", 9), "17…att…o…");
        // Fits: unchanged.
        assert_eq!(t.fit("17.mlp.up_proj.input", 20), "17.mlp.up_proj.input");
    }

    #[test]
    fn a_full_name_loses_its_prefix_first() {
        let t = NameTable::new(&hf_names());
        let i = 17 * 4 + 3;
        assert_eq!(t.full(i, 40), "model.layers.17.mlp.down_proj.input");
        assert_eq!(t.full(i, 30), "mo…yers.17.mlp.down_proj.input");
        assert_eq!(t.full(i, 20), "…17.mlp.down_proj…");
        assert_eq!(NameTable::new(&["ab"]).full(0, 1), "…");
    }

    #[test]
    fn minilm_names_keep_their_layer_numbers() {
        let t = NameTable::new(&minilm_names());
        assert_eq!(t.prefix, "");
        // `layer` is in 18 of 19 names: it goes first.
        assert_eq!(t.fit("layer03.intermediate", 13), "…03.intermed…");
        assert_eq!(t.fit("layer03.attention_output", 13), "…03.attentio…");
        // The room left gives back the head of `layer`.
        assert_eq!(t.fit("layer03.output", 13), "lay…03.output");
        assert_eq!(t.fit("embeddings", 13), "embeddings");
    }

    #[test]
    fn fitted_names_stay_distinct_and_within_the_width() {
        for names in [hf_names(), minilm_names()] {
            let t = NameTable::new(&names);
            for w in [9, 10, 13, 16, 20, 30] {
                let shown: Vec<String> = (0..names.len()).map(|i| t.short(i, w)).collect();
                for (i, s) in shown.iter().enumerate() {
                    assert!(s.chars().count() <= w, "{s:?} wider than {w}");
                    // The layer number (the name's first digit run) is shown.
                    let num: String = names[i]
                        .chars()
                        .skip_while(|c| !c.is_ascii_digit())
                        .take_while(|c| c.is_ascii_digit())
                        .collect();
                    assert!(s.contains(&num), "{s:?} lost {num} of {}", names[i]);
                }
                let distinct: HashSet<&String> = shown.iter().collect();
                assert_eq!(distinct.len(), names.len(), "width {w}: {shown:?}");
            }
        }
    }

    #[test]
    fn a_number_always_after_the_same_word_is_part_of_it() {
        let t = NameTable::new(&[
            "05_mlp_fp16_overflow",
            "06_tiny_grads_fp16_underflow",
            "10_attn_probs_fp16",
            "09_mlp/fc1_pre",
            "09_mlp/fc2_pre",
        ]);
        // `fp` is always `fp16`: the word goes whole (first: it is in three names), while
        // `fc1`/`fc2` keep their numbers.
        assert_eq!(t.fit("06_tiny_grads_fp16_underflow", 13), "06…underflow");
        assert_eq!(t.fit("09_mlp/fc2_pre", 8), "09…2_pre");
    }

    #[test]
    fn too_narrow_for_the_numbers_cuts_in_the_middle() {
        let t = NameTable::new(&["2024_11_30_123456.x", "b"]);
        let s = t.fit("2024_11_30_123456.x", 8);
        assert_eq!(s.chars().count(), 8);
        // The words go first (`x`), then the middle of what is left.
        assert_eq!(s, "20…3456…");
        assert_eq!(t.fit("abc", 0), "");
        assert_eq!(middle_cut("abcdef", 1), "…");
    }

    #[test]
    fn a_tree_groups_by_module_path_and_merges_chains() {
        let names = [
            "0.attn.q.in",
            "0.attn.o.in",
            "0.mlp.in",
            "1.attn.q.in",
            "emb",
        ];
        let items: Vec<(usize, &str)> = names.iter().copied().enumerate().collect();
        let rows = tree_rows(&items, &HashSet::new());
        let shown: Vec<String> = rows
            .iter()
            .map(|r| match r {
                TreeRow::Group {
                    label,
                    depth,
                    members,
                    ..
                } => format!("{depth} [{label}] {members:?}"),
                TreeRow::Layer { slot, label, depth } => format!("{depth} {label} #{slot}"),
            })
            .collect();
        assert_eq!(
            shown,
            [
                "0 [0] [0, 1, 2]",
                "1 [attn] [0, 1]",
                "2 q.in #0",
                "2 o.in #1",
                "1 mlp.in #2",
                // A group with one child is merged into it: `1.attn.q.in` is one layer row.
                "0 1.attn.q.in #3",
                "0 emb #4",
            ]
        );
        // Folding `0.attn` hides its two layers; folding `0` hides everything below it.
        let folded: HashSet<String> = ["0.attn".to_string()].into();
        let rows = tree_rows(&items, &folded);
        assert_eq!(rows.len(), 5);
        assert!(matches!(&rows[1], TreeRow::Group { open: false, key, .. } if key == "0.attn"));
        let folded: HashSet<String> = ["0".to_string()].into();
        assert_eq!(tree_rows(&items, &folded).len(), 3);
    }

    #[test]
    fn a_name_that_others_extend_is_a_layer_of_its_group() {
        let items = [(0, "a"), (1, "a.b"), (2, "a/c")];
        let rows = tree_rows(&items, &HashSet::new());
        let slots: Vec<Option<usize>> = rows.iter().map(TreeRow::slot).collect();
        assert_eq!(slots, [None, Some(0), Some(1), Some(2)]);
        assert_eq!(rows[0].key(), Some("a"));
        assert!(matches!(&rows[3], TreeRow::Layer { label, .. } if label == "c"));
        // A name given twice is two rows; an empty name is one too.
        let items = [(0, "a.b"), (1, "a.b"), (2, ""), (3, "a.c")];
        let rows = tree_rows(&items, &HashSet::new());
        let slots: Vec<Option<usize>> = rows.iter().map(TreeRow::slot).collect();
        assert_eq!(slots, [Some(2), None, Some(0), Some(1), Some(3)]);
    }

    proptest::proptest! {
        /// Any names, any width: the shown name fits, keeps each digit run when the width
        /// allows all of them, and never panics.
        #[test]
        fn fitted_names_fit(
            names in proptest::collection::vec("[a-c0-9._/é-]{0,24}", 1..8),
            w in 0usize..30,
        ) {
            let t = NameTable::new(&names);
            for (i, n) in names.iter().enumerate() {
                let s = t.short(i, w);
                proptest::prop_assert!(s.chars().count() <= w, "{:?} at {} gave {:?}", n, w, s);
                let f = t.full(i, w);
                proptest::prop_assert!(f.chars().count() <= w, "{:?} at {} gave {:?}", n, w, f);
                proptest::prop_assert!(t.prefix.is_empty() || n.starts_with(&t.prefix));
            }
            let items: Vec<(usize, &str)> = names.iter().enumerate().map(|(i, n)| (i, n.as_str())).collect();
            let rows = tree_rows(&items, &HashSet::new());
            // Every layer has exactly one row when nothing is folded.
            let mut slots: Vec<usize> = rows.iter().filter_map(TreeRow::slot).collect();
            slots.sort_unstable();
            let want: Vec<usize> = (0..names.len()).collect();
            proptest::prop_assert_eq!(slots, want);
        }
    }
}
