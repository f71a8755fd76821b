//! The real UI on a pseudo-terminal this test owns: it ends when its terminal goes away, with
//! or without a hangup signal, and a stop signal restores the terminal and exits 128+signal.
//! Linux only: the pty is opened through /dev/ptmx.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the UI may take to draw, or to end once told to: generous for a loaded machine,
/// still short enough that a UI that never ends fails the test.
const PATIENCE: Duration = Duration::from_secs(10);

const LEAVE_ALTERNATE_SCREEN: &[u8] = b"\x1b[?1049l";
const MOUSE_CAPTURE_OFF: &[u8] = b"\x1b[?1000l";

/// A pseudo-terminal pair. Both ends are opened close-on-exec so that no other test's child
/// inherits them (an inherited master would keep the terminal alive).
struct Pty {
    master: File,
    slave: File,
}

fn open_pty() -> Pty {
    let master = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/ptmx")
        .unwrap();
    let fd = master.as_raw_fd();
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: fd is an open pty master; ptsname_r writes at most name.len() bytes.
    unsafe {
        assert_eq!(libc::grantpt(fd), 0);
        assert_eq!(libc::unlockpt(fd), 0);
        assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
    }
    // SAFETY: ptsname_r wrote a NUL-terminated path.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) }.to_str().unwrap();
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(name)
        .unwrap();
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize.
    assert_eq!(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) }, 0);
    Pty { master, slave }
}

/// The UI on `data/`, killed and reaped when dropped so that a failed test leaves no process.
struct Ui(Child);

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Ui {
    /// Starts the UI in a new session with stdin, stdout and stderr on `slave`; with
    /// `controlling`, `slave` becomes its controlling terminal (so closing the master sends it
    /// SIGHUP, as tmux kill-session or a dropped SSH connection does). The caller's copy of
    /// `slave` is left open: drop it to leave the UI the only holder.
    fn start(slave: &File, controlling: bool) -> Ui {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_calibscope"));
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/data"))
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if controlling && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // Spawning consumes nothing: `cmd` keeps its copies of the slave until dropped here.
        Ui(cmd.spawn().unwrap())
    }

    fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.0.id()).unwrap()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// The exit status once the process is gone, or None if it is still running after `within`.
    fn gone(&mut self, within: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Reads the master into `out` until `out` contains `needle` (true) or `within` runs out, or the
/// terminal has no more writers (false).
fn read_until(master: &mut File, out: &mut Vec<u8>, needle: &[u8], within: Duration) -> bool {
    let end = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        if out.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut p = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().min(100)).unwrap();
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, ms) } <= 0 {
            continue;
        }
        match master.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EIO: every slave descriptor is closed.
            Err(_) => return false,
        }
    }
}

/// Reads the master until it has been silent for `quiet`: the UI stopped redrawing, its
/// analysis done (the state in which a lost terminal used to leave it spinning).
fn settle(master: &mut File, out: &mut Vec<u8>, quiet: Duration) {
    let end = Instant::now() + PATIENCE;
    loop {
        let before = out.len();
        read_until(master, out, b"\0never\0", quiet);
        if out.len() == before || Instant::now() >= end {
            return;
        }
    }
}

/// Starts the UI on a fresh pty and waits until it has drawn a layer name from `data/`, and
/// with `idle` until it has stopped redrawing.
fn drawn_ui(controlling: bool, idle: bool) -> (Ui, Pty, Vec<u8>) {
    let mut pty = open_pty();
    let ui = Ui::start(&pty.slave, controlling);
    let mut out = Vec::new();
    assert!(
        read_until(&mut pty.master, &mut out, b"conv1_relu", PATIENCE),
        "the UI did not draw within {PATIENCE:?}; it wrote {:?}",
        String::from_utf8_lossy(&out)
    );
    if idle {
        settle(&mut pty.master, &mut out, Duration::from_millis(500));
    }
    (ui, pty, out)
}

fn lflag(tty: &File) -> libc::tcflag_t {
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::tcgetattr(tty.as_raw_fd(), &mut t) }, 0);
    t.c_lflag
}

#[test]
fn the_ui_ends_when_its_controlling_terminal_closes() {
    let (mut ui, pty, _) = drawn_ui(true, true);
    // As tmux kill-session: the terminal's master goes away (the kernel sends SIGHUP).
    drop(pty);
    let status = ui.gone(PATIENCE);
    assert!(
        status.is_some(),
        "the UI still runs {PATIENCE:?} after its terminal closed"
    );
    assert_eq!(status.unwrap().code(), Some(128 + libc::SIGHUP));
}

#[test]
fn the_ui_ends_when_a_terminal_it_does_not_control_closes() {
    // Not its controlling terminal: closing it sends no signal; the UI must notice by itself,
    // idle or while still drawing its analysis.
    for idle in [true, false] {
        let (mut ui, pty, _) = drawn_ui(false, idle);
        drop(pty);
        let status = ui.gone(PATIENCE);
        assert!(
            status.is_some(),
            "idle {idle}: the UI still runs {PATIENCE:?} after its terminal closed"
        );
        // It ends as the hangup it did not receive would have ended it.
        assert_eq!(
            status.unwrap().code(),
            Some(128 + libc::SIGHUP),
            "idle {idle}: {status:?}"
        );
    }
}

#[test]
fn sigterm_ends_the_ui_while_its_terminal_is_going_away() {
    let (mut ui, pty, _) = drawn_ui(false, true);
    drop(pty);
    ui.signal(libc::SIGTERM);
    let status = ui.gone(PATIENCE);
    assert!(
        status.is_some(),
        "the UI still runs {PATIENCE:?} after SIGTERM and the loss of its terminal"
    );
    // Which of the two the UI sees first is a race; either ends it, as that cause would.
    let code = status.unwrap().code();
    assert!(
        code == Some(128 + libc::SIGTERM) || code == Some(128 + libc::SIGHUP),
        "exit status {:?}",
        status
    );
}

#[test]
fn a_stop_signal_restores_the_terminal_and_exits_128_plus_the_signal() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        let mut pty = open_pty();
        let before = lflag(&pty.slave);
        let mut ui = Ui::start(&pty.slave, true);
        let mut out = Vec::new();
        assert!(read_until(
            &mut pty.master,
            &mut out,
            b"conv1_relu",
            PATIENCE
        ));
        assert_ne!(lflag(&pty.slave), before, "the UI did not enter raw mode");
        let drawn = out.len();
        ui.signal(sig);
        assert!(
            read_until(&mut pty.master, &mut out, LEAVE_ALTERNATE_SCREEN, PATIENCE),
            "signal {sig}: the UI did not leave the alternate screen; it wrote {:?}",
            String::from_utf8_lossy(&out[drawn..])
        );
        let status = ui.gone(PATIENCE);
        assert!(status.is_some(), "signal {sig}: the UI still runs");
        let status = status.unwrap();
        assert_eq!(status.code(), Some(128 + sig), "signal {sig}: {status:?}");
        let after = &out[drawn..];
        assert!(
            after
                .windows(MOUSE_CAPTURE_OFF.len())
                .any(|w| w == MOUSE_CAPTURE_OFF),
            "signal {sig}: mouse capture left on"
        );
        assert_eq!(lflag(&pty.slave), before, "signal {sig}: raw mode left on");
    }
}
