//! Downloads into the cache: size and sha256 checked, progress on stderr.
//!
//! A file lands in the cache only after it has been verified (it is written
//! to a temporary file beside its final name and renamed into place), and a
//! cached file is verified again before it is reused, so a truncated or
//! tampered entry is replaced rather than trusted.

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a download must be: its size in bytes and its sha256 (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub sha256: String,
    pub size: u64,
}

/// Fetch `url` into `<cache>/<cache_rel>` and return that path.
///
/// With `expected`, a cached copy is reused only if it still matches, and a
/// fresh download must match before it is kept. Without it, a cached copy is
/// reused as it is (use [`fetch_fresh`] for files that change upstream).
pub fn fetch(
    url: &str,
    expected: Option<Expected>,
    cache_rel: impl AsRef<Path>,
) -> Result<PathBuf> {
    fetch_in(
        &crate::host::cache::cache_dir(),
        url,
        expected.as_ref(),
        cache_rel.as_ref(),
    )
}

/// Fetch `url` into `<cache>/<cache_rel>` even if a copy is cached, replacing
/// it atomically once the download completed (for indices such as InRelease).
pub fn fetch_fresh(url: &str, cache_rel: impl AsRef<Path>) -> Result<PathBuf> {
    let dest = crate::host::cache::cache_dir().join(cache_rel.as_ref());
    download_to(url, None, &dest)?;
    Ok(dest)
}

/// [`fetch`] with an explicit cache root.
pub fn fetch_in(
    cache: &Path,
    url: &str,
    expected: Option<&Expected>,
    cache_rel: &Path,
) -> Result<PathBuf> {
    let dest = cache.join(cache_rel);
    if dest.is_file() {
        match expected {
            None => return Ok(dest),
            Some(exp) => match verify_file(&dest, exp) {
                Ok(()) => return Ok(dest),
                Err(err) => {
                    // Not removed first: a good download replaces it atomically,
                    // and until then later runs see (and name) it again.
                    eprintln!(
                        "cache entry {} is corrupt ({err:#}); downloading it again",
                        dest.display()
                    );
                    return download_to(url, expected, &dest)
                        .with_context(|| {
                            format!(
                                "cache entry {} is corrupt and downloading it again failed; \
                                 a later run replaces it once the download succeeds, or delete it",
                                dest.display()
                            )
                        })
                        .map(|()| dest);
                }
            },
        }
    }
    download_to(url, expected, &dest)?;
    Ok(dest)
}

/// Check that the file at `path` has the expected size and sha256.
pub fn verify_file(path: &Path, expected: &Expected) -> Result<()> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size != expected.size {
        bail!(
            "size mismatch: expected {} bytes, got {size}",
            expected.size
        );
    }
    let got = crate::host::fs::sha256_file(path)?;
    if !got.eq_ignore_ascii_case(&expected.sha256) {
        bail!("sha256 mismatch: expected {}, got {got}", expected.sha256);
    }
    Ok(())
}

