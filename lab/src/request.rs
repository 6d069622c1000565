//! `toa-lab request`: one proxied HTTP request to a real service on this
//! host, as an L4 proxy in front of it would make it.
//!
//! The command creates its own TUN device ([`TUN_NAME`], the host side
//! [`ORIGIN`]/24), plays the proxy at [`PROXY`] with the user-space TCP
//! client, puts the TOA on the ACK that completes the handshake, sends
//! `GET <path> HTTP/1.0` to [`ORIGIN`]:`--port` and prints the status line
//! of the answer. The destination is the host's own address on a device
//! this command created, or with `--to` an address this host routes to (a
//! test's container behind a veth, this namespace forwarding); closing the
//! device's file removes it, so nothing is left when the command ends,
//! however it ends.
//!
//! What the service logged for the request (`$remote_addr` in nginx's
//! access.log) is the answer accept() gave it: the client in the TOA when
//! toa.ko rewrote it, the proxy otherwise.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use crate::error::{lab_err, Context, Result};
use crate::system;
use crate::tcp_client::{OptionPlan, TcpClient};
use crate::toa_option::{self, Toa, KIND_TOA};
use crate::tun::Tun;

/// Not `toa0` (the lab's scenarios) nor anything `toa selftest` makes: a
/// request can run beside either.
pub const TUN_NAME: &str = "toar0";
/// The host's side of the device: where the request goes.
pub const ORIGIN: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const ORIGIN_CIDR: &str = "10.77.0.1/24";
/// The simulated proxy: what the service sees without toa.ko.
pub const PROXY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The service's TCP port on this host.
    pub port: u16,
    /// Where the service is: [`ORIGIN`] (this host) unless told.
    pub to: Ipv4Addr,
    /// The client the TOA names; `None`: a proxied connection with no TOA.
    pub client: Option<SocketAddr>,
    /// The TOA's kind (254 unless told).
    pub kind: u8,
    /// Request target: starts with `/`, visible ASCII only.
    pub path: String,
    /// How long each protocol step may take.
    pub step_timeout: Duration,
}

/// `--port`'s value: a TCP port, 1-65535.
pub fn port_flag(value: &str) -> Result<u16> {
    value
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| lab_err!("--port wants 1-65535, not {value:?}"))
}

/// Parses the arguments after `request`.
pub fn parse(args: &[String]) -> Result<Options> {
    let mut port = None;
    let mut opts = Options {
        port: 0,
        to: ORIGIN,
        client: None,
        kind: KIND_TOA,
        path: "/".into(),
        step_timeout: DEFAULT_STEP_TIMEOUT,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !flag.starts_with("--") {
            return Err(lab_err!("unexpected argument {flag:?}"));
        }
        let value = it.next().ok_or_else(|| lab_err!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = Some(port_flag(value)?),
            "--to" => {
                opts.to = value
                    .parse()
                    .map_err(|_| lab_err!("--to wants an IPv4 address, not {value:?}"))?
            }
            "--client" => {
                opts.client = Some(value.parse().map_err(|_| {
                    lab_err!("--client wants IP:PORT or [IPv6]:PORT, not {value:?}")
                })?)
            }
            "--kind" => opts.kind = toa_option::parse_kind(value)?,
            "--path" => {
                if !value.starts_with('/') || !value.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(lab_err!(
                        "--path wants /PATH in visible ASCII without spaces, not {value:?}"
                    ));
                }
                opts.path = value.clone();
            }
            "--step-timeout" => {
                opts.step_timeout = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s > 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        lab_err!("--step-timeout wants positive seconds, not {value:?}")
                    })?
            }
            other => return Err(lab_err!("unknown flag {other}")),
        }
    }
    opts.port = port.ok_or_else(|| lab_err!("request needs --port N"))?;
    Ok(opts)
}

