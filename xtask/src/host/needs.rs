//! What a command needs from the machine, in the words preflight provides:
//! the Rust targets and components of rust-toolchain.toml, and host tools,
//! each with the Debian package that has it. Each command says its own
//! needs (`Args::needs`, next to its `run`); preflight provides them.

/// One way to see that a tool is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A command on PATH (or in /usr/sbin, /sbin).
    Command(&'static str),
    /// An absolute file path.
    File(&'static str),
    /// A module that `python3` on PATH can import.
    PythonModule(&'static str),
}

/// A host tool and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// Any one of these present is enough.
    pub probes: &'static [Probe],
    pub package: &'static str,
}

/// A command on PATH from a Debian package.
macro_rules! command {
    ($name:literal from $package:literal) => {
        Tool {
            probes: &[Probe::Command($name)],
            package: $package,
        }
    };
}

/// `cargo xtask ci --check --lint`: shellcheck, and actionlint (from PyPI,
/// into a virtualenv, unless one is on PATH).
pub const LINT: &[Tool] = &[
    command!("shellcheck" from "shellcheck"),
    Tool {
        probes: &[
            Probe::Command("actionlint"),
            Probe::PythonModule("ensurepip"),
        ],
        package: "python3-venv",
    },
];

/// The host tests: initramfs checks (cpio), the simulator in a network
/// namespace (unshare, ip), the installers under shellcheck.
pub const HOST_TESTS: &[Tool] = &[
    command!("cpio" from "cpio"),
    command!("unshare" from "util-linux"),
    command!("ip" from "iproute2"),
    command!("shellcheck" from "shellcheck"),
    BPF_COMPILER,
];

/// The container test: the simulator's namespace and veth (ip, nsenter,
/// sysctl), the pinned links read independently of toa (bpftool). The
/// docker engine is a service, not a tool to install: it is asked for first.
pub const CONTAINER_TEST: &[Tool] = &[
    command!("ip" from "iproute2"),
    command!("nsenter" from "util-linux"),
    command!("sysctl" from "procps"),
    command!("bpftool" from "bpftool"),
    BPF_COMPILER,
];

/// toa-bpf's build script compiles the BPF programs with clang.
pub const BPF_COMPILER: Tool = command!("clang" from "clang");

/// Reading a release's repository: InRelease signatures.
pub const REPOSITORY: &[Tool] = &[
    command!("gpgv" from "gpgv"),
    Tool {
        probes: &[Probe::File(
            "/usr/share/keyrings/debian-archive-keyring.gpg",
        )],
        package: "debian-archive-keyring",
    },
];

/// The builder: a debootstrap rootfs of the release, entered with unshare
/// (or imported into docker/podman).
pub const BUILDER: &[Tool] = &[
    command!("debootstrap" from "debootstrap"),
    command!("unshare" from "util-linux"),
    Tool {
        probes: &[Probe::File("/etc/ssl/certs/ca-certificates.crt")],
        package: "ca-certificates",
    },
];

/// Booting a kernel.
pub const VM: &[Tool] = &[
    command!("qemu-system-x86_64" from "qemu-system-x86"),
    BPF_COMPILER,
];

/// Booting an arm64 kernel (`--arch aarch64`, and the test command's arm64 run).
pub const VM_AARCH64: &[Tool] = &[command!("qemu-system-aarch64" from "qemu-system-arm")];

/// Building the sanitizer kernel (`vm-test --sanitizers`): kbuild's host
/// tools and libraries (the compiler comes from the release's TOML).
pub const KERNEL_BUILD: &[Tool] = &[
    command!("make" from "make"),
    command!("bc" from "bc"),
    command!("bison" from "bison"),
    command!("flex" from "flex"),
    command!("perl" from "perl"),
    Tool {
        probes: &[Probe::File("/usr/include/gelf.h")],
        package: "libelf-dev",
    },
    Tool {
        probes: &[Probe::File("/usr/include/openssl/ssl.h")],
        package: "libssl-dev",
    },
];

/// The guest image of vm-install-test: an ext4 disk.
pub const GUEST_IMAGE: &[Tool] = &[command!("mkfs.ext4" from "e2fsprogs")];

/// What one command needs.
#[derive(Debug, Default)]
pub struct Needs {
    /// How the user typed it, for messages: `cargo xtask test`.
    pub command: String,
    /// The targets and components of rust-toolchain.toml.
    pub rust: bool,
    pub tools: Vec<Tool>,
}

impl Needs {
    pub fn new(command: &str) -> Self {
        Needs {
            command: format!("cargo xtask {command}"),
            ..Needs::default()
        }
    }

    pub fn rust(mut self) -> Self {
        self.rust = true;
        self
    }

    pub fn tools(mut self, tools: &[Tool]) -> Self {
        for tool in tools {
            if !self.tools.contains(tool) {
                self.tools.push(*tool);
            }
        }
        self
    }

    /// A VM command that may build the module first.
    pub fn vm(command: &str, builds: bool) -> Self {
        let needs = Needs::new(command).rust().tools(REPOSITORY).tools(VM);
        if builds {
            needs.tools(BUILDER)
        } else {
            needs
        }
    }
}
