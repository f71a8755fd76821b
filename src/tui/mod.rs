//! The interactive terminal UI: a view of the analysis as it fills in.
//!
//! - [`app`]: the state and how keys, mouse and job results change it (no drawing, no I/O);
//! - [`keys`]: every key, its action, help line and status-line hint;
//! - [`views`]: `draw(frame, &App)`, a pure function of the state; [`layout`]: where things go;
//! - [`event`]: the one channel every producer (input thread, signal thread, jobs) feeds;
//! - [`jobs`]: the analysis on a background thread, with progress and cancel.
//!
//! [`run`] owns the terminal and carries out the commands the app returns.

pub mod app;
pub mod details;
pub mod event;
pub mod jobs;
pub mod keys;
pub mod layout;
pub mod names;
pub mod views;
pub mod widgets;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::Context;
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{
    self as ct, DisableMouseCapture, EnableMouseCapture, KeyEventKind,
};
use ratatui::crossterm::execute;
use ratatui::layout::Rect;

use crate::analysis::compare::{CompareOptions, Pairing};
use crate::analysis::{LayerAnalysis, Options, Progress};
use crate::report::{self, Format};
use crate::source::{LayerSpec, LoadError};

use app::{App, Command};
use event::Event;

/// Tick period: how often the progress bar refreshes while a job runs, and the terminal is
/// checked for a hangup.
const TICK: Duration = Duration::from_millis(100);

/// Opens the UI on `specs` (and shows `errors` as errored layers) until the user quits.
/// Restores the terminal on quit, on error, on panic and on a stop signal; ends the process
/// (exit status 128+signal) on a stop signal or when the terminal goes away.
pub fn run(specs: Vec<LayerSpec>, errors: Vec<LoadError>, opts: Options) -> anyhow::Result<()> {
    run_app(App::new(specs, errors, opts))
}

/// Opens the UI on a saved analysis (see [`App::from_saved`]): every layer at once, without
/// reading the dumps unless `rerun`.
pub fn run_saved(
    layers: Vec<(Option<LayerSpec>, LayerAnalysis)>,
    opts: Options,
    rerun: bool,
    fit: bool,
) -> anyhow::Result<()> {
    run_app(App::from_saved(layers, opts, rerun, fit))
}

/// Opens the compare view on `pairing`, as [`run`] does the analysis.
pub fn run_compare(pairing: Pairing, opts: CompareOptions) -> anyhow::Result<()> {
    run_app(App::compare(pairing, opts))
}

fn run_app(mut app: App) -> anyhow::Result<()> {
    let tty = Arc::new(event::Tty::open().context("cannot open the terminal UI")?);
    let (tx, rx) = mpsc::channel();
    // Before the terminal changes: from here a stop signal reaches the loop.
    signals::spawn(tx.clone()).context("cannot catch signals for the terminal UI")?;
    // try_init installs ratatui's restoring panic hook; ours (mouse capture off) goes on top.
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            ratatui::restore();
            return Err(e).context("cannot open the terminal UI");
        }
    };
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // A panic on an analysis worker is caught by the pipeline and shown as that layer's
        // error: the UI goes on, so neither restore the terminal nor print over the screen.
        if rayon::current_thread_index().is_some() {
            return;
        }
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
        prev(info);
    }));
    let _ = execute!(std::io::stdout(), EnableMouseCapture);
    let result = event_loop(&mut terminal, &mut app, &tty, tx, &rx);
    // A terminal that is gone has nothing to restore, and writing to it (or reporting that
    // the writes failed, on the same dead terminal) would fail.
    let gone = tty.gone();
    if !gone {
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
        ratatui::restore();
    }
    match result {
        Ok(None) => Ok(()),
        // Jobs cancelled: exit as a process killed by `sig` would report.
        Ok(Some(sig)) => std::process::exit(128 + sig),
        // Drawing on or reading a terminal that went away failed: end as its hangup would.
        Err(_) if gone => std::process::exit(128 + signals::HANGUP),
        Err(e) => Err(e),
    }
}