/// The request's bytes: HTTP/1.0, so the service closes after answering.
pub fn http_request(path: &str, to: Ipv4Addr, port: u16) -> Vec<u8> {
    let host = if port == 80 {
        to.to_string()
    } else {
        format!("{to}:{port}")
    };
    format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: toa-lab\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// The status line of an HTTP answer (`HTTP/1.1 200 OK`), if it is one.
pub fn status_line(answer: &[u8]) -> Option<String> {
    let end = answer.iter().position(|&b| b == b'\n')?;
    let line = String::from_utf8_lossy(&answer[..end])
        .trim_end_matches('\r')
        .to_string();
    let mut words = line.split(' ');
    let version = words.next()?;
    let code = words.next()?;
    (version.starts_with("HTTP/") && code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .then_some(line)
}

/// A source port for the proxy: a new one each run, so a 4-tuple of an
/// earlier request still in TIME_WAIT on the service's side is not met.
fn proxy_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    20000 + ((nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % 40000) as u16
}

/// Runs the request: 0 when an HTTP answer came back, 1 otherwise.
pub fn run(opts: Options) -> i32 {
    match request(&opts) {
        Ok(status) => {
            println!("{status}");
            0
        }
        Err(e) => {
            eprintln!("toa-lab request: {e}");
            1
        }
    }
}

fn request(opts: &Options) -> Result<String> {
    let tun = Tun::create(TUN_NAME, false).context("creating the TUN device")?;
    let dev = tun.name();
    // Only IPv4 is used: no IPv6 address, no router solicitations.
    let _ = system::write_sysctl(&format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "1");
    system::run("ip", &["addr", "add", ORIGIN_CIDR, "dev", dev])
        .context(format!("configuring {dev}"))?;
    system::run("ip", &["link", "set", dev, "up"]).context(format!("bringing {dev} up"))?;

    let local = SocketAddr::V4(SocketAddrV4::new(PROXY, proxy_port()));
    let remote = SocketAddr::V4(SocketAddrV4::new(opts.to, opts.port));
    let toa = opts.client.map(|c| Toa::new(opts.kind, c));
    match &toa {
        Some(t) => {
            eprintln!("toa-lab request: {local} -> {remote} on {dev}, {t} on the handshake ACK")
        }
        None => eprintln!("toa-lab request: {local} -> {remote} on {dev}, no TOA"),
    }
    let mut client = TcpClient::connect(
        &tun,
        local,
        remote,
        &OptionPlan::toa(toa.as_ref()),
        opts.step_timeout,
    )
    .context("handshake")?;
    client
        .send(&http_request(&opts.path, opts.to, opts.port))
        .context("sending the request")?;
    let answer = client.read_line().context("reading the answer")?;
    let status = status_line(&answer).ok_or_else(|| {
        let shown: String = String::from_utf8_lossy(&answer).chars().take(80).collect();
        lab_err!("the answer is not HTTP: {shown:?}")
    })?;
    // The service has answered (and logged); a close that does not finish
    // cleanly is worth a note, not a failure.
    if let Err(e) = client.close() {
        eprintln!("toa-lab request: closing: {e}");
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn test_parse_request() {
        let o = parse(&args(
            "--port 80 --client 198.51.100.7:40001 --path /?toa-lab=x",
        ))
        .unwrap();
        assert_eq!(o.port, 80);
        assert_eq!(o.client, Some("198.51.100.7:40001".parse().unwrap()));
        assert_eq!(o.kind, KIND_TOA);
        assert_eq!(o.path, "/?toa-lab=x");
        assert_eq!(o.step_timeout, DEFAULT_STEP_TIMEOUT);
        let o = parse(&args("--port 8080 --kind 200 --step-timeout 2.5")).unwrap();
        assert_eq!((o.port, o.client, o.kind), (8080, None, 200));
        assert_eq!(o.path, "/");
        assert_eq!(o.step_timeout, Duration::from_millis(2500));
        assert_eq!(o.to, ORIGIN, "this host unless told");
        let o = parse(&args("--port 8080 --to 10.78.0.2")).unwrap();
        assert_eq!(o.to, Ipv4Addr::new(10, 78, 0, 2));
    }

    #[test]
    fn test_parse_request_errors() {
        for bad in [
            "",
            "--client 198.51.100.7:1",
            "--port 0",
            "--port 70000",
            "--port 80 --client nowhere",
            "--port 80 --path relative",
            "--port 80 --kind 256",
            "--port 80 --step-timeout 0",
            "--port 80 --trace",
            "--port 80 --to fd00::2",
            "--port 80 --to",
            "--port",
            "80",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn test_request_bytes() {
        assert_eq!(
            http_request("/?a=b", ORIGIN, 80),
            b"GET /?a=b HTTP/1.0\r\nHost: 10.77.0.1\r\nUser-Agent: toa-lab\r\nConnection: close\r\n\r\n"
        );
        let other =
            String::from_utf8(http_request("/", Ipv4Addr::new(10, 78, 0, 2), 8080)).unwrap();
        assert!(other.contains("\r\nHost: 10.78.0.2:8080\r\n"), "{other}");
    }

    #[test]
    fn test_status_line() {
        assert_eq!(
            status_line(b"HTTP/1.1 200 OK\r\nServer: nginx\r\n\r\n").as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        assert_eq!(
            status_line(b"HTTP/1.0 404 Not Found\n").as_deref(),
            Some("HTTP/1.0 404 Not Found")
        );
        assert_eq!(status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_line(b"HTTP/1.1 2000 x\r\n"), None);
        assert_eq!(status_line(b"HTTP/1.1 200 OK"), None, "no line end yet");
    }

    #[test]
    fn test_proxy_port_is_ephemeral() {
        for _ in 0..100 {
            assert!((20000..60000).contains(&proxy_port()));
        }
    }
}
