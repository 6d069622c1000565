//! What is compiled on the host and checked before it ships: the Rust core as
//! a kernel object and its audit, the checks on a built toa.ko, and the
//! static programs the lab guest and the release run.

pub mod audit;
pub mod kmod;
pub mod lab_programs;
pub mod modcheck;
pub mod operator_cli;
