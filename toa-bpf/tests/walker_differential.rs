//! The option walk twice: bpf/toa.bpf.c's `scan` (compiled natively here with
//! the host's C compiler, the whole program file included as it is) against
//! toa.ko's Rust walker (toa-kmod/src/option.rs), on edge cases and on
//! seeded random option areas. Both must agree on every input: which TOA is
//! taken (format, port, address), none, or a malformed area.
//!
//! The C side runs as a small program reading one case per line on stdin:
//! `formats hex-area hex-beyond`, where `hex-beyond` is what follows the
//! option area in memory (the payload after a sock_ops header, the padding of
//! the fexit copy): nothing the walk may depend on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use toa_kmod::option::{scan, ClientAddr, Formats, Scan, MAX_OPTIONS_LEN};

/// Calls the program's `scan` on one case; prints what it decided, as
/// `none`, `malformed` or `found FAMILY PORT HEX-ADDRESS`.
const HARNESS: &str = r#"
#include <stdio.h>
#include <string.h>
#include TOA_BPF_C

static int hex(const char *s, __u8 *out, int max)
{
	int n = 0;
	unsigned v;

	while (s[0] && s[0] != ' ' && s[0] != '\n' && s[1] && n < max) {
		if (sscanf(s, "%2x", &v) != 1)
			return -1;
		out[n++] = v;
		s += 2;
	}
	return n;
}

int main(void)
{
	static char line[1024];

	while (fgets(line, sizeof(line), stdin)) {
		unsigned formats;
		char area_hex[256] = "", beyond_hex[256] = "";
		__u8 buf[256];
		struct client c;

		memset(buf, 0, sizeof(buf));
		memset(&c, 0, sizeof(c));
		if (sscanf(line, "%x %255s %255s", &formats, area_hex, beyond_hex) < 2)
			return 2;
		int len = strcmp(area_hex, "-") ? hex(area_hex, buf, 64) : 0;
		int extra = strcmp(beyond_hex, "-") && beyond_hex[0] ? hex(beyond_hex, buf + len, 128) : 0;
		if (len < 0 || extra < 0)
			return 2;
		enum scan r = scan(buf, buf + len + extra, len, formats, &c);
		if (r == SCAN_NONE) {
			puts("none");
		} else if (r == SCAN_MALFORMED) {
			puts("malformed");
		} else {
			__u8 *a = (__u8 *)c.addr;
			__u8 *p = (__u8 *)&c.port;
			printf("found %u %02x%02x ", c.family, p[0], p[1]);
			for (int i = 0; i < (c.family == AF_INET ? 4 : 16); i++)
				printf("%02x", a[i]);
			puts("");
		}
	}
	return 0;
}
"#;

