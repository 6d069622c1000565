//! Signature checks with gpgv, against one keyring.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// What gpgv's `--status-fd` lines say about the signatures of one file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Signatures {
    /// Fingerprints of good signatures by keys of the keyring (`VALIDSIG`).
    pub good: Vec<String>,
    /// Key ids of signatures that do not match the signed text (`BADSIG`).
    pub bad: Vec<String>,
    /// Key ids of signatures by keys the keyring lacks (`NO_PUBKEY`).
    pub unknown_key: Vec<String>,
    /// Key ids of signatures that could not be checked for another reason
    /// (`ERRSIG` without `NO_PUBKEY`), or whose key expired or was revoked
    /// (`EXPKEYSIG`, `REVKEYSIG`, `EXPSIG`).
    pub unusable: Vec<String>,
}

impl Signatures {
    /// Reads gpgv's status lines (`[GNUPG:] KEYWORD args`); other lines are skipped.
    pub fn parse(status: &str) -> Signatures {
        let mut out = Signatures::default();
        let mut errsig = Vec::new();
        for line in status.lines() {
            let Some(rest) = line.strip_prefix("[GNUPG:] ") else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let keyword = words.next().unwrap_or_default();
            let arg = words.next().unwrap_or_default().to_string();
            match keyword {
                "VALIDSIG" => out.good.push(arg),
                "BADSIG" => out.bad.push(arg),
                "NO_PUBKEY" => out.unknown_key.push(arg),
                "ERRSIG" => errsig.push(arg),
                "EXPKEYSIG" | "REVKEYSIG" | "EXPSIG" => out.unusable.push(arg),
                _ => {}
            }
        }
        errsig.retain(|id| !out.unknown_key.contains(id));
        out.unusable.extend(errsig);
        out
    }

    /// apt's rule: trusted when at least one signature is good and none is
    /// bad; signatures by keys the keyring lacks (a second signer, a newer
    /// release key) are left aside.
    pub fn verdict(&self) -> Result<()> {
        if !self.bad.is_empty() {
            bail!("BAD signature from key {}", self.bad.join(", "));
        }
        if self.good.is_empty() {
            let mut why = Vec::new();
            if !self.unknown_key.is_empty() {
                why.push(format!(
                    "signed only by keys the keyring lacks ({})",
                    self.unknown_key.join(", ")
                ));
            }
            if !self.unusable.is_empty() {
                why.push(format!(
                    "signatures that cannot be used ({})",
                    self.unusable.join(", ")
                ));
            }
            if why.is_empty() {
                why.push("no signature".to_string());
            }
            bail!("no good signature: {}", why.join("; "));
        }
        Ok(())
    }
}

/// Runs gpgv with `--status-fd 2` against `keyring` and applies
/// [`Signatures::verdict`]; `what` names the file in the error.
fn run_gpgv(keyring: &Path, args: &[&Path], what: &Path) -> Result<std::process::Output> {
    let mut argv: Vec<std::ffi::OsString> = vec![
        "--status-fd".into(),
        "2".into(),
        "--keyring".into(),
        keyring.into(),
    ];
    argv.extend(args.iter().map(|a| a.as_os_str().to_owned()));
    let out = duct::cmd("gpgv", argv)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .context("running gpgv")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Err(err) = Signatures::parse(&stderr).verdict() {
        let messages: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.starts_with("[GNUPG:] "))
            .collect();
        bail!(
            "signature check of {} failed: {err} (gpgv --keyring {} exited with {}):\n{}",
            what.display(),
            keyring.display(),
            out.status,
            messages.join("\n").trim()
        );
    }
    Ok(out)
}

/// Verify a clearsigned file with gpgv and return the signed text. Trusted
/// when gpgv reports at least one good signature by a key of `keyring` and
/// no bad one ([`Signatures::verdict`]): gpgv's own exit status also fails
/// when a second signature is by a key the keyring lacks, which apt accepts.
pub fn gpgv_verify(file: &Path, keyring: &Path) -> Result<String> {
    let out = run_gpgv(
        keyring,
        &[Path::new("--output"), Path::new("-"), file],
        file,
    )?;
    if out.stdout.is_empty() {
        bail!(
            "gpgv --keyring {} wrote no signed text for {} (exit status {})",
            keyring.display(),
            file.display(),
            out.status
        );
    }
    String::from_utf8(out.stdout).context("verified InRelease is not UTF-8")
}

/// Verify `data` against its detached signature `signature` (`repomd.xml.asc`)
/// with gpgv, by the same rule as [`gpgv_verify`].
pub fn gpgv_verify_detached(signature: &Path, data: &Path, keyring: &Path) -> Result<()> {
    run_gpgv(keyring, &[signature, data], data).map(|_| ())
}

/// Whether gpgv runs here.
pub fn have_gpgv() -> bool {
    duct::cmd!("gpgv", "--version")
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()
        .is_ok_and(|o| o.status.success())
}
