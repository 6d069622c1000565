//! The lines the host reads from the serial console. Each is written and
//! flushed whole, so kernel messages on the same console can only land
//! between lines, never inside one of ours.

use std::io::Write;

use crate::stats::Snapshot;

pub const PREFIX: &str = "TOA-LAB";

/// A message must stay on one line for the host's parser.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn emit(line: String) {
    let mut out = std::io::stdout().lock();
    // Nothing useful can be done if the console is gone.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn result_line(scenario: &str, outcome: &Result<String, String>) -> String {
    match outcome {
        Ok(detail) => format!("{PREFIX} RESULT {scenario} PASS {}", one_line(detail)),
        Err(why) => format!("{PREFIX} RESULT {scenario} FAIL {}", one_line(why)),
    }
}

pub fn result(scenario: &str, outcome: &Result<String, String>) {
    emit(result_line(scenario, outcome));
}

pub fn start(expect: &str, kernel: &str) {
    emit(format!("{PREFIX} START expect={expect} kernel={kernel}"));
}

/// Scenarios that do not apply to this mode: not a RESULT line, so PASS/FAIL
/// counts stay what they claim.
pub fn skip(scenario: &str, why: &str) {
    emit(format!("{PREFIX} SKIP {scenario} {}", one_line(why)));
}

/// A scenario this kernel cannot run (a feature it lacks): neither a pass
/// nor a failure, and said so, with what is missing.
pub fn not_offered(scenario: &str, why: &str) {
    emit(format!("{PREFIX} NOT-OFFERED {scenario} {}", one_line(why)));
}

pub fn stats(snapshot: &Snapshot) {
    emit(format!("{PREFIX} STATS {snapshot}"));
}

/// Where a long scenario has got to (the host shows it while it waits).
pub fn progress(scenario: &str, what: &str) {
    emit(format!("{PREFIX} PROGRESS {scenario} {}", one_line(what)));
}

/// One benchmark figure set (`key=value ...`), for the host to aggregate.
pub fn bench(fields: &str) {
    emit(format!("{PREFIX} BENCH {}", one_line(fields)));
}

pub fn done(pass: usize, fail: usize) {
    emit(format!("{PREFIX} DONE pass={pass} fail={fail}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_result_line_formats() {
        assert_eq!(
            result_line("v4-254-8", &Ok("accept=x".into())),
            "TOA-LAB RESULT v4-254-8 PASS accept=x"
        );
        assert_eq!(
            result_line("stats", &Err("a\nb\n".into())),
            "TOA-LAB RESULT stats FAIL a; b"
        );
    }
}
