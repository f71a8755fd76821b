//! Real models' layer names in the layer list and the overview: 96 Hugging Face style names
//! and the 19 names of a MiniLM-like model, at 80×24 and 160×48. Every row shown must be told
//! apart from the others and show its layer number.

use super::*;
use crate::tui::names::TreeRow;

/// `model.layers.{0..23}.{self_attn.q_proj, self_attn.o_proj, mlp.up_proj, mlp.down_proj}.input`.
pub(in crate::tui) fn hf_names() -> Vec<String> {
    let mut v = Vec::new();
    for l in 0..24 {
        for m in [
            "self_attn.q_proj",
            "self_attn.o_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            v.push(format!("model.layers.{l}.{m}.input"));
        }
    }
    v
}

/// `embeddings`, then `layer00.attention_output`, `layer00.intermediate`, `layer00.output`,
/// … `layer05.output`.
pub(in crate::tui) fn minilm_names() -> Vec<String> {
    let mut v = vec!["embeddings".to_string()];
    for l in 0..6 {
        for m in ["attention_output", "intermediate", "output"] {
            v.push(format!("layer{l:02}.{m}"));
        }
    }
    v
}

/// An app over `names` whose layers carry the samples' real results (histograms, methods,
/// warnings), in turn: the names are what is under test, not the numbers.
pub(super) fn named_app(names: &[String]) -> App {
    let samples = sample_app();
    let specs: Vec<LayerSpec> = names
        .iter()
        .map(|n| LayerSpec {
            name: n.clone(),
            parts: Vec::new(),
        })
        .collect();
    let mut app = App::new(specs, Vec::new(), Options::default());
    let _ = app.start();
    let g = app.generation;
    for (i, n) in names.iter().enumerate() {
        let mut layer = samples.slots[i % samples.slots.len()]
            .result
            .clone()
            .unwrap();
        layer.name = n.clone();
        app.on_layer(g, i, layer);
    }
    app.on_job_done(g);
    app
}

/// The number that tells the layer apart (`17` of `model.layers.17…`, `03` of `layer03…`);
/// None for a name without one.
fn layer_number(name: &str) -> Option<String> {
    let n: String = name
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    (!n.is_empty()).then_some(n)
}

/// The first word of a row's text from column `skip` on: the name as the row shows it.
fn shown_name(text: &str, skip: usize) -> String {
    let rest: String = text.chars().skip(skip).collect();
    rest.split_whitespace().next().unwrap_or("").to_string()
}

/// Every row of the layer list and of the overview at `w`×`h`, with the list's cursor at
/// several places: distinct names, each with its layer's number.
fn check_rows(app: &mut App, w: u16, h: u16) {
    let n = app.slots.len();
    for cursor in [0, n / 2, n - 1] {
        app.view = View::Main;
        app.selected = Some(cursor);
        let t = render(app, w, h);
        let rows = layout::main_areas(Rect::new(0, 0, w, h), app.method_count()).layers_rows;
        let vis = app.visible();
        let first = layout::scroll_start(app.layer_cursor(&vis), usize::from(rows.height), n);
        let mut seen = Vec::new();
        for (k, &slot) in vis
            .iter()
            .skip(first)
            .take(usize::from(rows.height))
            .enumerate()
        {
            let text = row_text(&t, rows.y + k as u16, rows.x, rows.right());
            // The mark column (⚠n) is 3 wide.
            let name = shown_name(&text, 3);
            check_row(&app.slots[slot].name, &name, &text, w, h);
            seen.push(name);
        }
        assert_distinct(&seen, "layer list", w, h);
    }
    app.view = View::Overview;
    for scroll in [0, n / 2, n - 1] {
        app.overview_scroll = scroll;
        let t = render(app, w, h);
        let rows = layout::overview_areas(Rect::new(0, 0, w, h)).rows;
        let order = app.by_sensitivity();
        let first = layout::scroll_start(scroll, usize::from(rows.height), n);
        let mut seen = Vec::new();
        for (k, &slot) in order
            .iter()
            .skip(first)
            .take(usize::from(rows.height))
            .enumerate()
        {
            let text = row_text(&t, rows.y + k as u16, rows.x, rows.right());
            let name = shown_name(&text, 0);
            check_row(&app.slots[slot].name, &name, &text, w, h);
            seen.push(name);
        }
        assert_distinct(&seen, "overview", w, h);
    }
}

fn check_row(full: &str, shown: &str, text: &str, w: u16, h: u16) {
    assert!(
        shows_name(shown, full) || shown == full,
        "{w}×{h}: {text:?} does not show {full}"
    );
    if let Some(num) = layer_number(full) {
        assert!(
            shown.contains(&num),
            "{w}×{h}: {text:?} lost the layer number {num} of {full}"
        );
    }
}

fn assert_distinct(seen: &[String], what: &str, w: u16, h: u16) {
    assert!(seen.len() > 10, "{w}×{h} {what}: only {} rows", seen.len());
    let mut sorted = seen.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        seen.len(),
        "{w}×{h} {what}: rows look alike: {seen:?}"
    );
}