/// SIGHUP, SIGINT and SIGTERM end the UI cleanly (terminal restored, exit status 128+signal)
/// instead of killing it with the terminal left in raw mode and the alternate screen. A thread
/// of their own receives them and sends them into the main loop's channel, so they are seen
/// whatever the input thread is doing. Ctrl-C in the UI is a key press (raw mode), handled
/// by the app. SIGWINCH comes the same way: crossterm reports it only when it is polled, and
/// it is polled only when there is input.
#[cfg(unix)]
mod signals {
    use std::sync::mpsc::Sender;
    use std::time::Duration;

    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGWINCH};
    use signal_hook::iterator::Signals;

    use super::event::Event;

    /// The signal a terminal that went away stands for.
    pub const HANGUP: i32 = SIGHUP;

    /// How long the main loop has to restore the terminal and exit after a stop signal before
    /// the signal thread ends the process itself (the loop can be stuck writing to a terminal
    /// that stopped reading).
    const GRACE: Duration = Duration::from_millis(500);

    pub fn spawn(tx: Sender<Event>) -> std::io::Result<()> {
        let mut signals = Signals::new([SIGHUP, SIGINT, SIGTERM, SIGWINCH])?;
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if sig == SIGWINCH {
                    let _ = tx.send(Event::Resized);
                    continue;
                }
                let _ = tx.send(Event::Signal(sig));
                std::thread::sleep(GRACE);
                // SAFETY: ends the process at once; it skips destructors and atexit handlers,
                // which only a stuck main thread would have run.
                unsafe { libc::_exit(128 + sig) };
            }
        });
        Ok(())
    }
}

/// Elsewhere no signals are caught and a terminal never goes away.
#[cfg(not(unix))]
mod signals {
    use std::sync::mpsc::Sender;

    use super::event::Event;

    pub const HANGUP: i32 = 1;

    pub fn spawn(_tx: Sender<Event>) -> std::io::Result<()> {
        Ok(())
    }
}

/// The running job's counters (cancel the old one when a new one starts).
struct Runner {
    tx: Sender<Event>,
    job: Option<Arc<Progress>>,
}

impl Runner {
    fn exec(&mut self, app: &mut App, cmd: Command) {
        match cmd {
            Command::Quit => app.running = false,
            Command::Analyze {
                generation,
                opts,
                work,
            } => {
                if let Some(old) = self.job.take() {
                    old.cancel.store(true, Ordering::Relaxed);
                }
                let progress = Arc::new(Progress::default());
                match jobs::spawn(generation, opts, work, progress.clone(), self.tx.clone()) {
                    Ok(()) => self.job = Some(progress),
                    Err(e) => {
                        app.progress.running = false;
                        app.message = Some(format!("cannot start the analysis: {e}"));
                    }
                }
            }
            Command::Compare {
                generation,
                pairing,
                opts,
            } => {
                self.cancel();
                let progress = Arc::new(Progress::default());
                match jobs::spawn_compare(
                    generation,
                    pairing,
                    opts,
                    progress.clone(),
                    self.tx.clone(),
                ) {
                    Ok(()) => self.job = Some(progress),
                    Err(e) => {
                        app.progress.running = false;
                        app.message = Some(format!("cannot start the comparison: {e}"));
                    }
                }
            }
            Command::Export(format) => {
                let dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
                app.message = Some(match export(app, format, &dir) {
                    Ok(path) => {
                        let (what, n, total) = match &app.compare {
                            Some(c) => (
                                "comparison",
                                c.done.iter().filter(|d| **d).count(),
                                c.done.len(),
                            ),
                            None => (
                                "analysis",
                                app.slots.iter().filter(|s| s.result.is_some()).count(),
                                app.slots.len(),
                            ),
                        };
                        let unit = if app.compare.is_some() {
                            "pairs"
                        } else {
                            "layers"
                        };
                        let partial = if app.progress.running {
                            format!(" ({what} still running: {n}/{total} {unit})")
                        } else {
                            String::new()
                        };
                        format!(
                            "exported {} to {}{partial}",
                            format_name(format),
                            path.display()
                        )
                    }
                    Err(e) => format!("export failed: {e:#}"),
                });
            }
        }
    }

    fn cancel(&mut self) {
        if let Some(old) = self.job.take() {
            old.cancel.store(true, Ordering::Relaxed);
        }
    }
}