fn compile_harness() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("walker-differential");
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("harness.c");
    std::fs::write(&source, HARNESS).unwrap();
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf/toa.bpf.c");
    let exe = dir.join("harness");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-O1", "-w", "-o"])
        .arg(&exe)
        .arg(format!("-DTOA_BPF_C=\"{}\"", program.display()))
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("running the C compiler `{cc}` (set CC to use another): {e}"));
    assert!(
        out.status.success(),
        "compiling bpf/toa.bpf.c natively with `{cc}`:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// What the Rust walker decides, in the harness's words. The BPF program
/// keeps an IPv4-mapped client as IPv4, as toa.ko's policy does (peer.rs).
fn rust_answer(area: &[u8], formats: u32) -> String {
    match scan(area, Formats(formats)) {
        Scan::NotFound => "none".into(),
        Scan::Malformed(_) => "malformed".into(),
        Scan::Found(toa) => {
            let (family, addr): (u32, Vec<u8>) = match toa.addr {
                ClientAddr::V4(a) => (2, a.to_vec()),
                ClientAddr::V6(a) if a[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] => {
                    (2, a[12..].to_vec())
                }
                ClientAddr::V6(a) => (10, a.to_vec()),
            };
            format!(
                "found {family} {} {}",
                hex(&toa.port.to_be_bytes()),
                hex(&addr)
            )
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Case {
    formats: u32,
    area: Vec<u8>,
    beyond: Vec<u8>,
}

fn line(c: &Case) -> String {
    let h = |b: &[u8]| if b.is_empty() { "-".into() } else { hex(b) };
    format!("{:x} {} {}\n", c.formats, h(&c.area), h(&c.beyond))
}

/// xorshift64*: seeded, so a failure names a case that comes back.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

const TOA_SHAPES: [(u8, u8); 4] = [(254, 8), (254, 20), (253, 20), (200, 8)];

/// One option, well formed or not, of the kinds that matter to the walk.
fn random_option(r: &mut Rng, out: &mut Vec<u8>) {
    match r.below(12) {
        0 => out.push(0),
        1 | 2 => out.push(1),
        3..=6 => {
            let (kind, len) = TOA_SHAPES[r.below(4) as usize];
            out.extend([kind, len]);
            // Mapped IPv6 clients now and then, else random bytes.
            let mapped = len == 20 && r.below(4) == 0;
            for i in 2..len {
                out.push(match (mapped, i) {
                    (true, 4..=13) => 0,
                    (true, 14 | 15) => 0xff,
                    _ => r.byte(),
                });
            }
        }
        7 => {
            // A TOA kind with another length (RFC 6994 experiments use 254).
            let kind = [254, 253, 200][r.below(3) as usize];
            let len = r.below(24) as u8;
            out.extend([kind, len]);
            out.extend((2..len.max(2)).map(|_| r.byte()));
        }
        8 => {
            // Timestamps, MSS, SACK-permitted, window scale.
            let (kind, len) = [(8, 10), (2, 4), (4, 2), (3, 3)][r.below(4) as usize];
            out.extend([kind, len]);
            out.extend((2..len).map(|_| r.byte()));
        }
        9 => out.extend([r.byte(), r.below(3) as u8]),
        10 => out.push(r.byte()),
        _ => {
            let len = r.below(42) as u8;
            out.extend([r.byte(), len]);
            out.extend((2..len.max(2)).map(|_| r.byte()));
        }
    }
}

fn random_case(r: &mut Rng) -> Case {
    let formats = r.below(16) as u32;
    let mut area = Vec::new();
    if r.below(8) == 0 {
        area.extend((0..r.below(41)).map(|_| r.byte()));
    } else {
        let options = r.below(8);
        for _ in 0..options {
            random_option(r, &mut area);
        }
    }
    // A TCP header's option area: at most 40 bytes, a multiple of 4 mostly.
    area.truncate(MAX_OPTIONS_LEN);
    if r.below(4) != 0 {
        let padded = (area.len().div_ceil(4) * 4).min(MAX_OPTIONS_LEN);
        while area.len() < padded {
            area.push(if r.below(2) == 0 { 0 } else { 1 });
        }
    }
    let beyond = match r.below(3) {
        0 => Vec::new(),
        _ => (0..r.below(64)).map(|_| r.byte()).collect(),
    };
    Case {
        formats,
        area,
        beyond,
    }
}

fn edge_cases() -> Vec<Case> {
    let v4 = [254u8, 8, 0x9c, 0x41, 198, 51, 100, 7];
    let mut v6 = vec![253u8, 20, 0x9c, 0x42, 0x20, 0x01, 0x0d, 0xb8];
    v6.extend([0; 11]);
    v6.push(7);
    let mut mapped = vec![254u8, 20, 0x01, 0xbb];
    mapped.extend([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]);
    let cat = |parts: &[&[u8]]| parts.concat();
    let areas: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![1; 40],
        v4.to_vec(),
        v6.clone(),
        mapped.clone(),
        cat(&[&[2, 4, 5, 0xb4, 1, 1, 4, 2], &v4, &[0, 0, 0, 0]]),
        cat(&[&v4, &v6]),
        cat(&[&v6, &v4]),
        cat(&[&[200, 8, 0, 80, 1, 2, 3, 4], &v4]),
        cat(&[&v4, &[0], &[9, 0]]), // EOL ends the walk: what follows is padding
        cat(&[&v4, &[9]]),          // a kind with no length byte
        cat(&[&v4, &[9, 0]]),       // length 0
        cat(&[&v4, &[9, 1]]),       // length 1
        cat(&[&v4, &[9, 9, 0, 0]]), // runs past the end
        v4[..7].to_vec(),           // a TOA cut short
        cat(&[&[1; 12], &v6, &[1; 8]]), // 40 bytes exactly
        cat(&[&[1; 33], &[254, 8, 0, 1, 2, 3, 4]]), // a TOA ending at byte 40
        cat(&[&[1; 34], &[254, 8, 0, 1, 2, 3]]), // one byte short of 40
        cat(&[&[8, 10, 1, 2, 3, 4, 5, 6, 7, 8], &[254, 20], &[0; 18]]),
        vec![254, 2],
        vec![254, 8],
        vec![254, 40],
    ];
    let mut cases = Vec::new();
    for area in areas {
        for formats in [0, 0x1, 0x2, 0x4, 0x8, 0x5, 0xa, 0xf] {
            for beyond in [vec![], vec![254, 8, 1, 1, 1, 1, 1, 1], vec![0xff; 60]] {
                cases.push(Case {
                    formats,
                    area: area.clone(),
                    beyond,
                });
            }
        }
    }
    cases
}

#[test]
fn the_bpf_walker_agrees_with_the_rust_walker() {
    let harness = compile_harness();
    let mut rng = Rng(0x70a_5eed_2026_1205);
    let mut cases = edge_cases();
    let edge = cases.len();
    cases.extend((0..200_000).map(|_| random_case(&mut rng)));

    let mut input = String::new();
    for c in &cases {
        input.push_str(&line(c));
    }
    let mut child = Command::new(&harness)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "the harness failed: {:?}", out.status);
    let answers: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(answers.len(), cases.len());

    let mut seen = std::collections::BTreeMap::new();
    for (i, (c, bpf)) in cases.iter().zip(&answers).enumerate() {
        let rust = rust_answer(&c.area, c.formats);
        assert_eq!(
            *bpf,
            rust,
            "case {i} ({}): formats {:#x}, area {}, bytes beyond it {}",
            if i < edge { "edge" } else { "random" },
            c.formats,
            hex(&c.area),
            hex(&c.beyond)
        );
        *seen
            .entry(rust.split(' ').next().unwrap().to_string())
            .or_insert(0) += 1;
    }
    // The random cases reach every outcome often.
    for outcome in ["none", "malformed", "found"] {
        let n = seen.get(outcome).copied().unwrap_or(0);
        assert!(n > 10_000, "only {n} cases ended {outcome}: {seen:?}");
    }
}
