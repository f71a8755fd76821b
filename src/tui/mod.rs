//! The interactive terminal UI: a view of the analysis as it fills in.
//!
//! - [`app`]: the state and how keys, mouse and job results change it (no drawing, no I/O);
//! - [`keys`]: every key, its action, help line and status-line hint;
//! - [`views`]: `draw(frame, &App)`, a pure function of the state; [`layout`]: where things go;
//! - [`event`]: the one channel every producer (input thread, ticks, jobs) feeds;
//! - [`jobs`]: the analysis on a background thread, with progress and cancel.
//!
//! [`run`] owns the terminal and carries out the commands the app returns.

pub mod app;
pub mod event;
pub mod jobs;
pub mod keys;
pub mod layout;
pub mod views;
pub mod widgets;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use anyhow::Context;
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{
    self as ct, DisableMouseCapture, EnableMouseCapture, KeyEventKind,
};
use ratatui::crossterm::execute;
use ratatui::layout::Rect;

use crate::analysis::{Options, Progress};
use crate::report::{self, Format};
use crate::source::{LayerSpec, LoadError};

use app::{App, Command};
use event::Event;

/// Tick period: how often the progress bar refreshes while a job runs.
const TICK: Duration = Duration::from_millis(100);

/// Opens the UI on `specs` (and shows `errors` as errored layers) until the user quits.
/// Restores the terminal on quit, on error and on panic.
pub fn run(specs: Vec<LayerSpec>, errors: Vec<LoadError>, opts: Options) -> anyhow::Result<()> {
    let mut app = App::new(specs, errors, opts);
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
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
        prev(info);
    }));
    let _ = execute!(std::io::stdout(), EnableMouseCapture);
    signals::install();
    let result = event_loop(&mut terminal, &mut app);
    let _ = execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    signals::uninstall();
    if let Some(sig) = signals::received() {
        // Terminal restored, jobs cancelled: exit as a process killed by `sig` would report.
        std::process::exit(128 + sig);
    }
    result
}

/// SIGTERM, SIGHUP and SIGINT end the UI cleanly (terminal restored) instead of killing the
/// process with the terminal left in raw mode and the alternate screen. crossterm does not
/// handle signals, and this needs no extra crate: the handler only stores the signal number
/// in an atomic (async-signal-safe); the event loop sees it on its next event (a tick comes
/// every [`TICK`]). Ctrl-C in the UI is a key press (raw mode), handled by the app.
mod signals {
    use std::os::raw::c_int;
    use std::sync::atomic::{AtomicI32, Ordering};

    const SIGHUP: c_int = 1;
    const SIGINT: c_int = 2;
    const SIGTERM: c_int = 15;
    const SIGNALS: [c_int; 3] = [SIGHUP, SIGINT, SIGTERM];
    const SIG_DFL: usize = 0;

    static RECEIVED: AtomicI32 = AtomicI32::new(0);

    unsafe extern "C" {
        /// C's `signal(2)`, from the C library std already links.
        fn signal(signum: c_int, handler: usize) -> usize;
    }

    extern "C" fn on_signal(sig: c_int) {
        RECEIVED.store(sig, Ordering::SeqCst);
    }

    pub fn install() {
        RECEIVED.store(0, Ordering::SeqCst);
        let handler = on_signal as extern "C" fn(c_int) as usize;
        for sig in SIGNALS {
            // SAFETY: the handler only does an atomic store, which is async-signal-safe.
            unsafe { signal(sig, handler) };
        }
    }

    pub fn uninstall() {
        for sig in SIGNALS {
            // SAFETY: restores the default disposition.
            unsafe { signal(sig, SIG_DFL) };
        }
    }

    /// The signal that asked the UI to stop, if any.
    pub fn received() -> Option<i32> {
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
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
            Command::Export(format) => {
                let dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
                app.message = Some(match export(app, format, &dir) {
                    Ok(path) => {
                        let n = app.slots.iter().filter(|s| s.result.is_some()).count();
                        let partial = if app.progress.running {
                            format!(" (analysis still running: {n}/{} layers)", app.slots.len())
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

fn event_loop(terminal: &mut DefaultTerminal, app: &mut App) -> anyhow::Result<()> {
    let (tx, rx): (Sender<Event>, Receiver<Event>) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    event::spawn_input(tx.clone(), TICK, stop.clone());
    let mut runner = Runner { tx, job: None };
    let result = (|| -> anyhow::Result<()> {
        set_size(terminal, app);
        terminal.draw(|f| views::draw(f, app))?;
        if let Some(cmd) = app.start() {
            runner.exec(app, cmd);
        }
        while app.running {
            let Ok(first) = rx.recv() else { break };
            if signals::received().is_some() {
                break;
            }
            // Handle a burst (many layers finishing, fast typing) with one redraw.
            let mut redraw = false;
            let mut next = Some(first);
            while let Some(ev) = next {
                redraw |= handle(app, &mut runner, ev)?;
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
        Ok(())
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
        ev @ (Event::Layer { .. } | Event::Profiled { .. } | Event::JobDone { .. }) => {
            let layer_done = matches!(ev, Event::Layer { .. });
            app.on_job_event(ev);
            if layer_done {
                sync_progress(app, runner);
            }
        }
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

pub fn extension(f: Format) -> &'static str {
    match f {
        Format::Text => "txt",
        Format::Json => "json",
        Format::Csv => "csv",
        Format::Markdown => "md",
    }
}

/// Writes the report to `dir/calibscope-report.<ext>` atomically (temp file + rename), so a
/// reader never sees half a report.
pub fn export(app: &App, format: Format, dir: &Path) -> anyhow::Result<PathBuf> {
    let text = report::render(&app.analysis(), format);
    let path = dir.join(format!("calibscope-report.{}", extension(format)));
    let tmp = dir.join(format!(
        ".calibscope-report.{}.{}.tmp",
        extension(format),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(path)
}
