//! Kernel log lines written after a point in time, read from /dev/kmsg: how a
//! scenario sees what the module said about a parameter it refused.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

use crate::error::{Context, Result};

const KMSG: &str = "/dev/kmsg";

pub struct Cursor {
    file: File,
}

impl Cursor {
    /// Starts at the end of the log: only later messages are read.
    pub fn at_end() -> Result<Cursor> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(KMSG)
            .context(format!("opening {KMSG}"))?;
        file.seek(SeekFrom::End(0))
            .context(format!("seeking to the end of {KMSG}"))?;
        Ok(Cursor { file })
    }

    /// Messages logged since the cursor was made (or last read).
    pub fn read_new(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(msg) = message(&buf[..n]) {
                        out.push(msg);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // A record overwritten before we read it: skip on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => return Err(e).context(format!("reading {KMSG}")),
            }
        }
        Ok(out)
    }
}

/// Words of a kernel log line that mean the kernel caught itself doing
/// something wrong (the host fails a run on the same words in dmesg).
const ALARMS: &[&str] = &[
    "WARNING:",
    "BUG:",
    "kernel BUG",
    "Oops",
    "general protection",
    "Call Trace",
    "use-after-free",
    "Kernel panic",
];

/// The first alarming line of `lines`, if any.
pub fn first_alarm(lines: &[String]) -> Option<&str> {
    lines
        .iter()
        .map(String::as_str)
        .find(|l| ALARMS.iter().any(|a| l.contains(a)))
}

/// The text of one record, `prio,seq,ts,flags;message\n key=value...`.
fn message(record: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(record);
    let (_, rest) = text.split_once(';')?;
    Some(rest.lines().next().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_record_text() {
        assert_eq!(
            message(b"3,1234,5678901,-;toa: trusted_proxies=x rejected\n SUBSYSTEM=x\n").as_deref(),
            Some("toa: trusted_proxies=x rejected")
        );
        assert_eq!(message(b"garbage"), None);
    }

    #[test]
    fn test_first_alarm_names_the_warning() {
        let lines: Vec<String> = [
            "toa: loaded",
            "------------[ cut here ]------------",
            "WARNING: CPU: 0 PID: 81 at net/core/sock.c:2100 __sk_destruct+0x1c0/0x1e0",
            "BUG: unable to handle page fault for address: ffffffffc0a01234",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            first_alarm(&lines),
            Some("WARNING: CPU: 0 PID: 81 at net/core/sock.c:2100 __sk_destruct+0x1c0/0x1e0")
        );
        assert_eq!(first_alarm(&lines[..2]), None);
    }
}
