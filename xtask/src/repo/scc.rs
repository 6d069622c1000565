//! The repositories SUSE serves only to registered systems (SLES), found the
//! way a registered system finds them.
//!
//! On a SLES system, SUSEConnect (github.com/SUSE/connect-ng) keeps the
//! system's credentials in `/etc/zypp/credentials.d/SCCcredentials`
//! (`username=SCC_<hash>`, `password=...`, maybe `system_token=...`) and adds
//! one zypper service per activated product (`zypper addservice -t ris URL
//! NAME`, internal/zypper/zypper.go). Zypper then reads each service's
//! `repo/repoindex.xml` (libzypp zypp/ng/repo/workflows/serviceswf.cc) with
//! the same credentials; the index lists the repositories, each URL carrying
//! an access token as its query:
//! `https://updates.suse.com/SUSE/Updates/SLE-SERVER/12-SP5/x86_64/update?<token>`.
//! The update servers take no credentials (basic auth is refused): only the
//! tokenized URLs open a repository.
//!
//! Here: `GET <server>/connect/systems/activations` with the system
//! credentials (pkg/registration/activation.go) gives the services; each
//! service's index gives the tokenized URLs; the recipe's `baseurls` (the
//! URLs without tokens) pick the repositories. Tokens and the password never
//! reach a message: [`RepoUrl`]'s `Display` shows `?<token>`.

use crate::distro::Credentials;
use crate::distro::System;
use crate::repo::download::TOKEN_SHOWN;
use anyhow::{bail, Context, Result};
use quick_xml::events::Event;
use std::collections::HashMap;
use std::time::Duration;

/// The API version SUSEConnect asks for (connect-ng pkg/connection/connection.go,
/// `DefaultAPIVersion`).
pub(crate) const API_ACCEPT: &str = "application/json,application/vnd.scc.suse.com.v4+json";

/// Query parameters that are libzypp's own settings, never sent to a server
/// (libzypp zypp-curl/curlhelper.cc, `clearQueryString`). `credentials`
/// names the zypp credentials file a URL is opened with.
const ZYPP_PARAMS: &[&str] = &[
    "cookies",
    "proxy",
    "proxyport",
    "proxyuser",
    "proxypass",
    "ssl_capath",
    "ssl_verify",
    "ssl_clientcert",
    "ssl_clientkey",
    "timeout",
    "auth",
    "username",
    "password",
    "mediahandler",
    "credentials",
    "head_requests",
];

/// One service of an activated product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// `SUSE_Linux_Enterprise_Server_12_SP5_x86_64`
    pub name: String,
    /// `https://scc.suse.com/access/services/1234?credentials=<name>`
    pub url: String,
    /// `SUSE Linux Enterprise Server 12 SP5 x86_64`
    pub product: String,
}

/// A repository URL, split into its address and its access token.
#[derive(Clone, PartialEq, Eq)]
pub struct RepoUrl {
    /// Scheme, host and path, no trailing slash and no query.
    base: String,
    token: Option<String>,
    /// Opened with a zypp credentials file (`credentials=` in the URL, as
    /// registration proxies hand them out, and repositories given by path
    /// below such a service): it wants the system's password, which this
    /// build keeps out of the builder.
    credentials_file: bool,
}

impl RepoUrl {
    /// A URL that needs no token.
    pub fn plain(base: &str) -> RepoUrl {
        RepoUrl {
            base: base.trim_end_matches('/').to_string(),
            token: None,
            credentials_file: false,
        }
    }

