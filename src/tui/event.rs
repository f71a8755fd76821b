//! One channel for everything the UI reacts to: terminal input, ticks and job messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use ratatui::crossterm::event as ct;

use crate::analysis::{KeptProfile, LayerAnalysis};

/// What the main loop receives.
#[derive(Debug)]
pub enum Event {
    Input(ct::Event),
    /// Periodic: refresh the progress bar while a job runs.
    Tick,
    /// A layer of job `generation` finished.
    Layer {
        generation: u64,
        slot: usize,
        layer: Box<LayerAnalysis>,
    },
    /// Passes 1–2 of a layer are done: its histograms, before the metrics pass.
    Profiled {
        generation: u64,
        slot: usize,
        profile: Arc<KeptProfile>,
    },
    /// Job `generation` finished (or was cancelled).
    JobDone {
        generation: u64,
    },
    /// Reading the terminal failed: the loop ends with this error.
    InputError(String),
}

/// Polls the terminal on its own thread and forwards input, with a tick every `tick`.
/// Stops when `stop` is set or the receiver is gone.
pub fn spawn_input(tx: Sender<Event>, tick: Duration, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let msg = match ct::poll(tick) {
                Ok(true) => match ct::read() {
                    Ok(e) => Event::Input(e),
                    Err(e) => Event::InputError(e.to_string()),
                },
                Ok(false) => Event::Tick,
                Err(e) => Event::InputError(e.to_string()),
            };
            let fatal = matches!(msg, Event::InputError(_));
            if tx.send(msg).is_err() || fatal {
                break;
            }
        }
    });
}