#[test]
fn hugging_face_names_are_told_apart() {
    let mut app = named_app(&hf_names());
    assert_eq!(app.names.prefix, "model.layers.");
    for (w, h) in [(80, 24), (160, 48)] {
        check_rows(&mut app, w, h);
    }
    app.view = View::Main;
    app.selected = Some(17 * 4 + 3);
    snap("names_hf_main", &mut app, 80, 24);
    snap("names_hf_main", &mut app, 160, 48);
    app.view = View::Overview;
    app.overview_scroll = 0;
    snap("names_hf_overview", &mut app, 80, 24);
    snap("names_hf_overview", &mut app, 160, 48);
}

#[test]
fn minilm_names_are_told_apart() {
    let mut app = named_app(&minilm_names());
    assert_eq!(app.names.prefix, "");
    for (w, h) in [(80, 24), (160, 48)] {
        check_rows(&mut app, w, h);
    }
    app.view = View::Main;
    app.selected = Some(0);
    snap("names_minilm_main", &mut app, 80, 24);
    snap("names_minilm_main", &mut app, 160, 48);
    app.view = View::Overview;
    app.overview_scroll = 0;
    snap("names_minilm_overview", &mut app, 80, 24);
    snap("names_minilm_overview", &mut app, 160, 48);
}

#[test]
fn the_tree_groups_layers_and_folds() {
    let mut app = named_app(&hf_names());
    app.size = Rect::new(0, 0, 80, 24);
    app.handle_key(ch('t'));
    assert!(app.tree);
    // 24 layer groups, each with `self_attn` (2 layers) and `mlp` (2 layers): 7 rows.
    let rows = app.list_rows();
    assert_eq!(rows.len(), 24 * 7);
    assert!(matches!(&rows[0], TreeRow::Group { label, members, .. }
        if label == "0" && members == &[0, 1, 2, 3]));
    assert!(matches!(&rows[1], TreeRow::Group { key, label, .. }
        if key == "0.self_attn" && label == "self_attn"));
    assert!(
        matches!(&rows[2], TreeRow::Layer { slot: 0, label, depth: 2 } if label == "q_proj.input")
    );
    assert_eq!(app.list_cursor(&rows), 2);
    // ← on a layer goes to its group, ← again folds it, Enter unfolds it.
    app.handle_key(key(KeyCode::Left));
    assert_eq!(app.group_cursor.as_deref(), Some("0.self_attn"));
    app.handle_key(key(KeyCode::Left));
    assert_eq!(app.list_rows().len(), 24 * 7 - 2);
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.list_rows().len(), 24 * 7);
    // Moving onto a group keeps the selected layer (the right side still shows it).
    app.handle_key(ch('k'));
    assert_eq!(app.group_cursor.as_deref(), Some("0"));
    assert_eq!(app.selected, Some(0));
    app.handle_key(key(KeyCode::Left));
    assert_eq!(app.list_rows().len(), 24 * 7 - 6);
    app.handle_key(key(KeyCode::Right));
    assert_eq!(app.list_rows().len(), 24 * 7);
    // Fold every layer group: one row per layer number, each shown.
    for l in 0..24 {
        app.folded.insert(l.to_string());
    }
    let rows = app.list_rows();
    assert_eq!(rows.len(), 24);
    let t = render(&mut app, 80, 24);
    let area = layout::main_areas(app.size, app.method_count()).layers_rows;
    for (k, y) in (area.y..area.bottom()).enumerate() {
        let text = row_text(&t, y, area.x, area.right());
        assert!(text.contains(&format!("▸{k} (4)")), "{text:?}");
    }
    // A click on the group under the cursor unfolds it; on another row it moves there.
    app.group_cursor = Some("0".into());
    click(&mut app, area.x + 4, area.y);
    assert_eq!(app.list_rows().len(), 24 + 6);
    click(&mut app, area.x + 4, area.y + 2);
    assert_eq!(app.group_cursor, None);
    assert_eq!(app.selected, Some(0));
    // The selected layer in a folded group: the cursor is on that group.
    app.folded.insert("0".into());
    app.group_cursor = None;
    let rows = app.list_rows();
    assert_eq!(app.list_cursor(&rows), 0);
    // `t` again: the flat list.
    app.handle_key(ch('t'));
    assert_eq!(app.list_rows().len(), 96);
}

#[test]
fn snapshot_tree() {
    let mut app = named_app(&hf_names());
    app.handle_key(ch('t'));
    for l in 1..24 {
        if l != 17 {
            app.folded.insert(l.to_string());
        }
    }
    app.selected = Some(17 * 4 + 3);
    snap("names_hf_tree", &mut app, 80, 24);
    snap("names_hf_tree", &mut app, 160, 48);
    let mut app = named_app(&minilm_names());
    app.handle_key(ch('t'));
    snap("names_minilm_tree", &mut app, 80, 24);
}
