//! `toa-lab serve`: the smallest origin application, for a server that runs
//! outside the lab's VM (a container the eBPF mode covers): it prints who
//! each connection's peer is, as accept() and getpeername() say, and
//! answers `toa-lab request` with an HTTP status line.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::error::{lab_err, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub port: u16,
    /// Connections to serve before ending; `None`: never end.
    pub connections: Option<u64>,
}

/// Parses the arguments after `serve`.
pub fn parse(args: &[String]) -> Result<Options> {
    let mut port = None;
    let mut connections = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| lab_err!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = Some(crate::request::port_flag(value)?),
            "--connections" => {
                connections = Some(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n != 0)
                        .ok_or_else(|| lab_err!("--connections wants a count, not {value:?}"))?,
                )
            }
            other => return Err(lab_err!("unknown flag {other}")),
        }
    }
    Ok(Options {
        port: port.ok_or_else(|| lab_err!("serve needs --port N"))?,
        connections,
    })
}

/// What is printed for one connection.
pub fn line(accepted: SocketAddr, peer: SocketAddr) -> String {
    format!("TOA-LAB SERVE accept={accepted} getpeername={peer}")
}

/// Serves until done: 0, or 1 when the port cannot be listened on.
pub fn run(opts: Options) -> i32 {
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, opts.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("toa-lab serve: listening on port {}: {e}", opts.port);
            return 1;
        }
    };
    println!("TOA-LAB SERVE listening on port {}", opts.port);
    let mut served = 0;
    while opts.connections.is_none_or(|n| served < n) {
        match listener.accept() {
            Ok((stream, accepted)) => {
                served += 1;
                if let Err(e) = answer(stream, accepted) {
                    eprintln!("toa-lab serve: {e}");
                }
            }
            Err(e) => eprintln!("toa-lab serve: accept: {e}"),
        }
    }
    0
}

fn answer(mut stream: TcpStream, accepted: SocketAddr) -> std::io::Result<()> {
    let peer = stream.peer_addr()?;
    println!("{}", line(accepted, peer));
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // The request's head; what it asks for does not matter.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = format!("{peer}\n");
    write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn serve_parses_port_and_count() {
        assert_eq!(
            parse(&args("--port 8080")).unwrap(),
            Options {
                port: 8080,
                connections: None
            }
        );
        assert_eq!(
            parse(&args("--connections 2 --port 80"))
                .unwrap()
                .connections,
            Some(2)
        );
        for bad in [
            "",
            "--port 0",
            "--port 80 --connections 0",
            "--port",
            "--x 1",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_connection_is_logged_and_answered() {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let server = std::thread::spawn(move || {
            run(Options {
                port,
                connections: Some(1),
            })
        });
        let mut client = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(c) => break c,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let me = client.local_addr().unwrap();
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with(&format!("\r\n\r\n{me}\n")), "{answer}");
        assert_eq!(server.join().unwrap(), 0);
        assert_eq!(
            line(me, me),
            format!("TOA-LAB SERVE accept={me} getpeername={me}")
        );
    }
}
