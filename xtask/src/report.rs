//! How a failed command ends: `error: <what failed>` and its causes, one per
//! line, and an exit status that tells a usage mistake (2) from a failure (1).
//!
//! No backtrace is printed for an error: an error is a message for the user
//! (a mistyped name, an unreachable host, a missing tool), whatever
//! `RUST_BACKTRACE` says. `TOA_BACKTRACE=1` asks for one when debugging xtask
//! itself; a panic (a bug) keeps Rust's own report.

use std::fmt;
use std::process::ExitCode;

/// Environment variable that turns on backtraces for errors.
pub const BACKTRACE_VAR: &str = "TOA_BACKTRACE";

/// The command line asked for something that does not exist (exit status 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Fails with a [`UsageError`].
macro_rules! usage_bail {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::report::UsageError(format!($($arg)*))))
    };
}
pub(crate) use usage_bail;

/// Makes anyhow capture backtraces when [`BACKTRACE_VAR`] asks for them.
/// Call first thing in `main`, before any thread starts.
pub fn init() {
    if backtrace_wanted() {
        // anyhow reads RUST_LIB_BACKTRACE before RUST_BACKTRACE.
        std::env::set_var("RUST_LIB_BACKTRACE", "1");
    }
}

fn backtrace_wanted() -> bool {
    std::env::var_os(BACKTRACE_VAR).is_some_and(|v| v != "0" && !v.is_empty())
}

/// Prints `result`'s error, if any, and returns the exit status.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprint!("{}", render(&err));
            if backtrace_wanted() {
                eprintln!("\nbacktrace:\n{}", err.backtrace());
            }
            ExitCode::from(status(&err))
        }
    }
}

/// 2 when any error in the chain is a [`UsageError`], else 1.
pub fn status(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<UsageError>()) {
        2
    } else {
        1
    }
}

/// `error: ...` and one `  caused by: ...` line per further cause; empty
/// causes and causes already said by the line before are left out.
pub fn render(err: &anyhow::Error) -> String {
    let mut lines: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || lines.last().is_some_and(|last| last.contains(text)) {
            continue;
        }
        lines.push(text.to_string());
    }
    if lines.is_empty() {
        lines.push("failed (no message)".into());
    }
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let label = if i == 0 { "error: " } else { "  caused by: " };
        let indent = " ".repeat(label.len());
        for (j, part) in line.lines().enumerate() {
            out.push_str(if j == 0 { label } else { &indent });
            out.push_str(part);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[derive(Debug)]
    struct Empty;
    impl fmt::Display for Empty {
        fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
            Ok(())
        }
    }
    impl std::error::Error for Empty {}

    #[test]
    fn causes_one_per_line_without_empty_or_repeated_ones() {
        let err = anyhow::Error::new(Empty)
            .context("connection refused")
            .context("GET http://h/x: connection refused")
            .context("listing the kernels of debian-12");
        assert_eq!(
            render(&err),
            "error: listing the kernels of debian-12\n  caused by: GET http://h/x: connection refused\n"
        );
        assert_eq!(status(&err), 1);
    }

    #[test]
    fn usage_errors_exit_2_even_under_context() {
        let err = (|| -> anyhow::Result<()> { usage_bail!("unknown distro \"x\"") })()
            .context("test step failed")
            .unwrap_err();
        assert_eq!(status(&err), 2);
        assert_eq!(
            render(&err),
            "error: test step failed\n  caused by: unknown distro \"x\"\n"
        );
    }

    #[test]
    fn multi_line_messages_stay_aligned() {
        let err =
            anyhow::anyhow!("missing host tools; install them with:\n    sudo apt-get install x");
        assert_eq!(
            render(&err),
            "error: missing host tools; install them with:\n           sudo apt-get install x\n"
        );
    }

    #[test]
    fn an_error_with_no_text_still_says_something() {
        assert_eq!(
            render(&anyhow::Error::new(Empty)),
            "error: failed (no message)\n"
        );
    }
}
