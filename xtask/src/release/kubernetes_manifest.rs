//! dist/kubernetes/toa-bpf-daemonset.yaml against the Kubernetes API, with
//! no cluster and no kubectl: read into the API's own types (k8s-openapi) and
//! written back, it must be the same document, so a misspelt or unknown field
//! (which the types drop) or a value of the wrong type fails; then what the
//! eBPF mode needs of the pod.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::Value;

const MANIFEST: &str = include_str!("../../../dist/kubernetes/toa-bpf-daemonset.yaml");

/// The manifest as the API reads it; an error naming what it dropped or refused.
fn read(text: &str) -> Result<DaemonSet, String> {
    let document: Value = serde_norway::from_str(text).map_err(|e| format!("YAML: {e}"))?;
    let typed: DaemonSet =
        serde_json::from_value(document.clone()).map_err(|e| format!("DaemonSet: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    if back != document {
        return Err(format!(
            "not a DaemonSet as the API knows it: read and written back it is\n{}",
            serde_json::to_string_pretty(&back).unwrap_or_default()
        ));
    }
    Ok(typed)
}

fn pod(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a pod template")
}

fn container(ds: &DaemonSet) -> &Container {
    let pod = pod(ds);
    assert_eq!(pod.containers.len(), 1, "one container");
    &pod.containers[0]
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// The host path mounted at `mount_path`, and the mount.
fn host_path<'a>(
    ds: &'a DaemonSet,
    mount_path: &str,
) -> (&'a str, &'a k8s_openapi::api::core::v1::VolumeMount) {
    let mount = container(ds)
        .volume_mounts
        .as_ref()
        .and_then(|m| m.iter().find(|m| m.mount_path == mount_path))
        .unwrap_or_else(|| panic!("nothing is mounted at {mount_path}"));
    let volume = pod(ds)
        .volumes
        .as_ref()
        .and_then(|v| v.iter().find(|v| v.name == mount.name))
        .unwrap_or_else(|| panic!("no volume {}", mount.name));
    let path = volume
        .host_path
        .as_ref()
        .unwrap_or_else(|| panic!("{} is not a hostPath", mount.name));
    (&path.path, mount)
}

#[test]
fn the_daemonset_is_what_the_api_reads() {
    read(MANIFEST).unwrap();
}

#[test]
fn misspelt_fields_and_wrong_types_are_refused() {
    let misspelt = MANIFEST.replace("privileged: true", "priviledged: true");
    assert!(read(&misspelt).unwrap_err().contains("not a DaemonSet"));
    let wrong_type = MANIFEST.replace("privileged: true", "privileged: \"yes\"");
    assert!(read(&wrong_type).unwrap_err().contains("DaemonSet:"));
    let unknown = MANIFEST.replace(
        "  hostPID: false",
        "  hostPID: false\n      hostCgroup: true",
    );
    assert!(read(&unknown).is_err());
}

#[test]
fn the_pod_loads_with_the_hosts_cgroup_root_and_bpffs_and_waits() {
    let ds = read(MANIFEST).unwrap();
    let c = container(&ds);
    let privileged = c.security_context.as_ref().and_then(|s| s.privileged);
    assert_eq!(privileged, Some(true), "loading BPF needs a privileged pod");
    let command: Vec<&str> = c
        .command
        .iter()
        .chain(c.args.iter())
        .flatten()
        .map(String::as_str)
        .collect();
    assert_eq!(command, ["/toa", "bpf", "run"]);

    let (cgroup2, mount) = host_path(&ds, "/host/cgroup2");
    assert_eq!(cgroup2, "/sys/fs/cgroup");
    assert_eq!(env(c, "TOA_CGROUP_ROOT"), Some(mount.mount_path.as_str()));

    let (bpffs, mount) = host_path(&ds, "/sys/fs/bpf");
    assert_eq!(bpffs, "/sys/fs/bpf");
    assert_eq!(
        mount.mount_propagation.as_deref(),
        Some("Bidirectional"),
        "a bpffs toa mounts must reach the host, or the pins go with the pod"
    );
    assert_ne!(mount.read_only, Some(true), "pins are written there");
    assert_eq!(host_path(&ds, "/run/toa").0, "/run/toa");

    assert_eq!(
        env(c, "TOA_UNLOAD_ON_STOP"),
        Some("false"),
        "a pod's restart must keep the programs"
    );
    assert!(env(c, "TOA_CGROUP").is_some_and(|p| p.starts_with('/')));
    let p = pod(&ds);
    assert_ne!(p.host_pid, Some(true), "nothing needs the host's PIDs");
}

#[test]
fn every_variable_the_pod_sets_is_one_toa_reads() {
    let ds = read(MANIFEST).unwrap();
    let known = [
        "TOA_CGROUP_ROOT",
        "TOA_CGROUP",
        "TOA_TRUSTED_PROXIES",
        "TOA_PORTS",
        "TOA_FORMATS",
        "TOA_CAPTURE",
        "TOA_UNLOAD_ON_STOP",
    ];
    let source =
        std::fs::read_to_string(crate::host::cache::project_root().join("toa/src/bpf.rs")).unwrap();
    for e in container(&ds).env.iter().flatten() {
        assert!(known.contains(&e.name.as_str()), "{} is not toa's", e.name);
        assert!(
            source.contains(&format!("env = \"{}\"", e.name)),
            "toa bpf run does not read {}",
            e.name
        );
    }
}
