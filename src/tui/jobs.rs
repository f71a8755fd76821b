//! Analysis off the UI thread: a plain `std::thread` that uses rayon inside (a rayon `join`
//! from the UI thread would block it), sending each finished layer through the event channel.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};

use rayon::prelude::*;

use crate::analysis::{LayerAnalysis, Options, Progress, finish_layer, profile_layer};

use super::app::{App, Command, Work};
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

/// Runs an analysis command to the end on this thread and applies its results to `app` as the
/// event loop would: for tests and benchmarks, which have no terminal.
pub fn run_to_end(app: &mut App, cmd: Option<Command>) {
    let Some(Command::Analyze {
        generation,
        opts,
        work,
    }) = cmd
    else {
        return;
    };
    let (tx, rx) = mpsc::channel();
    run(generation, &opts, work, &Progress::default(), &tx);
    drop(tx);
    for ev in rx {
        app.on_job_event(ev);
    }
}

/// The job body (also used synchronously by [`run_to_end`]).
pub fn run(
    generation: u64,
    opts: &Options,
    work: Vec<Work>,
    progress: &Progress,
    tx: &Sender<Event>,
) {
    // `finish_layer` only reads for the metrics pass and does not count it in `total` (the
    // profiling pass does that for fresh layers): count it here so the bar moves on re-runs.
    let reread: u64 = work
        .iter()
        .filter_map(|w| w.profile.as_ref())
        .map(|p| p.moments.count)
        .sum();
    progress.total.fetch_add(reread, Ordering::Relaxed);
    work.into_par_iter().for_each_with(tx.clone(), |tx, w| {
        if progress.cancel.load(Ordering::Relaxed) {
            return;
        }
        let layer = match w.profile {
            // Histograms and stats are kept: only calibration and the metrics pass run again.
            Some(kept) => finish_layer(&w.spec, &kept.unpack(), kept, opts, progress),
            None => match profile_layer(&w.spec, opts, progress) {
                Ok(p) => {
                    // Hand the profile over before the metrics pass: the histogram can be shown
                    // now, and a re-run started meanwhile need not read the file twice more.
                    let kept = Arc::new(p.pack());
                    let _ = tx.send(Event::Profiled {
                        generation,
                        slot: w.slot,
                        profile: kept.clone(),
                    });
                    finish_layer(&w.spec, &p, kept, opts, progress)
                }
                Err(e) => {
                    let mut l = LayerAnalysis::from_error(&e);
                    l.name = w.spec.name.clone();
                    l.source = w.spec.source();
                    l
                }
            },
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
