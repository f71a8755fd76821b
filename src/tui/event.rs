//! One channel for everything the UI reacts to: terminal input, signals and job messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use ratatui::crossterm::event as ct;

use crate::analysis::compare::Pair;
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
    /// Pair `index` of compare job `generation` finished.
    Compared {
        generation: u64,
        index: usize,
        pair: Box<Pair>,
    },
    /// Job `generation` finished (or was cancelled).
    JobDone {
        generation: u64,
    },
    /// Reading the terminal failed: the loop ends with this error.
    InputError(String),
    /// The terminal went away (hung up, closed): the loop ends.
    Hangup,
    /// A stop signal (SIGHUP, SIGINT, SIGTERM) arrived: the loop ends.
    Signal(i32),
    /// The terminal changed size (SIGWINCH): redraw.
    Resized,
}

/// Forwards terminal input from its own thread until the terminal goes away (it sends
/// [`Event::Hangup`]), reading fails, `stop` is set or the receiver is gone.
///
/// It waits on the terminal itself ([`Tty::wait`]) and calls crossterm only when input is
/// there, without a timeout: crossterm's reader never returns once the terminal is gone (its
/// reads get 0 or EIO and it retries; crossterm#793), so it must not be the one waiting.
pub fn spawn_input(tx: Sender<Event>, tty: Arc<Tty>, tick: Duration, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match tty.wait(tick) {
                Wait::Timeout => continue,
                Wait::Gone => {
                    let _ = tx.send(Event::Hangup);
                    return;
                }
                Wait::Failed(e) => {
                    let _ = tx.send(Event::InputError(e.to_string()));
                    return;
                }
                Wait::Input => {}
            }
            // Everything crossterm has now: one read can hold several events.
            let mut got = false;
            loop {
                let msg = match ct::poll(Duration::ZERO) {
                    Ok(false) => break,
                    Ok(true) => match ct::read() {
                        Ok(e) => Event::Input(e),
                        Err(e) => Event::InputError(e.to_string()),
                    },
                    Err(e) => Event::InputError(e.to_string()),
                };
                got = true;
                let fatal = matches!(msg, Event::InputError(_));
                if tx.send(msg).is_err() || fatal {
                    return;
                }
            }
            if !got {
                // Input crossterm did not take: half an escape sequence, or bytes beyond its
                // 1 KiB read that its edge-triggered poll reports only when more arrive. The
                // terminal stays readable, so waiting on it again would return at once.
                std::thread::sleep(STALL);
            }
        }
    });
}

/// The pause after input crossterm did not take: short enough not to be felt when the rest
/// of an escape sequence follows, long enough not to spin.
const STALL: Duration = Duration::from_millis(20);

/// What waiting on the terminal found.
pub enum Wait {
    Input,
    Timeout,
    /// Hung up or closed: it will never have input again.
    Gone,
    Failed(std::io::Error),
}

/// The terminal the input comes from, watched without crossterm.
#[cfg(unix)]
pub struct Tty {
    fd: std::os::fd::RawFd,
    /// `/dev/tty` when stdin is not the terminal; kept open for `fd`.
    _owned: Option<std::fs::File>,
}

#[cfg(unix)]
impl Tty {
    /// The terminal crossterm reads: stdin when it is one, else `/dev/tty`. A hangup reaches
    /// every open description of the terminal, so watching our own is enough.
    pub fn open() -> std::io::Result<Tty> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(libc::STDIN_FILENO) } == 1 {
            return Ok(Tty {
                fd: libc::STDIN_FILENO,
                _owned: None,
            });
        }
        let file = std::fs::OpenOptions::new().read(true).open("/dev/tty")?;
        Ok(Tty {
            fd: std::os::fd::AsRawFd::as_raw_fd(&file),
            _owned: Some(file),
        })
    }

    /// Waits up to `timeout` for input or a hangup. A hung-up terminal polls as
    /// POLLHUP (pty master closed, tty_vhangup) or POLLERR/POLLNVAL.
    pub fn wait(&self, timeout: Duration) -> Wait {
        let mut p = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::Interrupted => Wait::Timeout,
                _ => Wait::Failed(e),
            };
        }
        if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            Wait::Gone
        } else if p.revents & libc::POLLIN != 0 {
            Wait::Input
        } else {
            Wait::Timeout
        }
    }

    /// Whether the terminal has gone away; does not wait.
    pub fn gone(&self) -> bool {
        matches!(self.wait(Duration::ZERO), Wait::Gone)
    }
}

/// Elsewhere crossterm waits, and a terminal is taken to stay.
#[cfg(not(unix))]
pub struct Tty;

#[cfg(not(unix))]
impl Tty {
    pub fn open() -> std::io::Result<Tty> {
        Ok(Tty)
    }

    pub fn wait(&self, timeout: Duration) -> Wait {
        match ct::poll(timeout) {
            Ok(true) => Wait::Input,
            Ok(false) => Wait::Timeout,
            Err(e) => Wait::Failed(e),
        }
    }

    pub fn gone(&self) -> bool {
        false
    }
}
