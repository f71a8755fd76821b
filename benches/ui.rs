//! Frame time of the terminal UI (`cargo bench --bench ui`): the sample layers drawn at
//! 160×48 into ratatui's `TestBackend` (no terminal I/O), full and zoomed views. The draw is a
//! pure function of the app state, so this is the whole cost of a frame but the terminal's.
#![allow(clippy::unwrap_used)]

use calibscope::analysis::Options;
use calibscope::histogram::{Histogram, PackedHistogram};
use calibscope::source::{BatchLayout, Limits, discover};
use calibscope::tui::app::App;
use calibscope::tui::{jobs, views};
use divan::{Bencher, black_box};
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
    let cmd = app.start();
    jobs::run_to_end(&mut app, cmd);
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
        t.draw(|f| views::draw(f, &app)).unwrap();
    });
}

/// A fine histogram of 1 Mi Laplace-like values (the 4 MiB layers of `scripts/bench`).
fn fine_histogram() -> Histogram {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let v: Vec<f32> = (0..1 << 20)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            (if u < 0.5 {
                (2.0 * u).ln()
            } else {
                -(2.0 - 2.0 * u).ln()
            }) as f32
        })
        .collect();
    let (lo, hi) = v
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let mut h = Histogram::new(f64::from(lo), f64::from(hi), 65536);
    h.add_values(&v);
    h
}

/// What keeping a layer's histogram costs the UI: packing it once per layer...
#[divan::bench]
fn pack_fine_histogram(b: Bencher) {
    let h = fine_histogram();
    b.bench(|| PackedHistogram::pack(black_box(&h)));
}

/// ...and unpacking it once per re-run.
#[divan::bench]
fn unpack_fine_histogram(b: Bencher) {
    let p = PackedHistogram::pack(&fine_histogram());
    b.bench(|| black_box(&p).unpack());
}
