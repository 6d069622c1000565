//! Replays the fuzz target's seeds and every input it ever flagged
//! (`fuzz/regressions/`, written by `cargo xtask fuzz`) through the same
//! checks, in plain `cargo test`: a fixed finding stays fixed.

#[path = "../fuzz/src/check.rs"]
mod check;

use std::path::Path;

fn replay(dir: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check::one(&data));
        assert!(outcome.is_ok(), "{} fails the fuzz checks", path.display());
        n += 1;
    }
    n
}

#[test]
fn fuzz_seeds_pass() {
    assert!(replay("seeds") >= 5, "the seed corpus is missing");
}

#[test]
fn fuzz_regressions_stay_fixed() {
    replay("regressions");
}

#[test]
fn the_reference_follows_the_wire_rules() {
    // What the fuzz checks compare the ABI with.
    let area = [254u8, 0, 1, 1];
    assert!(matches!(
        check::reference_scan(&area, 0xf),
        check::Reference::Malformed
    ));
    let v4 = [254u8, 8, 0x9c, 0x41, 198, 51, 100, 7];
    assert!(matches!(
        check::reference_scan(&v4, 0xf),
        check::Reference::Toa { kind: 254, .. }
    ));
    assert!(matches!(
        check::reference_scan(&v4, 0x2),
        check::Reference::Nothing
    ));
}
