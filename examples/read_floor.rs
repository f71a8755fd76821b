//! The floor under `calibscope report`: the same files, layers and chunks read the same way
//! (positional reads, layers and chunks in parallel, small layers read once and kept), but
//! with no analysis: three passes that only touch the values. The analysis needs three passes
//! (the histograms need the range of pass 1, the metrics need the ranges chosen from the
//! histograms), so no implementation of it on this reader can beat this time.
//!
//! `cargo run --release --example read_floor -- PATH... [--threads N]`; prints the seconds.
//! Used by `scripts/bench`.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use calibscope::analysis::{Options, open_layer};
use calibscope::source::{BatchLayout, Limits, discover};
use rayon::prelude::*;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--threads") {
        let n: usize = args[i + 1].parse().unwrap();
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .unwrap();
        args.drain(i..i + 2);
    }
    let paths: Vec<_> = args.iter().map(Into::into).collect();
    let opts = Options::default();
    let start = Instant::now();
    let found = discover(&paths, BatchLayout::Auto, &Limits::default());
    let cancel = AtomicBool::new(false);
    let touched: f64 = found
        .layers
        .par_iter()
        .map(|spec| {
            let parts = open_layer(spec, &opts, &cancel).unwrap();
            let mut sum = 0.0f64;
            for _pass in 0..3 {
                for p in &parts {
                    // One value per cache line: enough to pull every line through the core.
                    let sums = p
                        .map_chunks(opts.chunk_elems, &cancel, |_, v| {
                            v.iter().step_by(16).map(|&x| f64::from(x)).sum::<f64>()
                        })
                        .unwrap();
                    sum += sums.iter().sum::<f64>();
                }
            }
            sum
        })
        .sum();
    let secs = start.elapsed().as_secs_f64();
    // Printed so the reads cannot be optimised away.
    eprintln!("checksum {touched}");
    println!("{secs:.4}");
}
