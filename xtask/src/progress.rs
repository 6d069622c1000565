//! Progress of long work (downloads, the builder image, module builds, the
//! sanitizer kernel). On a terminal: indicatif bars and spinners. Anywhere
//! else (CI, `2>&1 | cat`, a log file) a bar is hidden and plain lines take its
//! place: one at each step, and one at least every [`EVERY`] while a single
//! command runs (a `docker commit`, an `apt-get install`), so a
//! log never goes silent for long enough to look hung.

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// The longest a log stays silent while work runs: under the 30 s a log
/// reader is promised, with room for a busy machine's scheduling.
pub const EVERY: Duration = Duration::from_secs(25);

/// What a bar's position counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Steps,
    Bytes,
}

/// Whether progress is shown as plain lines: stderr is not a terminal.
pub fn plain() -> bool {
    plain_on(&std::io::stderr())
}

fn plain_on(stream: &impl IsTerminal) -> bool {
    !stream.is_terminal()
}

/// A spinner for one job: `prefix [elapsed] message` on a terminal; plain
/// lines at each [`step`] and every [`EVERY`] otherwise.
pub fn spinner(prefix: &str) -> ProgressBar {
    let bar = if plain() {
        hidden(None)
    } else {
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                .expect("template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    };
    bar.set_prefix(prefix.to_string());
    if bar.is_hidden() {
        watch(&bar, EVERY, Unit::Steps, std::io::stderr());
    }
    bar
}

/// A bar of `len` steps drawn with `template`; plain lines at each [`advance`]
/// otherwise (no ticker: the jobs it counts have their own).
pub fn counter(prefix: &str, len: u64, template: &str) -> ProgressBar {
    let bar = if plain() {
        hidden(Some(len))
    } else {
        ProgressBar::new(len).with_style(ProgressStyle::with_template(template).expect("template"))
    };
    bar.set_prefix(prefix.to_string());
    bar
}

/// A bar of `total` bytes (a spinner when the size is unknown) named `name`;
/// plain lines every [`EVERY`] otherwise.
pub fn bytes(name: &str, total: Option<u64>) -> ProgressBar {
    let bar = if plain() {
        hidden(total)
    } else {
        let style = match total {
            Some(_) => ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .expect("template")
            .progress_chars("=> "),
            None => ProgressStyle::with_template("{spinner} {prefix} {bytes} ({bytes_per_sec})")
                .expect("template"),
        };
        ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr()).with_style(style)
    };
    bar.set_prefix(name.to_string());
    if bar.is_hidden() {
        watch(&bar, EVERY, Unit::Bytes, std::io::stderr());
    }
    bar
}

fn hidden(len: Option<u64>) -> ProgressBar {
    ProgressBar::with_draw_target(len, ProgressDrawTarget::hidden())
}

/// `bar` is at step `n` of `of`, doing `what`: shown on a terminal, a line in
/// a log.
pub fn step(bar: &ProgressBar, n: usize, of: usize, what: &str) {
    bar.set_length(of as u64);
    bar.set_position(n as u64);
    bar.set_message(what.to_string());
    if bar.is_hidden() {
        eprintln!("{}", line(bar, Unit::Steps));
    }
}

/// One more of `bar`'s steps is done.
pub fn advance(bar: &ProgressBar) {
    bar.inc(1);
    if bar.is_hidden() {
        eprintln!("{}", line(bar, Unit::Steps));
    }
}

/// `[prefix] n/N elapsed 3m05s: message`, the plain form of a bar.
pub fn line(bar: &ProgressBar, unit: Unit) -> String {
    let mut out = format!("[{}]", bar.prefix());
    let pos = bar.position();
    match (unit, bar.length()) {
        (Unit::Steps, Some(len)) => out.push_str(&format!(" {pos}/{len}")),
        (Unit::Steps, None) => {}
        (Unit::Bytes, Some(len)) => {
            out.push_str(&format!(" {}/{}", HumanBytes(pos), HumanBytes(len)))
        }
        (Unit::Bytes, None) => out.push_str(&format!(" {}", HumanBytes(pos))),
    }
    out.push_str(&format!(" elapsed {}", elapsed(bar.elapsed())));
    let message = bar.message();
    if !message.is_empty() {
        out.push_str(": ");
        out.push_str(&message);
    }
    out
}

/// `3m05s`: minutes and seconds, whatever the length.
pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

/// Writes `bar`'s [`line`] to `out` every `every` until the bar is finished
/// or dropped: the steps of a build print their own lines, this covers the
/// minutes a single command may run without one.
fn watch(bar: &ProgressBar, every: Duration, unit: Unit, mut out: impl Write + Send + 'static) {
    let weak = bar.downgrade();
    std::thread::spawn(move || loop {
        std::thread::sleep(every);
        let Some(bar) = weak.upgrade() else {
            return;
        };
        if bar.is_finished() {
            return;
        }
        if writeln!(out, "{}", line(&bar, unit)).is_err() {
            return;
        }
    });
}

/// A bar as a log shows it, named `prefix`, whose ticker writes to the
/// returned sink every `every`.
#[cfg(test)]
pub fn watched(prefix: &str, every: Duration) -> (ProgressBar, tests::Sink) {
    let bar = hidden(None);
    bar.set_prefix(prefix.to_string());
    let sink = tests::Sink::default();
    watch(&bar, every, Unit::Steps, sink.clone());
    (bar, sink)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// Lines written by a ticker, shared with the test.
    #[derive(Clone, Default)]
    pub struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        pub fn lines(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(str::to_string).collect()
        }
    }

    #[test]
    fn a_blocked_step_still_prints_within_the_interval() {
        let every = Duration::from_millis(100);
        let (bar, sink) = watched("debian-12 prepare", every);
        bar.set_message("docker commit");
        // The step blocks for 3.5 intervals and prints nothing itself.
        let start = Instant::now();
        std::thread::sleep(every * 7 / 2);
        let lines = sink.lines();
        assert!(lines.len() >= 2, "{lines:?} after {:?}", start.elapsed());
        for l in &lines {
            assert!(
                l.starts_with("[debian-12 prepare] elapsed 0m00s: docker commit"),
                "{l}"
            );
        }
        // Finished: the ticker stops.
        bar.finish_and_clear();
        std::thread::sleep(every * 2);
        let done = sink.lines().len();
        std::thread::sleep(every * 3);
        assert_eq!(sink.lines().len(), done);
    }

    #[test]
    fn a_dropped_bar_stops_its_ticker() {
        let bar = hidden(Some(4));
        let sink = Sink::default();
        let every = Duration::from_millis(50);
        watch(&bar, every, Unit::Steps, sink.clone());
        drop(bar);
        std::thread::sleep(every * 4);
        assert!(sink.lines().is_empty(), "{:?}", sink.lines());
    }

    #[test]
    fn lines_say_phase_count_elapsed_and_message() {
        let bar = hidden(None);
        bar.set_prefix("prepare");
        step(&bar, 2, 5, "install the kernel headers");
        assert_eq!(
            line(&bar, Unit::Steps),
            "[prepare] 2/5 elapsed 0m00s: install the kernel headers"
        );
        let download = hidden(Some(3 << 20));
        download.set_prefix("Packages.xz");
        download.set_position(1 << 20);
        assert_eq!(
            line(&download, Unit::Bytes),
            "[Packages.xz] 1.00 MiB/3.00 MiB elapsed 0m00s"
        );
        assert_eq!(elapsed(Duration::from_secs(185)), "3m05s");
        assert_eq!(elapsed(Duration::from_secs(3725)), "62m05s");
    }

    #[test]
    fn a_pipe_gets_plain_lines() {
        let (_reader, writer) = std::io::pipe().unwrap();
        assert!(plain_on(&std::os::fd::OwnedFd::from(writer)));
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(plain_on(&file));
    }

    #[test]
    fn a_terminal_gets_bars() {
        // The master side of a new pseudo-terminal is a terminal.
        let pty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/ptmx")
            .expect("opening /dev/ptmx");
        assert!(!plain_on(&pty));
    }
}