    /// A repository URL from an index: its query (libzypp's own parameters
    /// left out) is the access token.
    pub fn parse(url: &str) -> Result<RepoUrl> {
        let shown = shown_url(url);
        let mut parsed =
            reqwest::Url::parse(url).with_context(|| format!("{shown} is not a URL"))?;
        let query = parsed.query().map(str::to_string);
        parsed.set_query(None);
        parsed.set_fragment(None);
        if !parsed.username().is_empty() || parsed.password().is_some() {
            bail!("{shown}: a repository URL with a user name is not supported");
        }
        let mut token = Vec::new();
        let mut credentials_file = false;
        for part in query.iter().flat_map(|q| q.split('&')) {
            let key = part.split('=').next().unwrap_or_default();
            credentials_file |= key == "credentials";
            if !part.is_empty() && !ZYPP_PARAMS.contains(&key) {
                token.push(part);
            }
        }
        Ok(RepoUrl {
            base: parsed.as_str().trim_end_matches('/').to_string(),
            token: (!token.is_empty()).then(|| token.join("&")),
            credentials_file,
        })
    }

    /// The URL of `rel` (`repodata/repomd.xml`) in the repository, with the
    /// token: libzypp appends a file's path to the URL's path and keeps the query.
    pub fn file(&self, rel: &str) -> String {
        let path = format!("{}/{}", self.base, rel.trim_start_matches('/'));
        match &self.token {
            Some(token) => format!("{path}?{token}"),
            None => path,
        }
    }

    /// The whole URL, token included: only for the builder's `.repo` file.
    pub fn secret_url(&self) -> String {
        match &self.token {
            Some(token) => format!("{}?{token}", self.base),
            None => self.base.clone(),
        }
    }

    /// The URL's path, no slash at either end.
    fn path(&self) -> String {
        reqwest::Url::parse(&self.base)
            .map(|u| u.path().trim_matches('/').to_string())
            .unwrap_or_default()
    }
}

impl std::fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.token {
            Some(_) => write!(f, "{}?{TOKEN_SHOWN}", self.base),
            None => f.write_str(&self.base),
        }
    }
}

impl std::fmt::Debug for RepoUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RepoUrl({self})")
    }
}

/// `url` without its user, password and query, for messages (the query of a
/// repository URL is its access token).
pub fn shown_url(url: &str) -> String {
    crate::repo::download::redact(url)
}

/// One repository a service's index lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedRepo {
    /// The service it belongs to (zypper names the repository `<service>:<alias>`).
    pub service: String,
    pub alias: String,
    pub name: String,
    pub url: RepoUrl,
}

/// The services of `GET /connect/systems/activations`.
pub fn parse_activations(json: &str) -> Result<Vec<Service>> {
    #[derive(serde::Deserialize)]
    struct Activation {
        service: Option<ServiceJson>,
    }
    #[derive(serde::Deserialize)]
    struct ServiceJson {
        name: String,
        url: String,
        #[serde(default)]
        product: Option<Product>,
    }
    #[derive(serde::Deserialize)]
    struct Product {
        #[serde(default)]
        friendly_name: Option<String>,
    }
    let activations: Vec<Activation> =
        serde_json::from_str(json).context("not a list of activations")?;
    Ok(activations
        .into_iter()
        .filter_map(|a| a.service)
        .map(|s| Service {
            product: s
                .product
                .and_then(|p| p.friendly_name)
                .unwrap_or_else(|| s.name.clone()),
            name: s.name,
            url: s.url,
        })
        .collect())
}

/// Where zypper reads a service's index: `repo/repoindex.xml` below the
/// service URL, libzypp's own query parameters left out.
pub fn repoindex_url(service_url: &str) -> Result<String> {
    let mut url = service_root(service_url)?;
    let path = format!("{}/repo/repoindex.xml", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url.to_string())
}