fn client() -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .user_agent(concat!("toa-xtask/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        // Applies to the request and to each read of the body: a stalled
        // transfer fails instead of hanging.
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the HTTP client")
}

/// Why one attempt failed, and whether another attempt may help.
struct Failure {
    error: anyhow::Error,
    retry: bool,
}

fn download_to(url: &str, expected: Option<&Expected>, dest: &Path) -> Result<()> {
    let dir = dest
        .parent()
        .context("cache destination has no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let client = client()?;
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    loop {
        match try_download(&client, url, expected, dest) {
            Ok(()) => return Ok(()),
            Err(Failure { error, retry }) if retry && attempt < ATTEMPTS => {
                eprintln!(
                    "{}; retrying ({attempt}/{})",
                    error.root_cause(),
                    ATTEMPTS - 1
                );
                std::thread::sleep(Duration::from_secs(u64::from(attempt)));
                attempt += 1;
            }
            Err(Failure { error, .. }) => return Err(error),
        }
    }
}

fn try_download(
    client: &reqwest::blocking::Client,
    url: &str,
    expected: Option<&Expected>,
    dest: &Path,
) -> std::result::Result<(), Failure> {
    let fail = |retry: bool, error: anyhow::Error| Failure { error, retry };
    // Credentials in a URL go out as basic auth, never into a message.
    let shown = redact(url);
    let mut response = client
        .get(url)
        .send()
        .map_err(|e| fail(true, unreachable(url, &e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(
            status.is_server_error(),
            anyhow::anyhow!("GET {shown}: HTTP {status}"),
        ));
    }
    let total = expected
        .map(|e| e.size)
        .or_else(|| response.content_length());

    let tmp = temp_path(dest);
    let result = (|| -> std::result::Result<(), Failure> {
        let mut out = File::create(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))
            .map_err(|e| fail(false, e))?;
        let bar = progress_bar(&shown, total);
        let mut hasher = Sha256::new();
        let mut got: u64 = 0;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match response.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    bar.abandon();
                    // The client's message may quote the URL.
                    let e = e.to_string().replace(url, &shown);
                    return Err(fail(
                        true,
                        anyhow::anyhow!("GET {shown}: transfer failed after {got} bytes: {e}"),
                    ));
                }
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", tmp.display()))
                .map_err(|e| fail(false, e))?;
            got += n as u64;
            bar.set_position(got);
            if let Some(exp) = expected {
                if got > exp.size {
                    bar.abandon();
                    return Err(fail(
                        false,
                        anyhow::anyhow!(
                            "GET {shown}: size mismatch: expected {} bytes, got more",
                            exp.size
                        ),
                    ));
                }
            }
        }
        bar.finish_and_clear();
        if let Some(exp) = expected {
            if got != exp.size {
                return Err(fail(
                    false,
                    anyhow::anyhow!(
                        "GET {shown}: size mismatch: expected {} bytes, got {got}",
                        exp.size
                    ),
                ));
            }
            let sha = hex::encode(hasher.finalize());
            if !sha.eq_ignore_ascii_case(&exp.sha256) {
                return Err(fail(
                    false,
                    anyhow::anyhow!(
                        "GET {shown}: sha256 mismatch: expected {}, got {sha}",
                        exp.sha256
                    ),
                ));
            }
        } else if let Some(len) = total {
            if got != len {
                return Err(fail(
                    true,
                    anyhow::anyhow!(
                        "GET {shown}: truncated: Content-Length {len}, got {got} bytes"
                    ),
                ));
            }
        }
        out.sync_all()
            .with_context(|| format!("writing {}", tmp.display()))
            .map_err(|e| fail(false, e))?;
        std::fs::rename(&tmp, dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
            .map_err(|e| fail(false, e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `dest` with a unique temporary suffix, in the same directory (so the
/// final rename is atomic).
fn temp_path(dest: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.part-{}-{n}", std::process::id()))
}

/// What `Display` puts where an access token was.
pub const TOKEN_SHOWN: &str = "<token>";

/// `url` without the user and password it may carry, and with `<token>` for
/// its query: the query of a registered repository's URL is its access token
/// (see [`crate::repo::scc`]).
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() || u.query().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let query = u.query().is_some_and(|q| !q.is_empty());
            u.set_query(None);
            let mut shown = u.to_string();
            if query {
                shown.push('?');
                shown.push_str(TOKEN_SHOWN);
            }
            shown
        }
        _ => url.to_string(),
    }
}

fn progress_bar(url: &str, total: Option<u64>) -> ProgressBar {
    let name = url.rsplit('/').next().unwrap_or(url);
    let bar = crate::progress::bytes(name, total);
    if bar.is_hidden() {
        // Not a terminal (CI logs): one line per download instead of a bar.
        match total {
            Some(len) => eprintln!("downloading {url} ({len} bytes)"),
            None => eprintln!("downloading {url}"),
        }
    }
    bar
}

/// A request that got no answer: names the host (and the proxy, if one is
/// set), the deepest cause and what to check.
fn unreachable(url: &str, err: &reqwest::Error) -> anyhow::Error {
    let parsed = reqwest::Url::parse(url).ok();
    let host = parsed
        .as_ref()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .unwrap_or_else(|| url.to_string());
    let scheme = parsed.as_ref().map_or("http", |u| u.scheme());
    let proxy = [format!("{scheme}_proxy"), "all_proxy".to_string()]
        .into_iter()
        .flat_map(|v| [v.to_uppercase(), v])
        .find_map(|v| std::env::var(v).ok().filter(|p| !p.is_empty()));
    let through = match &proxy {
        Some(proxy) => format!(" through the proxy {proxy}"),
        None => String::new(),
    };
    let mut why: &dyn std::error::Error = err;
    while let Some(source) = why.source() {
        why = source;
    }
    // Credentials in a URL go out as basic auth, never into a message.
    let shown = redact(url);
    let why = if err.is_timeout() {
        "timed out".to_string()
    } else {
        why.to_string().replace(url, &shown)
    };
    anyhow::anyhow!("GET {shown}: connection failed: {why}").context(format!(
        "cannot reach {host}{through}; check the network and the proxy settings \
         (http_proxy, https_proxy), or point the release at a reachable mirror in distros/"
    ))
}

#[cfg(test)]
pub(crate) mod test_server {
    //! A tiny HTTP/1.1 server on loopback serving fixed bodies by path.
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    pub struct Server {
        pub base: String,
        pub hits: Arc<Mutex<Vec<String>>>,
    }

    /// Serve `routes` (path -> body) until the test process ends; other paths get 404.
    pub fn serve(routes: Vec<(&str, Vec<u8>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: HashMap<String, Vec<u8>> = routes
            .into_iter()
            .map(|(p, b)| (p.to_string(), b))
            .collect();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let log = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_string();
                log.lock().unwrap().push(path.clone());
                let (status, body) = match routes.get(&path) {
                    Some(body) => ("200 OK", body.clone()),
                    None => ("404 Not Found", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        Server { base, hits }
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::serve;
    use super::*;

    fn expected(body: &[u8]) -> Expected {
        Expected {
            sha256: hex::encode(Sha256::digest(body)),
            size: body.len() as u64,
        }
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn good_download_is_cached_and_reused() {
        let body = b"hello, cache".to_vec();
        let server = serve(vec![("/a/file.bin", body.clone())]);
        let cache = crate::testing::scratch("download-good");
        let url = format!("{}/a/file.bin", server.base);
        let exp = expected(&body);
        let path = fetch_in(&cache, &url, Some(&exp), Path::new("sub/file.bin")).unwrap();
        assert_eq!(path, cache.join("sub/file.bin"));
        assert_eq!(std::fs::read(&path).unwrap(), body);
        assert_eq!(leftovers(&cache.join("sub")), vec!["file.bin"]);
        // Second call: served from the cache, no request.
        fetch_in(&cache, &url, Some(&exp), Path::new("sub/file.bin")).unwrap();
        assert_eq!(server.hits.lock().unwrap().len(), 1);
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn checksum_mismatch_fails_and_leaves_nothing() {
        let server = serve(vec![("/evil", b"tampered bytes".to_vec())]);
        let cache = crate::testing::scratch("download-mismatch");
        let url = format!("{}/evil", server.base);
        let mut exp = expected(b"genuine bytes!");
        exp.size = 14;
        let err = format!(
            "{:#}",
            fetch_in(&cache, &url, Some(&exp), Path::new("d/evil")).unwrap_err()
        );
        assert!(err.contains(&url), "{err}");
        assert!(err.contains("sha256 mismatch"), "{err}");
        assert!(err.contains(&exp.sha256), "{err}");
        assert!(
            leftovers(&cache.join("d")).is_empty(),
            "{:?}",
            leftovers(&cache.join("d"))
        );

        let err = format!(
            "{:#}",
            fetch_in(&cache, &url, Some(&expected(b"short")), Path::new("d/evil")).unwrap_err()
        );
        assert!(err.contains("size mismatch: expected 5 bytes"), "{err}");
        assert!(leftovers(&cache.join("d")).is_empty());
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn corrupt_cache_entry_is_replaced() {
        let body = b"the real content".to_vec();
        let server = serve(vec![("/f", body.clone())]);
        let cache = crate::testing::scratch("download-corrupt");
        std::fs::create_dir_all(cache.join("x")).unwrap();
        std::fs::write(cache.join("x/f"), b"the real c0ntent").unwrap();
        let url = format!("{}/f", server.base);
        let path = fetch_in(&cache, &url, Some(&expected(&body)), Path::new("x/f")).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), body);
        assert_eq!(server.hits.lock().unwrap().len(), 1);
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn http_error_names_the_url_and_status() {
        let server = serve(vec![]);
        let cache = crate::testing::scratch("download-404");
        let url = format!("{}/missing.deb", server.base);
        let err = format!(
            "{:#}",
            fetch_in(&cache, &url, None, Path::new("missing.deb")).unwrap_err()
        );
        assert!(err.contains(&url), "{err}");
        assert!(err.contains("404"), "{err}");
        assert!(leftovers(&cache).is_empty());
        std::fs::remove_dir_all(&cache).unwrap();
    }

    /// A loopback port nothing listens on (bound, then dropped).
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn messages_never_show_credentials_or_tokens() {
        // A URL as SUSE Customer Center hands it out (its token from a
        // `zypper -x ls` in github.com/SUSE/connect-ng testdata/services.xml).
        let token = "pO5gYsm13mf3R-q-FnkAN-xWozBPNQGQY7KvT4uKqAsOwZPyrniMfnciXOqUVgAXdzp5zwFcdOLLdN5H2LNEj6g0z8L3bbubNZm2gIBBSDUxLlvuDxYONou8y2oHIqRD9RfkYncCjIa1N_9D";
        let url = format!(
            "https://updates.suse.com/SUSE/Products/SUSE-MicroOS/5.0/x86_64/product/repodata/repomd.xml?{token}"
        );
        assert_eq!(
            redact(&url),
            "https://updates.suse.com/SUSE/Products/SUSE-MicroOS/5.0/x86_64/product/repodata/repomd.xml?<token>"
        );
        assert_eq!(
            redact("https://SCC_0123:secret@updates.suse.com/x/"),
            "https://updates.suse.com/x/"
        );
        assert_eq!(
            redact("http://deb.debian.org/debian/"),
            "http://deb.debian.org/debian/"
        );

        // Refused, and unreachable: neither message has the token.
        let server = serve(vec![]);
        let cache = crate::testing::scratch("download-token");
        let refused = format!(
            "{:#}",
            fetch_in(
                &cache,
                &format!("{}/r/repomd.xml?{token}", server.base),
                None,
                Path::new("r")
            )
            .unwrap_err()
        );
        assert!(
            refused.contains("/r/repomd.xml?<token>: HTTP 404"),
            "{refused}"
        );
        let port = closed_port();
        let unreachable = format!(
            "{:#}",
            fetch_in(
                &cache,
                &format!("http://127.0.0.1:{port}/r?{token}"),
                None,
                Path::new("r")
            )
            .unwrap_err()
        );
        assert!(unreachable.contains("connection failed"), "{unreachable}");
        for err in [&refused, &unreachable] {
            assert!(!err.contains(token), "{err}");
        }
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn connection_error_names_the_url() {
        let port = closed_port();
        let cache = crate::testing::scratch("download-refused");
        let url = format!("http://127.0.0.1:{port}/x");
        let err = format!(
            "{:#}",
            fetch_in(&cache, &url, None, Path::new("x")).unwrap_err()
        );
        assert!(
            err.contains(&url) && err.contains("connection failed"),
            "{err}"
        );
        assert!(
            err.starts_with(&format!("cannot reach 127.0.0.1:{port}")),
            "{err}"
        );
        assert!(err.contains("reachable mirror in distros/"), "{err}");
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn a_corrupt_entry_that_cannot_be_fetched_again_is_named() {
        let port = closed_port();
        let cache = crate::testing::scratch("download-corrupt-offline");
        std::fs::create_dir_all(cache.join("x")).unwrap();
        let entry = cache.join("x/f");
        std::fs::write(&entry, b"the real c0ntent").unwrap();
        let url = format!("http://127.0.0.1:{port}/f");
        let err = fetch_in(
            &cache,
            &url,
            Some(&expected(b"the real content")),
            Path::new("x/f"),
        )
        .unwrap_err();
        let text = crate::report::render(&err);
        assert!(
            text.starts_with(&format!(
                "error: cache entry {} is corrupt and downloading it again failed; a later run \
                 replaces it once the download succeeds, or delete it\n",
                entry.display()
            )),
            "{text}"
        );
        assert!(text.contains("caused by: cannot reach 127.0.0.1"), "{text}");
        assert_eq!(std::fs::read(&entry).unwrap(), b"the real c0ntent");
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
