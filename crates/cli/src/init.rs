//! PID 1 duties, for `serve` as a container's entrypoint.
//!
//! In a container the entrypoint is PID 1: the kernel gives it every orphaned process to reap
//! (PostgreSQL backends whose postmaster was killed, for one) and does not apply default signal
//! actions to it. Reaping with `waitpid(-1)` inside the server would steal the exit statuses the
//! async runtime waits for (postgres, initdb, pg_basebackup), so PID 1 stays a small init
//! instead: it starts the same binary with the same arguments as its only child, forwards the
//! termination signals to it, reaps every process that ends up under it, and exits with the
//! child's exit code (128 + signal when the child was killed). The child is an ordinary
//! `serve` (its PID is not 1), so SIGTERM/SIGINT there mean a PostgreSQL fast shutdown, as
//! outside a container. No threads and no async runtime here: signal-hook's handlers write to a
//! pipe this loop waits on.

use std::process::{Command, ExitCode};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

/// Signals passed on to the server; SIGCHLD wakes the reaper.
const FORWARDED: [i32; 6] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2];

/// True when this process is PID 1 of its PID namespace (a container's entrypoint).
pub(crate) fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Runs this binary again with the same arguments as a child and acts as its init until it
/// exits. Called before anything else starts (no threads exist yet).
pub(crate) fn run() -> anyhow::Result<ExitCode> {
    // Real handlers, not a blocked mask: the kernel drops signals that PID 1 leaves at their
    // default action, and a blocked mask would be inherited by the server. Installed before the
    // child exists, so neither a signal nor the child's exit can be missed; exec resets them.
    let mut signals = Signals::new(FORWARDED.iter().copied().chain([SIGCHLD]))
        .context("install the init process's signal handlers")?;
    let exe = std::env::current_exe().context("find this executable to start the server")?;
    let child = Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .spawn()
        .with_context(|| format!("start the server ({})", exe.display()))?;
    let server = Pid::from_raw(i32::try_from(child.id()).context("child pid out of range")?);
    loop {
        if let Some(code) = reap(server)? {
            return Ok(ExitCode::from(code));
        }
        for sig in signals.wait() {
            if sig != SIGCHLD {
                if let Ok(sig) = Signal::try_from(sig) {
                    // The server may have just exited; the next reap tells.
                    let _ = kill(server, sig);
                }
            }
        }
    }
}

/// Reaps every child that has exited; returns the server's exit code once it is among them.
fn reap(server: Pid) -> anyhow::Result<Option<u8>> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == server => {
                return Ok(Some(u8::try_from(code).unwrap_or(1)));
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == server => {
                return Ok(Some(
                    128u8.saturating_add(u8::try_from(sig as i32).unwrap_or(0)),
                ));
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Err(Errno::EINTR) | Ok(_) => {}
            Err(Errno::ECHILD) => {
                anyhow::bail!("the server process disappeared without an exit status")
            }
            Err(e) => return Err(e).context("reap child processes"),
        }
    }
}
