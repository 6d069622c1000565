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
    assert_eq!(s.problems, Vec::<String>::new());
    assert_eq!(s.cgroup.as_deref(), Some(t.cgroup.as_path()));
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

#[test]
fn a_link_detached_by_other_means_is_reported_and_load_attaches_again() {
    in_private_mount_namespace("loader::tests::detached_link_in_mount_namespace");
}

/// The pins stay, the getpeername4 link is detached under them (as
/// `bpftool link detach` would): status names it, and a load attaches
/// afresh instead of updating maps that no program reads.
#[test]
#[ignore = "run by a_link_detached_by_other_means_is_reported_and_load_attaches_again"]
fn detached_link_in_mount_namespace() {
    use std::os::unix::fs::MetadataExt;
    let t = TestPlace::new("detached");
    load_at(&t.place, &settings("10.0.0.0/8"), SOCK_OPS).unwrap();
    let link = t.pin("link_toa_getpeername4");
    let info = crate::link::pinned_info(&link).unwrap();
    let cgroup_id = std::fs::metadata(&t.cgroup).unwrap().ino();
    assert_eq!(info.cgroup_id, Some(cgroup_id));
    assert_eq!(
        info.attach_type,
        crate::link::ATTACH_CGROUP_INET4_GETPEERNAME
    );

    crate::link::detach_pinned(&link).unwrap();
    assert!(link.exists(), "the pin stays");
    let s = status_at(&t.place).unwrap().expect("pins exist");
    assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    assert!(
        s.problems[0].contains("toa_getpeername4 is detached"),
        "{:?}",
        s.problems
    );

    let again = load_at(&t.place, &settings("10.0.0.0/8"), SOCK_OPS).unwrap();
    assert_eq!(again, Loaded::Attached(Capture::SockOps));
    let s = status_at(&t.place).unwrap().expect("attached");
    assert_eq!(s.problems, Vec::<String>::new());
    let info = crate::link::pinned_info(&link).unwrap();
    assert_eq!(info.cgroup_id, Some(cgroup_id));
}

#[test]
fn a_link_attached_to_another_cgroup_is_reported() {
    in_private_mount_namespace("loader::tests::other_cgroup_in_mount_namespace");
}

#[test]
#[ignore = "run by a_link_attached_to_another_cgroup_is_reported"]
fn other_cgroup_in_mount_namespace() {
    let t = TestPlace::new("elsewhere");
    load_at(&t.place, &settings(""), SOCK_OPS).unwrap();
    let sibling = t.cgroup.with_extension("other");
    std::fs::create_dir(&sibling).unwrap();
    let mut elsewhere = t.place.clone();
    elsewhere.cgroup = Some(sibling.clone());
    let s = status_at(&elsewhere).unwrap().expect("pins exist");
    let _ = std::fs::remove_dir(&sibling);
    assert_eq!(s.problems.len(), 3, "{:?}", s.problems);
    assert!(s.problems[0].contains("toa_sockops is attached to cgroup id"));
}
