//! Which programs take the TOA of the packet that completes a handshake.
//!
//! Both do the same walk and the same checks (bpf/toa.bpf.c, `capture`); they
//! differ in what the kernel makes every other connection pay for them.

use std::fmt;

/// A capture path: one program in the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// fexit on `tcp_create_openreq_child` (what `tcp_v4/v6_syn_recv_sock`
    /// build the accepted socket with): runs once per accepted connection and
    /// for nothing else. Needs kernel BTF, a BPF trampoline the arch can
    /// attach to a kernel function (x86_64; arm64 from 6.4) and socket
    /// storage in tracing programs (5.11).
    Fexit,
    /// A cgroup sock_ops program: the kernel runs it on every TCP callback of
    /// every socket (about nine per loopback connection, both ends), which is
    /// what it costs. Linux 5.10.
    SockOps,
}

/// (program name, kernel function it traces, what the kernel must offer).
pub const FEXIT_PROGRAM: (&str, &str, &str) = (
    "toa_openreq_child",
    "tcp_create_openreq_child",
    "kernel BTF (/sys/kernel/btf/vmlinux), a BPF trampoline for this arch, \
     bpf_probe_read_kernel (refused under lockdown=confidentiality) and socket storage in \
     tracing programs (Linux 5.11)",
);

pub const SOCKOPS_PROGRAM: (&str, &str) = (
    "toa_sockops",
    "sock_ops access to the handshake packet (skb_data, Linux 5.10) and socket storage (5.3)",
);

impl Capture {
    pub const ALL: [Capture; 2] = [Capture::Fexit, Capture::SockOps];

    /// The name of its program in the object (and of its pins).
    pub fn program(self) -> &'static str {
        match self {
            Capture::Fexit => FEXIT_PROGRAM.0,
            Capture::SockOps => SOCKOPS_PROGRAM.0,
        }
    }

    /// The word operators type and read (`--capture`, `toa status`).
    pub fn word(self) -> &'static str {
        match self {
            Capture::Fexit => "fexit",
            Capture::SockOps => "sock-ops",
        }
    }

    pub fn parse(word: &str) -> Option<Capture> {
        Capture::ALL.into_iter().find(|c| c.word() == word)
    }
}

impl fmt::Display for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capture::Fexit => f.write_str("fexit on tcp_create_openreq_child"),
            Capture::SockOps => f.write_str("cgroup sock_ops"),
        }
    }
}

/// What `load` may attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaptureChoice {
    /// fexit where the kernel accepts it, else sock_ops.
    #[default]
    Auto,
    /// This one or a refusal.
    Only(Capture),
}

impl CaptureChoice {
    pub fn parse(word: &str) -> Result<CaptureChoice, String> {
        if word == "auto" {
            return Ok(CaptureChoice::Auto);
        }
        Capture::parse(word)
            .map(CaptureChoice::Only)
            .ok_or_else(|| format!("{word:?} is not a capture path: auto, fexit or sock-ops"))
    }

    pub fn allows(self, c: Capture) -> bool {
        self == CaptureChoice::Auto || self == CaptureChoice::Only(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_ones_are_refused() {
        for c in Capture::ALL {
            assert_eq!(CaptureChoice::parse(c.word()), Ok(CaptureChoice::Only(c)));
        }
        assert_eq!(CaptureChoice::parse("auto"), Ok(CaptureChoice::Auto));
        assert!(CaptureChoice::parse("kprobe")
            .unwrap_err()
            .contains("auto, fexit or sock-ops"));
        assert!(CaptureChoice::Auto.allows(Capture::SockOps));
        assert!(!CaptureChoice::Only(Capture::Fexit).allows(Capture::SockOps));
    }
}
