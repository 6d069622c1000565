//! toa-lab: proves toa.ko from inside a test VM.
//!
//! It plays both ends of a proxied connection: an L4 proxy that speaks TCP in
//! user space over a TUN device (so it controls the TOA option byte for
//! byte), and the origin application that asks the kernel who its peer is.

mod bench;
mod cli;
mod error;
mod kmsg;
mod lab;
mod malformed;
mod oracle;
mod origin;
mod output;
mod packet;
mod rng;
mod scenarios;
mod sockaddr;
mod stats;
mod stress;
mod system;
mod tcp_client;
mod toa_option;
mod trust;
mod tun;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cli::main(&args));
}
