//! Analysis off the UI thread: a plain `std::thread` that uses rayon inside (a rayon `join`
//! from the UI thread would block it), running the library's one per-layer pipeline and
//! forwarding its events through the event channel.

use std::sync::Arc;
use std::sync::mpsc::{self, Sender};

use crate::analysis::compare::{CompareOptions, Pairing, compare_pairs};
use crate::analysis::{LayerEvent, LayerJob, Options, Progress, run_layers};

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
    let (tx, rx) = mpsc::channel();
    match cmd {
        Some(Command::Analyze {
            generation,
            opts,
            work,
        }) => run(generation, &opts, work, &Progress::default(), &tx),
        Some(Command::Compare {
            generation,
            pairing,
            opts,
        }) => run_compare(generation, &pairing, &opts, &Progress::default(), &tx),
        _ => return,
    }
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
    let slots: Vec<usize> = work.iter().map(|w| w.slot).collect();
    let jobs = work
        .into_iter()
        .map(|w| LayerJob {
            spec: w.spec,
            kept: w.profile,
        })
        .collect();
    // The receiver may be gone (the UI quit): nothing left to do then.
    let send = |ev: Event| {
        let _ = tx.send(ev);
    };
    run_layers(jobs, opts, progress, &|ev| match ev {
        LayerEvent::Profiled { index, profile } => send(Event::Profiled {
            generation,
            slot: slots[index],
            profile,
        }),
        LayerEvent::Done { index, layer } => {
            if !progress.cancel.load(std::sync::atomic::Ordering::Relaxed) {
                send(Event::Layer {
                    generation,
                    slot: slots[index],
                    layer,
                });
            }
        }
    });
    send(Event::JobDone { generation });
}

/// Compares the pairs in the background, like [`spawn`].
pub fn spawn_compare(
    generation: u64,
    pairing: Pairing,
    opts: CompareOptions,
    progress: Arc<Progress>,
    tx: Sender<Event>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("calibscope-compare-{generation}"))
        .spawn(move || run_compare(generation, &pairing, &opts, &progress, &tx))
        .map(|_| ())
}

/// The compare job body: each pair as it finishes, then the end.
pub fn run_compare(
    generation: u64,
    pairing: &Pairing,
    opts: &CompareOptions,
    progress: &Progress,
    tx: &Sender<Event>,
) {
    compare_pairs(pairing, opts, progress, &|index, pair| {
        let _ = tx.send(Event::Compared {
            generation,
            index,
            pair: Box::new(pair),
        });
    });
    let _ = tx.send(Event::JobDone { generation });
}
