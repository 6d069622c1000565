//! The loader on this machine's kernel, attached only to a cgroup the test
//! creates, pinned only in a bpffs the test mounts, each test in a private
//! mount namespace. The sock_ops capture only: fexit would trace every
//! connection of the machine.

use super::*;
use crate::testing::{in_private_mount_namespace, TestPlace};

const SOCK_OPS: CaptureChoice = CaptureChoice::Only(Capture::SockOps);

fn settings(trusted: &str) -> Settings {
    Settings::parse(trusted, 0xf, "80,443").unwrap()
}

#[test]
fn loads_into_a_test_cgroup_updates_and_unloads() {
    in_private_mount_namespace("loader::tests::load_update_unload_in_mount_namespace");
}

#[test]
#[ignore = "run by loads_into_a_test_cgroup_updates_and_unloads in a mount namespace"]
fn load_update_unload_in_mount_namespace() {
    let t = TestPlace::new("load");
    let first = load_at(&t.place, &settings("10.0.0.0/8"), SOCK_OPS).unwrap();
    assert_eq!(first, Loaded::Attached(Capture::SockOps));
    let again = load_at(&t.place, &settings("192.0.2.0/24"), SOCK_OPS).unwrap();
    assert_eq!(again, Loaded::Updated(Capture::SockOps));
    let s = status_at(&t.place).unwrap().expect("attached");
    assert_eq!(s.settings.trusted_text(), "192.0.2.0/24");
    assert_eq!(s.capture, Capture::SockOps);
    assert!(unload_at(&t.place).unwrap());
    assert!(status_at(&t.place).unwrap().is_none());
    assert!(!t.pin("toa_settings").exists());
}

#[test]
fn concurrent_loads_leave_the_programs_attached() {
    in_private_mount_namespace("loader::tests::concurrent_loads_in_mount_namespace");
}

/// Four loads at once, five times over: every one succeeds, and afterwards
/// the programs are attached with every pin in place.
#[test]
#[ignore = "run by concurrent_loads_leave_the_programs_attached in a mount namespace"]
fn concurrent_loads_in_mount_namespace() {
    let t = TestPlace::new("concurrent");
    for round in 0..5 {
        let go = std::sync::Barrier::new(4);
        let results: Vec<Result<Loaded>> = std::thread::scope(|s| {
            let loads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        go.wait();
                        load_at(&t.place, &settings("10.0.0.0/8"), SOCK_OPS)
                    })
                })
                .collect();
            loads.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let attached = results
            .iter()
            .filter(|r| matches!(r, Ok(Loaded::Attached(_))))
            .count();
        for r in &results {
            assert!(r.is_ok(), "round {round}: a load failed: {r:?}");
        }
        assert_eq!(attached, 1, "round {round}: {results:?}");
        assert!(
            status_at(&t.place).unwrap().is_some(),
            "round {round}: nothing attached after {results:?}"
        );
        for name in ["toa_sockops", "toa_getpeername4", "toa_getpeername6"] {
            assert!(t.pin(&format!("link_{name}")).exists(), "round {round}");
        }
        unload_at(&t.place).unwrap();
    }
}
