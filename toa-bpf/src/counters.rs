//! Names of the per-CPU counters, in the order of `enum counter` in
//! bpf/toa.bpf.c, lower case: that enum is their source, and the build fails
//! naming the entry that differs (build/layout_checks.rs). New counters are
//! appended, never inserted: the programs of an earlier release, loaded until
//! `toa bpf load` replaces them, count into a map that holds a prefix of
//! these. Where toa.ko has a counter of the same meaning, the name is the
//! module's, so dashboards read both modes alike.

pub const COUNTERS: [&str; 8] = [
    "syn_recv_sock_toa",
    "syn_recv_sock_no_toa",
    "options_malformed",
    "syn_recv_sock_untrusted",
    "syn_recv_sock_other_port",
    "getname_toa_ok",
    // toa.ko's getname_toa_empty is not kept: counting every answer on a
    // plain socket would cost each getpeername() a map update.
    // An IPv6 client behind an AF_INET listener: a getpeername program cannot
    // change the family of the answer, so the proxy's address stays.
    "getname_family_kept",
    // Handshakes on listeners the kernel made for itself (in-kernel servers):
    // left alone, as toa.ko leaves them (it counts the listener instead, as
    // listen_kernel_socket).
    "syn_recv_sock_kernel_socket",
];
