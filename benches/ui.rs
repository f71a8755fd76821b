//! Frame time of the terminal UI (`cargo bench --bench ui`): the sample layers drawn at
//! 160×48 into ratatui's `TestBackend` (no terminal I/O), full and zoomed views. The draw is a
//! pure function of the app state, so this is the whole cost of a frame but the terminal's.
#![allow(clippy::unwrap_used)]

use std::sync::mpsc;

use calibscope::analysis::{Options, Progress};
use calibscope::source::{BatchLayout, Limits, discover};
use calibscope::tui::app::{App, Command};
use calibscope::tui::event::Event;
use calibscope::tui::{jobs, ui};
use divan::Bencher;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;

fn main() {
    divan::main();
}

/// The samples analysed, with the float16-overflow layer (wide range, many markers) selected.
fn sample_app() -> App {
    let dir = calibscope::samples::extract().unwrap();
    let found = discover(&[dir], BatchLayout::Auto, &Limits::default());
    let mut app = App::new(found.layers, found.errors, Options::default());
    if let Some(Command::Analyze {
        generation,
        opts,
        work,
    }) = app.start()
    {
        let (tx, rx) = mpsc::channel();
        jobs::run(generation, &opts, work, &Progress::default(), &tx);
        drop(tx);
        for ev in rx {
            match ev {
                Event::Layer {
                    generation,
                    slot,
                    layer,
                } => app.on_layer(generation, slot, *layer),
                Event::JobDone { generation } => app.on_job_done(generation),
                _ => {}
            }
        }
    }
    app.selected = app
        .slots
        .iter()
        .position(|s| s.name.contains("05_mlp_fp16"));
    app.size = Rect::new(0, 0, 160, 48);
    app
}

#[divan::bench(args = [false, true])]
fn frame_160x48(b: Bencher, zoom: bool) {
    let mut app = sample_app();
    app.zoom = zoom;
    let mut t = Terminal::new(TestBackend::new(160, 48)).unwrap();
    b.bench_local(|| {
        t.draw(|f| ui::draw(f, &app)).unwrap();
    });
}
