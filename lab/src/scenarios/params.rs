//! Module parameters written at run time, as an operator does with sysfs.

use crate::error::{lab_err, Result};
use crate::kmsg::Cursor;
use crate::system;

/// A write of `bad` to the parameter at `path` that the module must refuse
/// with EINVAL and a kernel message naming `name` and "rejected", keeping
/// `in_force`.
pub fn refused_write(path: &str, name: &str, bad: &str, in_force: &str) -> Result<()> {
    let mut log = Cursor::at_end()?;
    match system::write_param(path, bad) {
        Ok(()) => return Err(lab_err!("writing {bad:?} to {path} was accepted")),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(lab_err!("writing {bad:?} to {path}: {e}, expected EINVAL")),
    }
    let said = log.read_new()?;
    if !said
        .iter()
        .any(|l| l.contains(name) && l.contains("rejected"))
    {
        return Err(lab_err!(
            "writing {bad:?} failed but the kernel said nothing about it: {said:?}"
        ));
    }
    let now = system::read_param(path)?;
    if now != in_force {
        return Err(lab_err!(
            "after the refused {bad:?}, {path} reads {now:?} instead of {in_force:?}"
        ));
    }
    Ok(())
}
