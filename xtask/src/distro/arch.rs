//! Kernel architectures toa.ko is built and proven for, and each one's name
//! in the tools that meet it: `uname -m`, Debian, kbuild, Rust, QEMU.

/// An architecture, named on the command line as `uname -m` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// `uname -m`: `x86_64`, `aarch64` (tarball names, index.json, installers).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The one called `name` (as `uname -m` prints it).
    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Every known name, for error messages.
    pub fn names() -> String {
        Arch::ALL.map(Arch::name).join(", ")
    }

    /// Debian's architecture: `amd64`, `arm64`.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// kbuild's `ARCH=`.
    pub fn kbuild(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86",
            Arch::Aarch64 => "arm64",
        }
    }

    /// Rust target of the static programs that run in a lab guest.
    pub fn musl_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(Arch::from_name(arch.name()), Some(arch));
        }
        assert_eq!(Arch::from_name("arm64"), None);
        assert_eq!(Arch::names(), "x86_64, aarch64");
    }
}
