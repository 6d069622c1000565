//! The TUN device through which the simulated proxy talks to the kernel.
//!
//! The kernel side of `toa0` is the origin host (10.0.0.1, fd00::1); every
//! packet the kernel routes to the proxy addresses comes out of the file
//! descriptor, and every packet we write goes through the kernel's normal
//! receive path as if it had arrived from a wire.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{sim_err, Context, Result};
use crate::packet::{self, Received, Skip};
use crate::system;

const TUN_NODE: &str = "/dev/net/tun";
const TUN_MAJOR: u32 = 10;
const TUN_MINOR: u32 = 200;
/// Segments for connections that are not reading right now (e.g. the one
/// held open across the module reload) wait here; bounded so stray packets of
/// finished connections cannot grow it.
const BACKLOG_LIMIT: usize = 64;

/// Where a `TcpClient` sends and receives packets: the TUN device in the
/// lab, a scripted peer in unit tests.
pub trait Link {
    fn send(&self, packet: &[u8]) -> Result<()>;
    /// Returns the next TCP segment `wanted` accepts, or `None` at `deadline`.
    fn recv_matching(
        &self,
        wanted: &dyn Fn(&Received) -> bool,
        deadline: Instant,
    ) -> Result<Option<Received>>;
    /// Packets dropped for a wrong checksum so far: named in timeout errors,
    /// because it would explain why an expected reply never "arrived".
    fn bad_checksums(&self) -> u64;
}

/// `struct ifreq` as TUNSETIFF reads it: name, then the flags member of the
/// union; the kernel copies the full 40 bytes.
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// How the kernel side of the device is addressed.
pub struct Addressing<'a> {
    pub v4_cidr: &'a str,
    pub v6_cidr: &'a str,
}

pub struct Tun {
    name: String,
    file: File,
    backlog: RefCell<VecDeque<Received>>,
    skipped_bad_checksum: Cell<u64>,
    trace: bool,
}

impl Tun {
    /// Creates the (non-persistent) device; it disappears when we exit.
    /// With `trace`, every TCP segment crossing the device is logged to
    /// stderr (there is no tcpdump in a minimal guest).
    pub fn create(name: &str, trace: bool) -> Result<Tun> {
        ensure_tun_node()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(TUN_NODE)
            .context(format!("opening {TUN_NODE} (is tun.ko loaded?)"))?;
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        if name.len() >= libc::IFNAMSIZ {
            return Err(sim_err!("interface name {name:?} is too long"));
        }
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which
        // `IfReqFlags` matches in size and layout for the fields used.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc < 0 {
            return Err(sim_err!(
                "TUNSETIFF {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Tun {
            name: name.to_string(),
            file,
            backlog: RefCell::new(VecDeque::new()),
            skipped_bad_checksum: Cell::new(0),
            trace,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives the kernel side its addresses and brings the link up, then waits
    /// until the IPv6 address may be used as a source.
    pub fn configure(&self, addrs: &Addressing<'_>) -> Result<()> {
        let dev = self.name.as_str();
        // Duplicate address detection would keep fd00::1 tentative (unusable)
        // for a second or more; nobody else is on this link.
        system::write_sysctl(&format!("/proc/sys/net/ipv6/conf/{dev}/accept_dad"), "0")?;
        system::run("ip", &["addr", "add", addrs.v4_cidr, "dev", dev])?;
        system::run("ip", &["addr", "add", addrs.v6_cidr, "dev", dev])?;
        system::run("ip", &["link", "set", dev, "up"])?;
        let v6 = addrs.v6_cidr.split('/').next().unwrap_or_default();
        wait_v6_usable(dev, v6, Duration::from_secs(3))
    }

    fn wait_readable(&self, timeout: Duration) -> Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Round up so a sub-millisecond remainder still waits instead of spinning.
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        loop {
            // SAFETY: one valid pollfd for the duration of the call.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc >= 0 {
                return Ok(rc > 0);
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(sim_err!("poll on {}: {err}", self.name));
            }
        }
    }
}

impl Link for Tun {
    fn send(&self, packet: &[u8]) -> Result<()> {
        if self.trace {
            if let Ok(seg) = packet::parse(packet) {
                eprintln!("{} trace > {seg}", program_name());
            }
        }
        // One write is one packet on a TUN; a short write cannot happen.
        (&self.file)
            .write_all(packet)
            .context(format!("writing a packet to {}", self.name))
    }