/// Runs until the user quits (`None`), a stop signal arrives or the terminal goes away (the
/// signal, [`signals::HANGUP`] for the terminal).
fn event_loop(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    tty: &Arc<event::Tty>,
    tx: Sender<Event>,
    rx: &Receiver<Event>,
) -> anyhow::Result<Option<i32>> {
    let stop = Arc::new(AtomicBool::new(false));
    event::spawn_input(tx.clone(), tty.clone(), TICK, stop.clone());
    let mut runner = Runner { tx, job: None };
    let result = (|| -> anyhow::Result<Option<i32>> {
        set_size(terminal, app);
        terminal.draw(|f| views::draw(f, app))?;
        if let Some(cmd) = app.start() {
            runner.exec(app, cmd);
        }
        // Ticks come from this loop's own timeout, not from the input thread: that thread can
        // be stuck in crossterm, and the loop must still tick, see signals and see the
        // terminal go.
        let mut next_tick = Instant::now() + TICK;
        while app.running {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let mut next = match rx.recv_timeout(wait) {
                Ok(ev) => Some(ev),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut redraw = false;
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                if tty.gone() {
                    return Ok(Some(signals::HANGUP));
                }
                redraw |= handle(app, &mut runner, Event::Tick)?;
            }
            // Handle a burst (many layers finishing, fast typing) with one redraw.
            while let Some(ev) = next {
                match ev {
                    Event::Signal(sig) => return Ok(Some(sig)),
                    Event::Hangup => return Ok(Some(signals::HANGUP)),
                    ev => redraw |= handle(app, &mut runner, ev)?,
                }
                if !app.running {
                    break;
                }
                next = rx.try_recv().ok();
            }
            if app.running && redraw {
                set_size(terminal, app);
                terminal.draw(|f| views::draw(f, app))?;
            }
        }
        Ok(None)
    })();
    // Never join the job: `q` during a long analysis must return at once.
    runner.cancel();
    stop.store(true, Ordering::Relaxed);
    result
}

fn set_size(terminal: &DefaultTerminal, app: &mut App) {
    if let Ok(s) = terminal.size() {
        app.size = Rect::new(0, 0, s.width, s.height);
    }
}

/// Applies one event; returns whether the screen needs a redraw.
/// Copies the running job's progress counters into the app state.
fn sync_progress(app: &mut App, runner: &Runner) {
    if let Some(p) = &runner.job {
        app.set_progress(
            p.done.load(Ordering::Relaxed),
            p.total.load(Ordering::Relaxed),
            p.layers_done.load(Ordering::Relaxed),
        );
    }
}

fn handle(app: &mut App, runner: &mut Runner, ev: Event) -> anyhow::Result<bool> {
    match ev {
        Event::Input(ct::Event::Key(k)) => {
            if k.kind == KeyEventKind::Press
                && let Some(cmd) = app.handle_key(k)
            {
                runner.exec(app, cmd);
            }
        }
        Event::Input(ct::Event::Mouse(m)) => app.handle_mouse(m),
        Event::Input(ct::Event::Resize(w, h)) => app.size = Rect::new(0, 0, w, h),
        Event::Input(_) => return Ok(false),
        Event::Tick => {
            if !app.progress.running {
                return Ok(false);
            }
            sync_progress(app, runner);
        }
        ev @ (Event::Layer { .. }
        | Event::Profiled { .. }
        | Event::Compared { .. }
        | Event::JobDone { .. }) => {
            let layer_done = matches!(ev, Event::Layer { .. } | Event::Compared { .. });
            app.on_job_event(ev);
            if layer_done {
                sync_progress(app, runner);
            }
        }
        Event::Resized => {}
        // The loop stops on these before handing events here.
        Event::Signal(_) | Event::Hangup => return Ok(false),
        Event::InputError(e) => anyhow::bail!("reading the terminal failed: {e}"),
    }
    Ok(true)
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Text => "text",
        Format::Json => "JSON",
        Format::Csv => "CSV",
        Format::Markdown => "Markdown",
    }
}

/// Writes the report to `dir/calibscope-report.<ext>` with [`report::write::write_atomic`]
/// (atomic, never over one of the UI's inputs), so a reader never sees half a report.
pub fn export(app: &App, format: Format, dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(c) = &app.compare {
        let text = report::compare::render(&c.result, format);
        let path = dir.join(format!("calibscope-compare.{}", format.extension()));
        let specs = (c.pairing.pairs.iter()).flat_map(|p| [&p.reference, &p.test]);
        let inputs: Vec<&Path> = report::write::input_files(specs).collect();
        report::write::write_atomic(&path, text.as_bytes(), &inputs)?;
        return Ok(path);
    }
    let text = report::render(&app.analysis(), format);
    let path = dir.join(format!("calibscope-report.{}", format.extension()));
    let specs = app.slots.iter().filter_map(|s| s.spec.as_ref());
    // Layers that failed to load keep their path as their name.
    let failed = (app.slots.iter().filter(|s| s.spec.is_none())).map(|s| Path::new(&s.name));
    let inputs: Vec<&Path> = report::write::input_files(specs).chain(failed).collect();
    report::write::write_atomic(&path, text.as_bytes(), &inputs)?;
    Ok(path)
}
