//! syn-cookies: with `net.ipv4.tcp_syncookies = 2` the kernel answers every
//! SYN with a cookie and keeps no request socket, so the connection is made
//! from the third ACK alone (the packet that carries the TOA) on a path of
//! its own (cookie_v4_check / cookie_v6_check). Both modes must take the
//! client from it, and a connection without TOA must still show the proxy.

use crate::error::{lab_err, Context, Result};
use crate::lab::{ConnSpec, Lab, ProxyFamily};
use crate::origin::Listener;
use crate::system;
use crate::toa_option::{Toa, KIND_TOA};

const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_syncookies";
/// Every SYN gets a cookie, whether or not the queue is full.
const ALWAYS: &str = "2";

fn toa(client: &str) -> Option<Toa> {
    Some(Toa::new(KIND_TOA, client.parse().expect("valid address")))
}

pub fn run(lab: &Lab) -> Result<String> {
    let before = system::read_param(SYSCTL)?;
    let start = cookies()?;
    system::write_param(SYSCTL, ALWAYS)
        .map_err(|e| lab_err!("writing {ALWAYS} to {SYSCTL}: {e}"))?;
    let outcome = (|| {
        let v4 = lab
            .exercise(&ConnSpec::new(
                ProxyFamily::V4,
                Listener::V4,
                toa("198.51.100.40:40400"),
            ))
            .context("IPv4 TOA through a SYN cookie")?;
        let v6 = lab
            .exercise(&ConnSpec::new(
                ProxyFamily::V6,
                Listener::V6,
                toa("[2001:db8::40]:40401"),
            ))
            .context("IPv6 TOA through a SYN cookie")?;
        let plain = lab
            .exercise(&ConnSpec::new(ProxyFamily::V4, Listener::V4, None))
            .context("no TOA through a SYN cookie")?;
        let end = cookies()?;
        let (sent, recv) = (end.0 - start.0, end.1 - start.1);
        if sent < 3 || recv < 3 {
            return Err(lab_err!(
                "the handshakes did not go through SYN cookies: {sent} sent, {recv} accepted \
                 (TcpExt SyncookiesSent/SyncookiesRecv)"
            ));
        }
        Ok(format!(
            "{sent} cookies sent, {recv} accepted; IPv4 {v4}; IPv6 {v6}; no TOA {plain}"
        ))
    })();
    system::write_param(SYSCTL, &before)
        .map_err(|e| lab_err!("restoring {SYSCTL} to {before}: {e}"))?;
    outcome
}

/// TcpExt SyncookiesSent and SyncookiesRecv from /proc/net/netstat.
fn cookies() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/netstat")
        .map_err(|e| lab_err!("reading /proc/net/netstat: {e}"))?;
    parse_cookies(&text)
        .ok_or_else(|| lab_err!("/proc/net/netstat has no TcpExt SyncookiesSent/Recv"))
}

fn parse_cookies(netstat: &str) -> Option<(u64, u64)> {
    let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let names: Vec<&str> = tcp_ext.next()?.split_whitespace().collect();
    let values: Vec<&str> = tcp_ext.next()?.split_whitespace().collect();
    let get = |name: &str| -> Option<u64> {
        let at = names.iter().position(|n| *n == name)?;
        values.get(at)?.parse().ok()
    };
    Some((get("SyncookiesSent")?, get("SyncookiesRecv")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_counters_are_read_by_name() {
        let text = "TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed\n\
                    TcpExt: 5 4 0\n\
                    IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(parse_cookies(text), Some((5, 4)));
        assert_eq!(parse_cookies("IpExt: A\nIpExt: 1\n"), None);
    }
}
