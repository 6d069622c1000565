//! What a package's payload entry is, for both readers (`.deb` in
//! [`crate::repo::deb`], RPM in [`crate::repo::rpm_payload`]): the lab and
//! the headers cache walk either kind with one visitor.

/// What one entry of a package's payload is.
pub enum EntryKind {
    File,
    Dir,
    Symlink(String),
    Other,
}
