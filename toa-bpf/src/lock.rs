//! One load or unload at a time: an exclusive flock(2) on a file under
//! /run/toa, held until the guard drops (or the process dies, whatever kills
//! it: the kernel releases the lock with the last descriptor).
//!
//! Two loads that both found nothing attached would each start over from
//! nothing: one removes the pins the other just made, and both can report
//! success with nothing attached.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};

pub struct Lock {
    _file: File,
}

impl Lock {
    /// Waits for the lock at `path` (created, mode 0600, with its directory).
    pub fn take(path: &Path) -> Result<Lock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        loop {
            // SAFETY: a valid descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Lock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
}
