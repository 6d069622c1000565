//! Compiles the BPF programs (bpf/toa.bpf.c) into OUT_DIR with clang, so the
//! loader can embed the object with include_bytes!. One object serves every
//! kernel >= 5.10: the cgroup programs read only UAPI context fields, and the
//! fexit capture's few kernel fields are located at load time by CO-RE.
//!
//! bpf/toa.bpf.c is also the source of the layouts the loader shares with the
//! programs: from the object's BTF this writes the assertions that
//! src/layout_checks.rs makes of the Rust side (build/layout_checks.rs).

#[path = "build/btf.rs"]
mod btf;
#[path = "build/layout_checks.rs"]
mod layout_checks;

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "bpf/toa.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("toa.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    // <linux/bpf.h> includes <asm/types.h>, which Debian keeps under the
    // host's multiarch directory; the BPF target has none of its own.
    let multiarch = format!("/usr/include/{}-linux-gnu", host_arch());
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", SOURCE, "-o"])
        .arg(&object)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!("`{clang}` failed to compile {SOURCE} ({s})")),
        Err(e) => fail(&format!(
            "cannot run `{clang}` ({e}): the BPF programs are compiled with clang; \
             install Debian's package `clang` (or set CLANG to a clang binary)"
        )),
    }

    let bytes = std::fs::read(&object)
        .unwrap_or_else(|e| fail(&format!("reading {}: {e}", object.display())));
    let checks = layout_checks::generate(&bytes)
        .unwrap_or_else(|e| fail(&format!("the layouts of {SOURCE}: {e}")));
    let path = out.join("layout_checks.rs");
    std::fs::write(&path, checks)
        .unwrap_or_else(|e| fail(&format!("writing {}: {e}", path.display())));
}

fn host_arch() -> String {
    let host = std::env::var("HOST").unwrap_or_default();
    host.split('-').next().unwrap_or("x86_64").to_string()
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