    /// Segments `wanted` rejects are kept for other connections.
    fn recv_matching(
        &self,
        wanted: &dyn Fn(&Received) -> bool,
        deadline: Instant,
    ) -> Result<Option<Received>> {
        {
            let mut backlog = self.backlog.borrow_mut();
            if let Some(at) = backlog.iter().position(wanted) {
                return Ok(backlog.remove(at));
            }
        }
        let mut buf = vec![0u8; 65536];
        loop {
            let Some(remaining) = deadline.checked_duration_since(Instant::now()) else {
                return Ok(None);
            };
            if !self.wait_readable(remaining)? {
                return Ok(None);
            }
            let n = (&self.file)
                .read(&mut buf)
                .context(format!("reading from {}", self.name))?;
            let parsed = packet::parse(&buf[..n]);
            if self.trace {
                match &parsed {
                    Ok(seg) => eprintln!("{} trace < {seg}", program_name()),
                    Err(skip) => {
                        eprintln!("{} trace < {n} bytes skipped: {skip:?}", program_name())
                    }
                }
            }
            match parsed {
                Ok(seg) if wanted(&seg) => return Ok(Some(seg)),
                Ok(seg) => {
                    let mut backlog = self.backlog.borrow_mut();
                    if backlog.len() == BACKLOG_LIMIT {
                        backlog.pop_front();
                    }
                    backlog.push_back(seg);
                }
                Err(Skip::BadChecksum) => {
                    self.skipped_bad_checksum
                        .set(self.skipped_bad_checksum.get() + 1);
                }
                // Neighbour discovery, MLD, router solicitations: not ours.
                Err(Skip::NotTcp | Skip::Truncated) => {}
            }
        }
    }

    fn bad_checksums(&self) -> u64 {
        self.skipped_bad_checksum.get()
    }
}

/// The running program's name (`toa-lab`, `toa`), prefixed to trace lines.
fn program_name() -> String {
    std::env::args()
        .next()
        .as_deref()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "toa-sim".into())
}

/// A minimal initramfs has no udev, so the character device may be missing.
fn ensure_tun_node() -> Result<()> {
    let node = Path::new(TUN_NODE);
    if node.exists() {
        return Ok(());
    }
    std::fs::create_dir_all("/dev/net").context("creating /dev/net")?;
    let path = std::ffi::CString::new(TUN_NODE).expect("no NUL in a constant");
    // SAFETY: plain syscall on a NUL-terminated path.
    let rc = unsafe {
        libc::mknod(
            path.as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(TUN_MAJOR, TUN_MINOR),
        )
    };
    if rc < 0 {
        return Err(sim_err!(
            "mknod {TUN_NODE} c {TUN_MAJOR} {TUN_MINOR}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Waits until `addr` is on `dev` and no longer tentative, reading
/// /proc/net/if_inet6 (hex address, ifindex, prefix, scope, flags, name).
fn wait_v6_usable(dev: &str, addr: &str, limit: Duration) -> Result<()> {
    const IFA_F_TENTATIVE: u32 = 0x40;
    let want: std::net::Ipv6Addr = addr
        .parse()
        .map_err(|_| sim_err!("{addr:?} is not an IPv6 address"))?;
    let want_hex: String = want.octets().iter().map(|b| format!("{b:02x}")).collect();
    let deadline = Instant::now() + limit;
    let mut last_state = "absent".to_string();
    while Instant::now() < deadline {
        let table = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
        for line in table.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() >= 6 && cols[0] == want_hex && cols[5] == dev {
                let flags = u32::from_str_radix(cols[4], 16).unwrap_or(IFA_F_TENTATIVE);
                if flags & IFA_F_TENTATIVE == 0 {
                    return Ok(());
                }
                last_state = format!("tentative (flags {flags:#x})");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(sim_err!(
        "{addr} on {dev} is still {last_state} after {limit:?}"
    ))
}
