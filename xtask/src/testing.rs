//! What the tests of several modules share.

use std::path::PathBuf;

/// A fresh, empty directory for one test: `toa-<name>-<pid>` in the system's
/// temporary directory, emptied first if an earlier run left it. `name` is
/// unique among the tests, which run in parallel in one process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("toa-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}
