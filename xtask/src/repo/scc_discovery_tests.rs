//! Kernel discovery through a registered SUSE system, end to end: rpm's
//! `kernels_with` against SUSE Customer Center and an update server on
//! loopback (scc's test scene). Apart from scc's own tests because rpm
//! asks scc for the system's repositories: these read both.

use crate::repo::scc::tests::Scene;
use crate::repo::scc::API_ACCEPT;
use anyhow::Result;

impl Scene {
    /// The kernels rpm finds in `repo`, with the scene's credentials file as
    /// the recipe's credentials.
    pub(crate) fn kernels(
        &self,
        repo: &crate::distro::RpmRepo,
    ) -> Result<Vec<crate::distro::kernel::Kernel>> {
        let env = &repo.credentials.as_ref().unwrap().env;
        std::env::set_var(env, &self.creds_file);
        let out = crate::repo::rpm::kernels_with(
            &crate::repo::rpm::Net,
            &format!(
                "scc-test-{}",
                self.dir.file_name().unwrap().to_string_lossy()
            ),
            crate::distro::Family::Suse,
            "x86_64",
            repo,
        );
        std::env::remove_var(env);
        out
    }
}

const PASSWORD: &str = "231982b59ce961e38777c83685a5c42f";

#[test]
fn kernels_come_from_the_tokenized_urls_of_the_systems_services() {
    let scene = Scene::new("ok");
    let repo = scene.repo(&["https://updates.suse.com/repo/$RCE/RES7/x86_64/"]);
    let kernels = scene.kernels(&repo).unwrap();
    let found = crate::distro::kernel::found(&kernels);
    assert_eq!(
        found,
        [(
            "6.4.0-150600.23.47-default",
            "6.4.0-150600.23.47.2",
            "https://updates.suse.com/repo/$RCE/RES7/x86_64"
        )]
    );
    let log = scene.log.lock().unwrap().clone();
    let targets: Vec<&str> = log.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/connect/systems/activations",
            "/access/services/2562/repo/repoindex.xml",
            "/access/services/2502/repo/repoindex.xml",
            "/access/services/2493/repo/repoindex.xml",
            "/access/services/2510/repo/repoindex.xml",
            "/repo/$RCE/RES7/x86_64/repodata/repomd.xml?token",
            "/repo/$RCE/RES7/x86_64/repodata/primary.xml?token",
        ]
    );
    // The API request as SUSEConnect sends it; the update server gets
    // the token, never the password.
    // What `kernels --json` prints and `plan` reads: no token.
    let json = serde_json::to_string(&kernels).unwrap();
    assert!(
        !json.contains("?token") && !json.contains("<token>"),
        "{json}"
    );
    assert_eq!(log[0].header("Accept"), Some(API_ACCEPT));
    assert_eq!(log[0].header("Content-Type"), Some("application/json"));
    assert_eq!(log[0].header("System-Token"), None);
    assert!(log[..5].iter().all(|r| r.header("Authorization").is_some()));
    assert!(
        log[5..].iter().all(|r| r.header("Authorization").is_none()),
        "{log:?}"
    );
    // Nothing of the token in the cache's paths.
    let cache = crate::host::cache::cache_dir()
        .join("rpm")
        .join("scc-test-toa-scc-ok-".to_string() + &std::process::id().to_string());
    let mut paths = Vec::new();
    let mut todo = vec![cache];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            paths.push(e.path().display().to_string());
            if e.path().is_dir() {
                todo.push(e.path());
            }
        }
    }
    assert!(!paths.is_empty());
    assert!(
        paths
            .iter()
            .all(|p| !p.contains("token") && !p.contains('?')),
        "{paths:?}"
    );
}

#[test]
fn the_system_token_goes_back_to_scc() {
    let scene = Scene::new("system-token");
    let mut text = std::fs::read_to_string(&scene.creds_file).unwrap();
    text.push_str("system_token=7ee8e0fc-77ea-4d2b-a0d1-5aa7a4c0e0a7\n");
    std::fs::write(&scene.creds_file, text).unwrap();
    let repo = scene.repo(&["https://updates.suse.com/repo/$RCE/RES7/x86_64"]);
    scene.kernels(&repo).unwrap();
    let log = scene.log.lock().unwrap().clone();
    assert_eq!(
        log[0].header("System-Token"),
        Some("7ee8e0fc-77ea-4d2b-a0d1-5aa7a4c0e0a7")
    );
}

