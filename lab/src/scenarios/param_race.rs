//! param-write-during-rmmod: the module's exit frees what the setters of
//! `trusted_proxies` and `ports` allocate, while their sysfs files stay
//! writable until the module is gone. Two threads keep writing both
//! parameters while rmmod and insmod alternate; exit must take the
//! parameter lock (a write between the free and the files' removal would
//! free the list twice or leak it). The kernel log must stay clean (on the
//! sanitizer kernel KASAN watches the frees).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{load_again, quiet_kernel, rmmod, Shared};
use crate::error::{Context, Result};
use crate::kmsg::Cursor;
use crate::lab::Lab;

pub const NAME: &str = "param-write-during-rmmod";
/// rmmod/insmod cycles with the writers running.
const CYCLES: u32 = 20;

pub fn run(lab: &Lab, ctx: &Shared) -> Result<String> {
    let mut log = Cursor::at_end()?;
    let outcome = race(lab, ctx);
    let restored = load_again(lab, ctx).context("loading the module again");
    std::thread::sleep(Duration::from_millis(300));
    let detail = quiet_kernel(&log.read_new()?, outcome)?;
    restored?;
    // Leave the parameters as the first load had them.
    for (name, value) in [
        ("trusted_proxies", ctx.param("trusted_proxies")),
        ("ports", ctx.param("ports")),
    ] {
        let _ = std::fs::write(
            format!("/sys/module/toa/parameters/{name}"),
            value.unwrap_or(""),
        );
    }
    Ok(detail)
}

fn race(lab: &Lab, ctx: &Shared) -> Result<String> {
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = [
        ("trusted_proxies", ["10.0.0.0/8,fd00::/64", ""]),
        ("ports", ["8080,8081", ""]),
    ]
    .into_iter()
    .map(|(name, values)| {
        let (stop, written) = (stop.clone(), written.clone());
        std::thread::spawn(move || {
            let path = format!("/sys/module/toa/parameters/{name}");
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // ENOENT while unloaded, EBUSY while exiting: both expected.
                if std::fs::write(&path, values[i % 2]).is_ok() {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        })
    })
    .collect();
    let cycled = (|| -> Result<()> {
        for cycle in 1..=CYCLES {
            rmmod(lab).context(format!("rmmod in cycle {cycle}"))?;
            load_again(lab, ctx).context(format!("insmod in cycle {cycle}"))?;
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    cycled?;
    Ok(format!(
        "{CYCLES} rmmod/insmod cycles with two threads writing trusted_proxies and ports ({} writes taken)",
        written.load(Ordering::Relaxed)
    ))
}