/// The service URL as a server sees it: no libzypp parameter in the query.
fn service_root(service_url: &str) -> Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(service_url).with_context(|| {
        format!(
            "the service URL {:?} is not an http(s) URL",
            shown_url(service_url)
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!(
            "the service URL {} is not an http(s) URL",
            shown_url(service_url)
        );
    }
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !ZYPP_PARAMS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    if !kept.is_empty() {
        url.query_pairs_mut().extend_pairs(kept);
    }
    Ok(url)
}

/// The repositories of `service`'s index, as libzypp reads it
/// (zypp/parser/RepoindexFileReader.cc): `%{VAR}` replaced from the
/// `<repoindex>` attributes (and `%{alias}`, `%{url}` of the repo itself);
/// a `path` is below `url`, or below the service URL, after `repo/`.
pub fn parse_repoindex(xml: &str, service: &Service) -> Result<Vec<IndexedRepo>> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut global: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    loop {
        match reader
            .read_event()
            .context("repoindex.xml is not well-formed XML")?
        {
            Event::Start(e) | Event::Empty(e) => {
                let attrs = attributes(&e)?;
                match e.local_name().as_ref() {
                    b"repoindex" => global = attrs.into_iter().collect(),
                    b"repo" => out.push(index_repo(&attrs, &global, service)?),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

fn attributes(e: &quick_xml::events::BytesStart) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for a in e.attributes() {
        let a = a.context("repoindex.xml: a malformed attribute")?;
        out.push((
            String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned(),
            a.unescape_value()?.into_owned(),
        ));
    }
    Ok(out)
}

fn index_repo(
    attrs: &[(String, String)],
    global: &HashMap<String, String>,
    service: &Service,
) -> Result<IndexedRepo> {
    let mut section: HashMap<String, String> = HashMap::new();
    let get = |key: &str, section: &HashMap<String, String>| {
        attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| replace_vars(v, section, global))
            .filter(|v| !v.is_empty())
    };
    let Some(alias) = get("alias", &section) else {
        bail!("{}: a <repo> has no alias", service.name);
    };
    section.insert("alias".into(), alias.clone());
    let url = get("url", &section);
    let path = get("path", &section);
    let full = match (&url, &path) {
        (Some(url), None) => url.clone(),
        (Some(url), Some(path)) => below(url, path)?,
        // The service's own URL, libzypp's parameters included: its
        // `credentials=` opens these repositories too.
        (None, Some(path)) => below(&service.url, path)?,
        (None, None) => bail!(
            "{}: repository {alias} has neither url nor path",
            service.name
        ),
    };
    if let Some(url) = url {
        section.insert("url".into(), url);
    }
    let name = get("name", &section).unwrap_or_else(|| alias.clone());
    let url =
        RepoUrl::parse(&full).with_context(|| format!("{}: repository {alias}", service.name))?;
    Ok(IndexedRepo {
        service: service.name.clone(),
        alias,
        name,
        url,
    })
}

/// `<url path>/repo/<path>`, the query kept (libzypp hard-codes the `repo/`).
fn below(url: &str, path: &str) -> Result<String> {
    let mut u =
        reqwest::Url::parse(url).with_context(|| format!("{} is not a URL", shown_url(url)))?;
    let joined = format!(
        "{}/repo/{}",
        u.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    u.set_path(&joined);
    Ok(u.to_string())
}

/// libzypp's `VarReplacer`: `%{name}` from the repo's own variables, else the
/// index's; an undefined or unterminated one stays as it is.
fn replace_vars(
    value: &str,
    section: &HashMap<String, String>,
    global: &HashMap<String, String>,
) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("%{") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        out.push_str(&rest[..start]);
        match section.get(name).or_else(|| global.get(name)) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 3 + len]),
        }
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    out
}

/// The repository of the index that the recipe's `baseurl` names: the same
/// path (the host is the index's to choose).
pub fn find<'a>(baseurl: &str, index: &'a [IndexedRepo]) -> Option<&'a IndexedRepo> {
    let want = RepoUrl::plain(baseurl).path();
    index.iter().find(|r| r.url.path() == want)
}

