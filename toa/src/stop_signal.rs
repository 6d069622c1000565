//! Waiting for the signals that stop a service (SIGTERM from a container
//! runtime or systemd, SIGINT from a terminal).
//!
//! The signals are blocked and taken with sigwait rather than caught by a
//! handler: the process may be a container's PID 1, for which the kernel
//! drops any signal left to its default action, but never a blocked one.

use std::fmt;

use anyhow::{bail, Result};

/// The stop signals, blocked in this thread (and in threads it starts) from
/// [`StopSignals::block`] on.
pub struct StopSignals {
    set: libc::sigset_t,
}

/// A signal that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub libc::c_int);

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            libc::SIGTERM => f.write_str("SIGTERM"),
            libc::SIGINT => f.write_str("SIGINT"),
            n => write!(f, "signal {n}"),
        }
    }
}

impl StopSignals {
    /// Blocks SIGTERM and SIGINT: from now on they wait for [`Self::wait`].
    pub fn block() -> Result<StopSignals> {
        Self::block_these(&[libc::SIGTERM, libc::SIGINT])
    }

    fn block_these(signals: &[libc::c_int]) -> Result<StopSignals> {
        // SAFETY: sigemptyset/sigaddset fill a sigset_t we own; pthread_sigmask
        // reads it and changes this thread's mask only.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in signals {
                libc::sigaddset(&mut set, *s);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                bail!(
                    "blocking the stop signals: {}",
                    std::io::Error::from_raw_os_error(rc)
                );
            }
            Ok(StopSignals { set })
        }
    }

    /// Waits until one of the signals arrives (at once if one is pending).
    pub fn wait(&self) -> Result<Signal> {
        let mut signal: libc::c_int = 0;
        // SAFETY: self.set is an initialised sigset_t; sigwait writes one int.
        let rc = unsafe { libc::sigwait(&self.set, &mut signal) };
        if rc != 0 {
            bail!(
                "waiting for a stop signal: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        Ok(Signal(signal))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_sent_while_blocked_is_waited_for() {
        // SIGUSR2 in a thread of its own: the test harness's other threads
        // keep their masks, and raise() signals the calling thread.
        let got = std::thread::spawn(|| {
            let stop = StopSignals::block_these(&[libc::SIGUSR2]).unwrap();
            // SAFETY: raise has no preconditions; SIGUSR2 is blocked here, so
            // it stays pending instead of killing the process.
            assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
            stop.wait().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(got, Signal(libc::SIGUSR2));
    }

    #[test]
    fn signals_are_named() {
        assert_eq!(Signal(libc::SIGTERM).to_string(), "SIGTERM");
        assert_eq!(Signal(libc::SIGINT).to_string(), "SIGINT");
        assert_eq!(Signal(libc::SIGUSR2).to_string(), "signal 12");
    }
}
