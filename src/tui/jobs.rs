//! Analysis off the UI thread: a plain `std::thread` that uses rayon inside (a rayon `join`
//! from the UI thread would block it), sending each finished layer through the event channel.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;

use rayon::prelude::*;

use crate::analysis::{Options, Progress, analyze_layer, finish_layer};

use super::app::Work;
use super::event::Event;

/// Runs `work` in the background. Set `progress.cancel` to stop it; results of a cancelled job
/// are still sent but the app drops them by generation.
pub fn spawn(
    generation: u64,
    opts: Options,
    work: Vec<Work>,
    progress: Arc<Progress>,
    tx: Sender<Event>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("calibscope-analysis-{generation}"))
        .spawn(move || {
            run(generation, &opts, work, &progress, &tx);
        })
        .map(|_| ())
}

/// The job body (also used synchronously by tests).
pub fn run(
    generation: u64,
    opts: &Options,
    work: Vec<Work>,
    progress: &Progress,
    tx: &Sender<Event>,
) {
    work.into_par_iter().for_each_with(tx.clone(), |tx, w| {
        if progress.cancel.load(Ordering::Relaxed) {
            return;
        }
        let layer = match w.profile {
            // Histograms and stats are kept: only calibration and the metrics pass run again.
            Some(p) => finish_layer(&w.spec, p, opts, progress),
            None => analyze_layer(&w.spec, opts, progress),
        };
        progress.layers_done.fetch_add(1, Ordering::Relaxed);
        if !progress.cancel.load(Ordering::Relaxed) {
            // The receiver may be gone (the UI quit): nothing left to do then.
            let _ = tx.send(Event::Layer {
                generation,
                slot: w.slot,
                layer: Box::new(layer),
            });
        }
    });
    let _ = tx.send(Event::JobDone { generation });
}
