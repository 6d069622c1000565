//! One opaque error type: every failure of the simulator ends up as one line
//! (the lab's serial console, a self-test's report), so a readable message is
//! all a caller needs.

use std::fmt;

#[derive(Debug)]
pub struct Error(String);

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Prefixes an error with what was being attempted, so a timeout deep in the
/// TCP code still says which scenario and which step it belonged to.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error(format!("{what}: {e}")))
    }
}

/// Builds an `Error` with `format!` syntax.
#[macro_export]
#[doc(hidden)]
macro_rules! __sim_err {
    ($($arg:tt)*) => { $crate::error::Error::new(format!($($arg)*)) };
}
pub use crate::__sim_err as sim_err;
