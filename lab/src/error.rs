//! The simulator's error type, used by the whole lab: every failure ends up
//! as a line on the serial console, so a readable message is all a caller
//! needs.

pub(crate) use toa_sim::error::sim_err as lab_err;
pub use toa_sim::error::{Context, Error, Result};