/// The system's repositories for each of `baseurls`, in their order.
pub fn repositories(
    distro: &str,
    baseurls: &[String],
    creds: &Credentials,
) -> Result<Vec<RepoUrl>> {
    let system = creds.read(distro)?;
    let server = creds.server();
    let client = client()?;
    let services = activations(&client, server, &system, creds).with_context(|| {
        format!(
            "{distro}: the activated products of the system in {}",
            creds.env
        )
    })?;
    let mut index = Vec::new();
    let mut read = std::collections::HashSet::new();
    // Several activations may share a service: its index is read once.
    for service in services.iter().filter(|s| read.insert(s.url.clone())) {
        index.extend(
            service_index(&client, service, &system, creds).with_context(|| {
                format!(
                    "{distro}: the repositories of the service {} ({})",
                    service.name, service.product
                )
            })?,
        );
    }
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for base in baseurls {
        match find(base, &index) {
            Some(repo) if repo.url.credentials_file => bail!(
                "{distro}: {}:{} ({}) is opened with a zypp credentials file (a registration \
                 proxy's repository), not an access token: the builder would need the system's \
                 password; register the system with SUSE Customer Center",
                repo.service,
                repo.alias,
                repo.url
            ),
            Some(repo) => out.push(repo.url.clone()),
            None => missing.push(base.trim_end_matches('/')),
        }
    }
    if !missing.is_empty() {
        let offered: Vec<String> = index
            .iter()
            .map(|r| format!("{}:{} {}", r.service, r.alias, r.url))
            .collect();
        bail!(
            "{distro}: the system of {} is not entitled to {}: no service of its activated \
             products ({}) lists {}; activate the product on that system \
             (SUSEConnect --status shows what is). Its services list: {}",
            creds.env,
            if missing.len() == 1 {
                "this repository"
            } else {
                "these repositories"
            },
            if services.is_empty() {
                "none".to_string()
            } else {
                services
                    .iter()
                    .map(|s| s.product.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            missing.join(", "),
            if offered.is_empty() {
                "nothing".to_string()
            } else {
                offered.join("; ")
            }
        );
    }
    Ok(out)
}

fn client() -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .user_agent(concat!("toa-xtask/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")
}

/// `GET /connect/systems/activations` as connect-ng sends it: its JSON
/// headers, the system credentials as basic auth, and the system token.
fn activations(
    client: &reqwest::blocking::Client,
    server: &str,
    system: &System,
    creds: &Credentials,
) -> Result<Vec<Service>> {
    let url = format!(
        "{}/connect/systems/activations",
        server.trim_end_matches('/')
    );
    let mut request = client
        .get(&url)
        .header("Content-Type", "application/json")
        .header("Accept", API_ACCEPT)
        .basic_auth(&system.username, Some(&system.password));
    if let Some(token) = &system.system_token {
        request = request.header("System-Token", token);
    }
    let body = send(request, &url, creds)?;
    parse_activations(&body).with_context(|| format!("{} answered", shown_url(&url)))
}

/// A service's repository index, read with the system credentials as zypper
/// reads it with the service's credentials file (the same login).
fn service_index(
    client: &reqwest::blocking::Client,
    service: &Service,
    system: &System,
    creds: &Credentials,
) -> Result<Vec<IndexedRepo>> {
    let url = repoindex_url(&service.url)?;
    let request = client
        .get(&url)
        .basic_auth(&system.username, Some(&system.password));
    let body = send(request, &url, creds)?;
    parse_repoindex(&body, service).with_context(|| format!("{} answered", shown_url(&url)))
}

/// The body of a successful answer; otherwise an error that says what the
/// server refused, or which host could not be reached.
fn send(
    request: reqwest::blocking::RequestBuilder,
    url: &str,
    creds: &Credentials,
) -> Result<String> {
    let shown = shown_url(url);
    let response = request.send().map_err(|e| unreachable(url, &e))?;
    let status = response.status();
    let text = response.text().map_err(|e| {
        anyhow::anyhow!(
            "GET {shown}: reading the answer failed: {}",
            e.without_url()
        )
    })?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        bail!(
            "GET {shown}: HTTP 401: the registration server rejected the system credentials in {} \
             ({}); take them from a system registered now (SUSEConnect --status), \
             /etc/zypp/credentials.d/SCCcredentials",
            creds.env,
            api_error(&text).unwrap_or_else(|| "no reason given".into())
        );
    }
    if !status.is_success() {
        bail!(
            "GET {shown}: HTTP {status}{}",
            api_error(&text)
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    }
    Ok(text)
}

/// The message of an SCC error answer (`{"error": ..., "localized_error": ...}`,
/// connect-ng pkg/connection/api_error.go).
fn api_error(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ApiError {
        error: Option<String>,
        localized_error: Option<String>,
    }
    let e: ApiError = serde_json::from_str(body).ok()?;
    e.localized_error.or(e.error).filter(|m| !m.is_empty())
}

/// A request that got no answer: names the host and the cause, never the URL's secrets.
fn unreachable(url: &str, err: &reqwest::Error) -> anyhow::Error {
    let host = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .unwrap_or_else(|| shown_url(url));
    let mut why: &dyn std::error::Error = err;
    while let Some(source) = why.source() {
        why = source;
    }
    let why = if err.is_timeout() {
        "timed out".to_string()
    } else {
        why.to_string().replace(url, &shown_url(url))
    };
    anyhow::anyhow!(
        "cannot reach {host}: GET {}: {why}; check the network and the proxy settings \
         (http_proxy, https_proxy)",
        shown_url(url)
    )
}

/// A zypper `.repo` file with one section per repository: `(alias, name,
/// url)`. The builder mounts it into the container; it is the only place a
/// token is written.
pub fn repo_file(repos: &[(String, String, String)]) -> String {
    let mut out = String::new();
    for (alias, name, url) in repos {
        out.push_str(&format!(
            "[{alias}]\nname={name}\nenabled=1\nautorefresh=1\nbaseurl={url}\ntype=rpm-md\n\n"
        ));
    }
    out
}

/// The alias the builder gives the repository at `baseurl` (from its path,
/// so it is known without asking SCC): `toa-SUSE_Updates_SLE-SERVER_12-SP5_x86_64_update`.
pub fn builder_alias(baseurl: &str) -> String {
    let path = RepoUrl::plain(baseurl).path();
    let key: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("toa-{key}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn fixtures_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(fixtures_dir().join("scc").join(name)).unwrap()
    }

    fn service(url: &str) -> Service {
        Service {
            name: "SUSE_Linux_Enterprise_Server_15_SP6_x86_64".into(),
            url: url.into(),
            product: "SUSE Linux Enterprise Server 15 SP6 x86_64".into(),
        }
    }

    #[test]
    fn activations_list_the_services_of_the_activated_products() {
        let services = parse_activations(&fixture("activations.json")).unwrap();
        let got: Vec<(&str, &str)> = services
            .iter()
            .map(|s| (s.name.as_str(), s.url.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "Python_3_Module_15_SP6_x86_64",
                    "https://scc.suse.com/access/services/2562?credentials=Python_3_Module_15_SP6_x86_64"
                ),
                (
                    "Basesystem_Module_15_SP6_x86_64",
                    "https://scc.suse.com/access/services/2502?credentials=Basesystem_Module_15_SP6_x86_64"
                ),
                (
                    "SUSE_Linux_Enterprise_Server_15_SP6_x86_64",
                    "https://scc.suse.com/access/services/2493?credentials=SUSE_Linux_Enterprise_Server_15_SP6_x86_64"
                ),
                (
                    "Server_Applications_Module_15_SP6_x86_64",
                    "https://scc.suse.com/access/services/2510?credentials=Server_Applications_Module_15_SP6_x86_64"
                ),
            ]
        );
        assert_eq!(
            services[2].product,
            "SUSE Linux Enterprise Server 15 SP6 x86_64"
        );
        assert!(parse_activations("{\"error\":\"x\"}").is_err());
    }

    #[test]
    fn the_index_of_a_service_is_below_its_url_without_zypps_parameters() {
        assert_eq!(
            repoindex_url(
                "https://scc.suse.com/access/services/2562?credentials=Python_3_Module_15_SP6_x86_64"
            )
            .unwrap(),
            "https://scc.suse.com/access/services/2562/repo/repoindex.xml"
        );
        assert_eq!(
            repoindex_url("http://smt.example.com/?cookies=0&x=1").unwrap(),
            "http://smt.example.com/repo/repoindex.xml?x=1"
        );
        // The old API named the service only.
        let err = repoindex_url("Web_and_Scripting_Module_12_x86_64").unwrap_err();
        assert!(
            format!("{err:#}").contains("is not an http(s) URL"),
            "{err:#}"
        );
    }

    #[test]
    fn an_index_gives_each_repository_its_tokenized_url() {
        let repos = parse_repoindex(
            &fixture("repoindex.xml"),
            &service("https://scc.suse.com/access/services/2493"),
        )
        .unwrap();
        assert_eq!(repos.len(), 2);
        assert_eq!(repos[1].alias, "RES7");
        assert_eq!(repos[1].name, "RES7");
        let url = &repos[1].url;
        assert_eq!(
            url.file("repodata/repomd.xml"),
            "https://updates.suse.com/repo/$RCE/RES7/x86_64/repodata/repomd.xml?token"
        );
        assert_eq!(
            url.secret_url(),
            "https://updates.suse.com/repo/$RCE/RES7/x86_64?token"
        );
        assert_eq!(
            url.to_string(),
            "https://updates.suse.com/repo/$RCE/RES7/x86_64?<token>"
        );
        assert_eq!(format!("{:?}", repos[1]).matches("?token").count(), 0);
        assert_eq!(
            find("https://updates.suse.com/repo/$RCE/RES7/x86_64/", &repos).map(|r| &r.url),
            Some(url)
        );
        assert_eq!(
            find("https://updates.suse.com/repo/$RCE/RES7/src", &repos).map(|r| r.url.to_string()),
            Some("https://updates.suse.com/repo/$RCE/RES7/src?<token>".to_string())
        );
        assert!(find("https://updates.suse.com/repo/$RCE/RES8/x86_64", &repos).is_none());
    }

    #[test]
    fn index_variables_are_replaced_as_libzypp_does() {
        let repos = parse_repoindex(
            &fixture("repoindex-variables.xml"),
            &service("file:///somewhere"),
        )
        .unwrap();
        assert_eq!(repos.len(), 8);
        assert_eq!(repos[0].alias, "repo-oss");
        assert_eq!(repos[0].name, "repo-oss (15.1)");
        assert_eq!(
            repos[0].url.to_string(),
            "https://download.opensuse.org/distribution/leap/15.1/repo/oss"
        );
        assert_eq!(
            repos[2].url.to_string(),
            "https://download.opensuse.org/update/leap/15.1/oss"
        );
    }

    #[test]
    fn index_paths_are_below_the_service_after_repo() {
        let repos = parse_repoindex(
            &fixture("repoindex-path.xml"),
            &service("https://smt.example.com/center?cookies=0"),
        )
        .unwrap();
        let got: Vec<(&str, &str, String)> = repos
            .iter()
            .map(|r| (r.alias.as_str(), r.name.as_str(), r.url.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "company-foo",
                    "Company's Foo",
                    "https://smt.example.com/center/repo/products/foo".to_string()
                ),
                (
                    "company-bar",
                    "Company's Bar",
                    "https://smt.example.com/center/repo/products/bar".to_string()
                ),
                (
                    "company-foo-upd",
                    "Company's Foo Updates",
                    "https://smt.example.com/center/repo/products/foo/updates".to_string()
                ),
            ]
        );
        assert!(repos.iter().all(|r| !r.url.credentials_file));
        // Below a service opened with a credentials file, so are they.
        let repos = parse_repoindex(
            &fixture("repoindex-path.xml"),
            &service("https://smt.example.com/center?credentials=SMT-x"),
        )
        .unwrap();
        assert!(repos.iter().all(|r| r.url.credentials_file));
    }

    #[test]
    fn a_repository_opened_with_a_credentials_file_is_marked() {
        // From a registration proxy (connect-ng testdata/repos.xml).
        let url = RepoUrl::parse(
            "http://smt-scc.nue.suse.com/repo/SUSE/Products/SLE-Module-Basesystem/15-SP2/x86_64/product?credentials=SMT-http_smt-scc_nue_suse_com",
        )
        .unwrap();
        assert!(url.credentials_file);
        assert_eq!(url.token, None);
        assert_eq!(
            url.to_string(),
            "http://smt-scc.nue.suse.com/repo/SUSE/Products/SLE-Module-Basesystem/15-SP2/x86_64/product"
        );
        assert!(
            !RepoUrl::parse("https://updates.suse.com/x?abc")
                .unwrap()
                .credentials_file
        );
    }

    #[test]
    fn variables_without_value_stay() {
        let global: HashMap<String, String> = [("a".to_string(), "1".to_string())].into();
        let none = HashMap::new();
        assert_eq!(
            replace_vars("x%{a}y%{b}z%{c", &none, &global),
            "x1y%{b}z%{c"
        );
    }

    #[test]
    fn the_repo_file_names_each_repository_once() {
        let text = repo_file(&[(
            builder_alias("https://updates.suse.com/SUSE/Updates/SLE-SERVER/12-SP5/x86_64/update/"),
            "SLES12-SP5-Updates".into(),
            "https://updates.suse.com/SUSE/Updates/SLE-SERVER/12-SP5/x86_64/update?<token>".into(),
        )]);
        assert_eq!(
            text,
            "[toa-SUSE_Updates_SLE-SERVER_12-SP5_x86_64_update]\nname=SLES12-SP5-Updates\n\
             enabled=1\nautorefresh=1\n\
             baseurl=https://updates.suse.com/SUSE/Updates/SLE-SERVER/12-SP5/x86_64/update?<token>\n\
             type=rpm-md\n\n"
        );
    }

    /// One request the loopback server got.
    #[derive(Debug, Clone)]
    pub(crate) struct Request {
        pub(crate) target: String,
        headers: Vec<(String, String)>,
    }

    impl Request {
        pub(crate) fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    type Handler = dyn Fn(&Request) -> (u16, Vec<u8>) + Send + Sync;

    /// An HTTP/1.1 server on loopback answering with `handler`; it logs
    /// every request.
    fn serve(handler: Box<Handler>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Request>>>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        headers.push((k.trim().to_string(), v.trim().to_string()));
                    }
                }
                let request = Request { target, headers };
                seen.lock().unwrap().push(request.clone());
                let (status, body) = handler(&request);
                let reason = match status {
                    200 => "OK",
                    401 => "Unauthorized",
                    403 => "Forbidden",
                    _ => "Not Found",
                };
                let head = format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        (base, log)
    }

    /// `Basic base64(user:password)`.
    fn basic(user: &str, password: &str) -> String {
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let input = format!("{user}:{password}");
        let mut out = String::new();
        for chunk in input.as_bytes().chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(B64[(n >> (18 - 6 * i)) as usize & 63]));
                } else {
                    out.push('=');
                }
            }
        }
        format!("Basic {out}")
    }

    /// SUSE Customer Center and the update server on loopback, from the
    /// fixtures: the activations (connect-ng's), each service's index (SLES's
    /// the SUSE/connect one, with its `?token` URLs), and a repository at
    /// the index's `RES7/x86_64` path that answers only with that token
    /// (metadata: the Leap 15.6 update excerpt, its repomd.xml made here so
    /// its checksum is right).
    pub(crate) struct Scene {
        pub(crate) base: String,
        pub(crate) log: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
        pub(crate) creds_file: std::path::PathBuf,
        pub(crate) dir: std::path::PathBuf,
    }

    impl Scene {
        pub(crate) fn new(case: &str) -> Scene {
            let dir = crate::testing::scratch(&format!("scc-{case}"));
            let creds_file = dir.join("SCCcredentials");
            std::fs::copy(fixtures_dir().join("scc/SCCcredentials"), &creds_file).unwrap();
            let primary = std::fs::read(fixtures_dir().join(
                "rpm/opensuse-leap-15.6/download.opensuse.org_update_leap_15.6_sle/primary.xml",
            ))
            .unwrap();
            use sha2::Digest;
            let repomd = format!(
                "<repomd xmlns=\"http://linux.duke.edu/metadata/repo\"><data type=\"primary\">\
                 <checksum type=\"sha256\">{}</checksum><location href=\"repodata/primary.xml\"/>\
                 <size>{}</size></data></repomd>",
                hex::encode(sha2::Sha256::digest(&primary)),
                primary.len()
            );
            let (base, log) = serve(Box::new({
                let activations = fixture("activations.json");
                let indices = [
                    ("2562", fixture("repoindex-path.xml")),
                    ("2502", fixture("repoindex-variables.xml")),
                    ("2493", fixture("repoindex.xml")),
                    ("2510", fixture("repoindex.xml")),
                ];
                let auth = basic(
                    "SCC_f93f438773944ef087a30a37af7fc0a5",
                    "231982b59ce961e38777c83685a5c42f",
                );
                move |r: &Request| -> (u16, Vec<u8>) {
                    let host = format!("http://{}", r.header("Host").unwrap_or_default());
                    let (path, query) = r.target.split_once('?').unwrap_or((&r.target, ""));
                    if path == "/connect/systems/activations"
                        || path.starts_with("/access/services/")
                    {
                        if r.header("Authorization") != Some(auth.as_str()) {
                            return (401, br#"{"type":"error","error":"Invalid system credentials","localized_error":"Invalid system credentials"}"#.to_vec());
                        }
                        if path == "/connect/systems/activations" {
                            return (
                                200,
                                activations
                                    .replace("https://scc.suse.com", &host)
                                    .into_bytes(),
                            );
                        }
                        for (id, index) in &indices {
                            if path == format!("/access/services/{id}/repo/repoindex.xml") {
                                return (
                                    200,
                                    index
                                        .replace("https://updates.suse.com", &host)
                                        .into_bytes(),
                                );
                            }
                        }
                        return (404, b"{}".to_vec());
                    }
                    if let Some(file) = path.strip_prefix("/repo/$RCE/RES7/x86_64/repodata/") {
                        if query != "token" {
                            return (403, b"Forbidden".to_vec());
                        }
                        return match file {
                            "repomd.xml" => (200, repomd.clone().into_bytes()),
                            "primary.xml" => (200, primary.clone()),
                            _ => (404, b"not found".to_vec()),
                        };
                    }
                    (404, b"not found".to_vec())
                }
            }));
            Scene {
                base,
                log,
                creds_file,
                dir,
            }
        }

        /// A release whose repository is `baseurl`, registered at the scene's server.
        pub(crate) fn repo(&self, baseurls: &[&str]) -> crate::distro::RpmRepo {
            crate::distro::RpmRepo {
                baseurls: baseurls.iter().map(|b| b.to_string()).collect(),
                headers_package: "kernel-default-devel".into(),
                image_baseurls: Vec::new(),
                release_suffix: String::new(),
                uname: Default::default(),
                credentials: Some(Credentials {
                    env: format!(
                        "TOA_TEST_SCC_{}",
                        self.dir
                            .file_name()
                            .unwrap()
                            .to_string_lossy()
                            .replace('-', "_")
                    ),
                    help: "the SUSE Customer Center credentials of a registered system".into(),
                    server: Some(self.base.clone()),
                }),
                keys: vec![],
            }
        }
    }

    impl Drop for Scene {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
            let name = format!(
                "scc-test-{}",
                self.dir.file_name().unwrap().to_string_lossy()
            );
            let _ = std::fs::remove_dir_all(crate::host::cache::cache_dir().join("rpm").join(name));
        }
    }
}