#[test]
fn rejected_credentials_are_named_without_the_password() {
    let scene = Scene::new("rejected");
    std::fs::write(
        &scene.creds_file,
        format!(
            "username=SCC_f93f438773944ef087a30a37af7fc0a5\npassword={}\n",
            "0".repeat(32)
        ),
    )
    .unwrap();
    let repo = scene.repo(&["https://updates.suse.com/repo/$RCE/RES7/x86_64"]);
    let err = format!("{:#}", scene.kernels(&repo).unwrap_err());
    assert!(
        err.contains("/connect/systems/activations: HTTP 401: the registration server rejected the system credentials in TOA_TEST_SCC_"),
        "{err}"
    );
    assert!(err.contains("(Invalid system credentials)"), "{err}");
    assert!(
        !err.contains(&"0".repeat(32)) && !err.contains(PASSWORD),
        "{err}"
    );
}

#[test]
fn a_product_not_activated_on_the_system_is_named() {
    let scene = Scene::new("not-activated");
    let repo = scene.repo(&[
        "https://updates.suse.com/repo/$RCE/RES7/x86_64",
        "https://updates.suse.com/SUSE/Updates/SLE-SERVER/12-SP5/x86_64/update/",
    ]);
    let err = format!("{:#}", scene.kernels(&repo).unwrap_err());
    assert!(
        err.contains("is not entitled to this repository: no service of its activated products (Python 3 Module 15 SP6 x86_64, Basesystem Module 15 SP6 x86_64, SUSE Linux Enterprise Server 15 SP6 x86_64, Server Applications Module 15 SP6 x86_64) lists https://updates.suse.com/SUSE/Updates/SLE-SERVER/12-SP5/x86_64/update; activate the product"),
        "{err}"
    );
    assert!(
        err.contains("SUSE_Linux_Enterprise_Server_15_SP6_x86_64:RES7 http://127.0.0.1:"),
        "{err}"
    );
    assert!(err.contains("/repo/$RCE/RES7/x86_64?<token>"), "{err}");
    assert!(!err.contains("?token") && !err.contains(PASSWORD), "{err}");
}

#[test]
fn an_unreachable_server_is_named_by_host() {
    let scene = Scene::new("unreachable");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut repo = scene.repo(&["https://updates.suse.com/repo/$RCE/RES7/x86_64"]);
    repo.credentials.as_mut().unwrap().server = Some(format!("http://127.0.0.1:{port}"));
    let err = format!("{:#}", scene.kernels(&repo).unwrap_err());
    assert!(err.contains(&format!("cannot reach 127.0.0.1:{port}: GET http://127.0.0.1:{port}/connect/systems/activations")), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}

/// The Python 3 module's index (libzypp's path example) gives its
/// repositories below the service, opened with its credentials file.
#[test]
fn a_repository_opened_with_the_service_credentials_is_refused() {
    let scene = Scene::new("credentials-file");
    let repo = scene.repo(&["https://updates.suse.com/access/services/2562/repo/products/foo"]);
    let err = format!("{:#}", scene.kernels(&repo).unwrap_err());
    assert!(
        err.contains("Python_3_Module_15_SP6_x86_64:company-foo (http://127.0.0.1:")
            && err.contains(
                "/access/services/2562/repo/products/foo) is opened with a zypp credentials file"
            ),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
}

#[test]
fn a_failed_repository_download_shows_no_token() {
    let scene = Scene::new("no-file");
    let repo = scene.repo(&["https://updates.suse.com/repo/$RCE/RES7/src"]);
    let err = format!("{:#}", scene.kernels(&repo).unwrap_err());
    assert!(
        err.contains("/repo/$RCE/RES7/src/repodata/repomd.xml?<token>: HTTP 404"),
        "{err}"
    );
    assert!(!err.contains("?token"), "{err}");
}
