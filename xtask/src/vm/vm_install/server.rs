//! A small HTTP/1.0 file server on 127.0.0.1 for the guest, which reaches it
//! as 10.0.2.2 through QEMU's user network. GET and HEAD of files under one
//! directory; every request is logged.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Server {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// `METHOD /path STATUS BYTES`, in order.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Serves `root` on 127.0.0.1 at a free port.
    pub fn start(root: &Path) -> Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, log, root) = (stop.clone(), log.clone(), root.to_path_buf());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (log, root) = (log.clone(), root.clone());
                            std::thread::spawn(move || {
                                let line = handle(stream, &root);
                                log.lock().unwrap().push(line);
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        Ok(Server {
            port,
            stop,
            thread: Some(thread),
            log,
        })
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The file under `root` a request path names; `None` for anything that
/// would leave it.
pub fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let path = url_path.split(['?', '#']).next()?;
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = root.join(rel);
    full.is_file().then_some(full)
}

fn handle(stream: TcpStream, root: &Path) -> String {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(e) => return format!("- - error {e}"),
    });
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return "- - unreadable request".into();
    }
    // Headers are read and ignored.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let mut parts = request.split_whitespace();
    let method = parts.next().unwrap_or("-").to_string();
    let path = parts.next().unwrap_or("-").to_string();
    let mut out = stream;
    let (status, body) = match (method.as_str(), resolve(root, &path)) {
        ("GET" | "HEAD", Some(file)) => match std::fs::read(&file) {
            Ok(bytes) => ("200 OK", bytes),
            Err(_) => ("500 Internal Server Error", b"unreadable\n".to_vec()),
        },
        ("GET" | "HEAD", None) => ("404 Not Found", b"not found\n".to_vec()),
        _ => ("405 Method Not Allowed", b"GET or HEAD only\n".to_vec()),
    };
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut sent = out.write_all(head.as_bytes());
    if method != "HEAD" && sent.is_ok() {
        sent = out.write_all(&body);
    }
    let _ = out.flush();
    let code = status.split(' ').next().unwrap_or("-");
    match sent {
        Ok(()) => format!("{method} {path} {code} {}", body.len()),
        Err(e) => format!("{method} {path} {code} send failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn serves_files_and_nothing_outside_its_root() {
        let dir = crate::testing::scratch("vi-server");
        std::fs::create_dir_all(dir.join("root/sub")).unwrap();
        std::fs::write(dir.join("root/sub/a.txt"), b"hello").unwrap();
        std::fs::write(dir.join("secret"), b"no").unwrap();
        let root = dir.join("root");
        assert!(resolve(&root, "/sub/a.txt").is_some());
        assert!(resolve(&root, "/sub/a.txt?x=1").is_some());
        assert!(resolve(&root, "/../secret").is_none());
        assert!(resolve(&root, "/sub/../../secret").is_none());
        assert!(resolve(&root, "/sub").is_none());

        let server = Server::start(&root).unwrap();
        let get = |path: &str| {
            let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        };
        let ok = get("/sub/a.txt");
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nhello"), "{ok}");
        assert!(get("/../secret").starts_with("HTTP/1.0 404"));
        drop(server);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
