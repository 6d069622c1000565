//! Where xtask keeps what it can rebuild: downloads, builder rootfs, objects.

use std::path::{Path, PathBuf};

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `path` relative to the project root, for messages.
pub fn relative_to_root(path: &Path) -> String {
    let root = project_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `target/` of the workspace (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => project_root().join("target"),
    }
}

/// Artifacts that ship: per-distro tarballs, installers, manifests.
pub fn dist_dir() -> PathBuf {
    target_dir().join("dist")
}

/// Everything that can be rebuilt or re-downloaded; safe to delete at any time.
/// `TOA_CACHE_DIR` moves it (e.g. onto a CI cache volume).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("TOA_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => target_dir().join("cache"),
    }
}

/// A file-system-safe name for a repository URL.
pub fn url_key(url: &str) -> String {
    url.trim_start_matches("https://")
        .trim_start_matches("http://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
