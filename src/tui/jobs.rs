//! Analysis off the UI thread: a plain `std::thread` that uses rayon inside (a rayon `join`
//! from the UI thread would block it), running the library's one per-layer pipeline and
//! forwarding its events through the event channel.

use std::sync::Arc;
use std::sync::mpsc::{self, Sender};

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
