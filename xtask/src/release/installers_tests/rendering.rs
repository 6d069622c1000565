//! The rendered scripts themselves: placeholders, shellcheck, --version and
//! --help.

use super::*;

#[test]
fn rendering_inlines_lib_and_fills_placeholders() {
    for (name, source) in SCRIPTS {
        let text = render(source, "https://downloads.example.com/toa/").unwrap();
        assert!(!text.contains("@TOA_"), "{name}");
        assert!(!text.contains(LIB_MARKER), "{name}");
        assert!(text.contains("TOA_DEFAULT_BASE_URL='https://downloads.example.com/toa'"));
        assert!(text.contains(&format!("TOA_VERSION='{VERSION}'")));
        assert!(
            text.contains("function verify_sha256 {"),
            "{name} has lib.sh"
        );
        assert_eq!(
            text.lines().last(),
            Some("main \"$@\" || exit 1"),
            "{name} runs nothing before its last line"
        );
    }
    for bad in [
        "ftp://x",
        "https://",
        "https://a b",
        "https://x/'y",
        "https://x/$(id)",
        "example.com",
    ] {
        assert!(check_base_url(bad).is_err(), "{bad} accepted");
    }
    assert!(render("no marker\n", "https://x").is_err());
}

#[test]
fn rendered_scripts_pass_shellcheck() {
    let Some(shellcheck) = which("shellcheck") else {
        panic!("shellcheck is not installed; install it with: sudo apt-get install -y shellcheck");
    };
    let dir = crate::testing::scratch("shellcheck");
    let written = write_installers(&dir, "https://downloads.example.com/toa").unwrap();
    for path in written {
        let out = Command::new(&shellcheck)
            .args(["--shell=bash", "--severity=style"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shellcheck {}:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn version_and_help() {
    let lab = Lab::new("version");
    let out = lab.run("install_toa.sh", &["--version"]);
    assert!(out.ok);
    assert_eq!(out.stdout, format!("install_toa.sh (toa) {VERSION}\n"));
    let out = lab.run("compile_install_toa.sh", &["--help"]);
    assert!(
        out.ok && out.stdout.contains("--trusted-proxies"),
        "{}",
        out.text()
    );
    let out = lab.run("install_toa.sh", &["--bogus"]);
    assert!(!out.ok && out.stderr.contains("unknown option '--bogus'"));
    assert!(out.calls.is_empty());
    lab.cleanup();
}
