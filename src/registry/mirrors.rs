//! Registry mirrors as Kubespray declares them for containerd, and the endpoints an image is
//! fetched from.
//!
//! Kubespray's `containerd_registries_mirrors` is a list of
//! `{prefix, mirrors: [{host, capabilities, skip_verify, override_path, header, ca, client}], server}`
//! that its containerd role writes to `/etc/containerd/certs.d/<prefix>/hosts.toml`. containerd
//! then fetches an image of registry `prefix` from each mirror in order and from `server` (by
//! default `https://<prefix>`) last; `_default` applies to registries without an entry of their
//! own. This module reproduces containerd's reading of that file (`core/remotes/docker/config`):
//! a mirror URL's path is the API root with `/v2` appended unless `override_path`; a mirror
//! asked about another registry's image gets `?ns=<registry>` (Docker Hub's own
//! `registry-1.docker.io` does not); a tag is resolved only by hosts with the `resolve`
//! capability, a digest or blob fetched from those with `pull`.
//!
//! `ca` and `client` name files on the nodes, not on the machine dropship runs on: they are
//! ignored here (extra CAs are [`super::RegistryConfig::ca_files`]).

use serde_json::Value;

/// What a host may be asked: resolve a tag to a digest, and/or pull content by digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// One place to fetch a registry's content from: a mirror, or the registry itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// `host[:port]`.
    pub host: String,
    /// The distribution API root: `/v2`, or a mirror's own path with `override_path`.
    pub api_root: String,
    pub capabilities: Capabilities,
    /// Accept any TLS certificate (a mirror's `skip_verify`).
    pub skip_verify: bool,
    /// Extra request headers (a mirror's `header`, e.g. a static `Authorization`).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may be credentials: names only.
        let headers: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Endpoint")
            .field("url", &self.base_url())
            .field("capabilities", &self.capabilities)
            .field("skip_verify", &self.skip_verify)
            .field("headers", &headers)
            .finish()
    }
}

impl Endpoint {
    /// The registry itself: `https://<domain>/v2` (plain HTTP when configured), Docker Hub at
    /// `registry-1.docker.io`.
    pub fn registry(domain: &str, plain_http: bool) -> Endpoint {
        Endpoint {
            scheme: if plain_http {
                Scheme::Http
            } else {
                Scheme::Https
            },
            host: api_host(domain).to_string(),
            api_root: "/v2".into(),
            capabilities: Capabilities::ALL,
            skip_verify: false,
            headers: Vec::new(),
        }
    }

    /// `scheme://host/api_root`, e.g. `https://mirror.example/v2`.
    pub fn base_url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}{}", self.host, self.api_root)
    }

    /// The URL of `kind` (`manifests` or `blobs`) `reference` in repository `path` of an image
    /// from registry `domain`, with containerd's `?ns=` when this host is a mirror.
    pub fn url(&self, domain: &str, path: &str, kind: &str, reference: &str) -> String {
        let mut url = format!("{}/{path}/{kind}/{reference}", self.base_url());
        if self.is_mirror_for(domain) {
            url.push_str("?ns=");
            url.push_str(domain);
        }
        url
    }

    /// Whether this host serves `domain`'s images as a mirror (containerd's `isProxy`).
    pub fn is_mirror_for(&self, domain: &str) -> bool {
        self.host != domain && !(domain == "docker.io" && self.host == "registry-1.docker.io")
    }

    fn parse(
        url: &str,
        capabilities: Capabilities,
        skip_verify: bool,
        override_path: bool,
        headers: Vec<(String, String)>,
    ) -> Result<Endpoint, String> {
        let with_scheme = if url.starts_with("http://") || url.starts_with("https://") {
            url.to_string()
        } else {
            format!("https://{url}")
        };
        let parsed = reqwest::Url::parse(&with_scheme).map_err(|e| format!("{url:?}: {e}"))?;
        let scheme = match parsed.scheme() {
            "http" => Scheme::Http,
            _ => Scheme::Https,
        };
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(format!("{url:?} has no host")),
        };
        let path = parsed.path().trim_end_matches('/');
        let api_root = if override_path || path.ends_with("/v2") {
            path.to_string()
        } else {
            format!("{path}/v2")
        };
        Ok(Endpoint {
            scheme,
            host: api_host(&host).to_string(),
            api_root,
            capabilities,
            skip_verify,
            headers,
        })
    }
}

/// Docker Hub's API lives at `registry-1.docker.io`, whichever name the image or config uses.
fn api_host(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("containerd_registries_mirrors{at}: {message}")]
pub struct MirrorsError {
    /// Where in the variable, e.g. `[0].mirrors[1].host`.
    pub at: String,
    pub message: String,
}

/// The mirrors of one registry (one `hosts.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostsEntry {
    prefix: String,
    mirrors: Vec<Endpoint>,
    /// `server`, when given; otherwise the registry itself.
    server: Option<Endpoint>,
}

/// Every registry's mirrors; empty means every image comes from its own registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirrors {
    entries: Vec<HostsEntry>,
}

/// The `hosts.toml` that applies to registries without their own.
const DEFAULT_PREFIX: &str = "_default";

impl Mirrors {
    /// Reads Kubespray's `containerd_registries_mirrors` as the inventory gives it (null or
    /// absent: no mirrors).
    pub fn from_kubespray(value: &Value) -> Result<Mirrors, MirrorsError> {
        let entries = match value {
            Value::Null => return Ok(Mirrors::default()),
            Value::Array(entries) => entries,
            _ => return Err(error("", "must be a list of {prefix, mirrors}")),
        };
        let entries = entries
            .iter()
            .enumerate()
            .map(|(i, entry)| parse_entry(entry, &format!("[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Mirrors { entries })
    }

    /// Where to fetch images of registry `domain` from, in the order to try them: its mirrors,
    /// then its server (the registry itself unless `server` says otherwise).
    pub fn endpoints(&self, domain: &str, plain_http: bool) -> Vec<Endpoint> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.prefix == domain)
            .or_else(|| self.entries.iter().find(|e| e.prefix == DEFAULT_PREFIX));
        let Some(entry) = entry else {
            return vec![Endpoint::registry(domain, plain_http)];
        };
        let server = entry
            .server
            .clone()
            .unwrap_or_else(|| Endpoint::registry(domain, plain_http));
        // Kubespray's default lists Docker Hub as its own mirror: asking twice would only
        // fail twice.
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for endpoint in entry.mirrors.iter().cloned().chain([server]) {
            if !endpoints.contains(&endpoint) {
                endpoints.push(endpoint);
            }
        }
        endpoints
    }
}

fn parse_entry(entry: &Value, at: &str) -> Result<HostsEntry, MirrorsError> {
    let object = entry
        .as_object()
        .ok_or_else(|| error(at, "must be a mapping with prefix and mirrors"))?;
    let prefix = match object.get("prefix") {
        Some(Value::String(prefix)) if !prefix.is_empty() => prefix.clone(),
        _ => return Err(error(&format!("{at}.prefix"), "must be a registry host")),
    };
    let mirrors = match object.get("mirrors") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(mirrors)) => mirrors
            .iter()
            .enumerate()
            .map(|(i, mirror)| parse_mirror(mirror, &format!("{at}.mirrors[{i}]")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(error(&format!("{at}.mirrors"), "must be a list")),
    };
    let server = match object.get("server") {
        None | Some(Value::Null) => None,
        Some(Value::String(server)) => Some(
            Endpoint::parse(server, Capabilities::ALL, false, false, Vec::new())
                .map_err(|message| error(&format!("{at}.server"), &message))?,
        ),
        Some(_) => return Err(error(&format!("{at}.server"), "must be a URL")),
    };
    Ok(HostsEntry {
        prefix,
        mirrors,
        server,
    })
}

fn parse_mirror(mirror: &Value, at: &str) -> Result<Endpoint, MirrorsError> {
    let field = |name: &str| mirror.get(name).filter(|v| !v.is_null());
    let at_field = |name: &str| format!("{at}.{name}");
    let host = match field("host") {
        Some(Value::String(host)) if !host.is_empty() => host,
        _ => return Err(error(&at_field("host"), "must be a URL")),
    };
    let capabilities = match field("capabilities") {
        None => Capabilities::ALL,
        Some(value) => {
            parse_capabilities(value).map_err(|m| error(&at_field("capabilities"), &m))?
        }
    };
    let skip_verify =
        parse_bool(field("skip_verify")).map_err(|m| error(&at_field("skip_verify"), &m))?;
    let override_path =
        parse_bool(field("override_path")).map_err(|m| error(&at_field("override_path"), &m))?;
    let headers = match field("header") {
        None => Vec::new(),
        Some(value) => parse_headers(value).map_err(|m| error(&at_field("header"), &m))?,
    };
    Endpoint::parse(host, capabilities, skip_verify, override_path, headers)
        .map_err(|message| error(&at_field("host"), &message))
}

/// A string or a list of strings (the template flattens either), among pull, resolve, push.
fn parse_capabilities(value: &Value) -> Result<Capabilities, String> {
    let names: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    let mut capabilities = Capabilities {
        pull: false,
        resolve: false,
    };
    for name in names {
        match name.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("pull") => capabilities.pull = true,
            Some("resolve") => capabilities.resolve = true,
            // Push and referrers do not concern fetching.
            Some("push" | "referrers") => {}
            _ => return Err(format!("unknown capability {name} (pull, resolve or push)")),
        }
    }
    Ok(capabilities)
}

/// A YAML boolean, or the strings the template lower-cases into the TOML file.
fn parse_bool(value: Option<&Value>) -> Result<bool, String> {
    match value {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("must be true or false, not {other}")),
    }
}

/// `{Name: value}` or `{Name: [values]}`. Values are never quoted back: they may be secrets.
fn parse_headers(value: &Value) -> Result<Vec<(String, String)>, String> {
    let object = value
        .as_object()
        .ok_or("must be a mapping of header names to values")?;
    let mut headers = Vec::new();
    for (name, value) in object {
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        for value in values {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("the value of {name} must be a string")),
            };
            // Checked here so a bad header is a configuration error, not a failed request.
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a valid header name"))?;
            reqwest::header::HeaderValue::from_str(&text)
                .map_err(|_| format!("the value of {name} is not a valid header value"))?;
            headers.push((name.clone(), text));
        }
    }
    Ok(headers)
}

fn error(at: &str, message: &str) -> MirrorsError {
    MirrorsError {
        at: at.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn urls(endpoints: &[Endpoint]) -> Vec<String> {
        endpoints.iter().map(Endpoint::base_url).collect()
    }

    /// Kubespray's documented examples, as the inventory hands them over.
    fn kubespray_example() -> Value {
        json!([
            {
                "prefix": "docker.io",
                "mirrors": [
                    {"host": "https://mirror.gcr.io", "capabilities": ["pull", "resolve"], "skip_verify": false},
                    {"host": "https://registry-1.docker.io", "capabilities": ["pull", "resolve"], "skip_verify": false}
                ]
            },
            {
                "prefix": "registry.k8s.io",
                "mirrors": [
                    {"host": "https://harbor.example/v2/k8s", "capabilities": ["pull", "resolve"], "override_path": true},
                    {"host": "http://10.0.0.5:5000", "capabilities": "pull", "skip_verify": "True",
                     "header": {"Authorization": "Basic c2VjcmV0"}}
                ],
                "server": "https://upstream.example"
            },
            {
                "prefix": "172.19.16.11:5000",
                "mirrors": [{"host": "http://172.19.16.11:5000", "capabilities": ["pull", "resolve"], "skip_verify": true}]
            }
        ])
    }

    #[test]
    fn parses_kubespray_mirrors_in_order_then_the_server() {
        let mirrors = Mirrors::from_kubespray(&kubespray_example()).unwrap();
        assert_eq!(
            urls(&mirrors.endpoints("docker.io", false)),
            [
                "https://mirror.gcr.io/v2",
                "https://registry-1.docker.io/v2"
            ]
        );
        let k8s = mirrors.endpoints("registry.k8s.io", false);
        assert_eq!(
            urls(&k8s),
            [
                "https://harbor.example/v2/k8s",
                "http://10.0.0.5:5000/v2",
                "https://upstream.example/v2",
            ]
        );
        assert_eq!(
            k8s[1].capabilities,
            Capabilities {
                pull: true,
                resolve: false
            }
        );
        assert!(k8s[1].skip_verify && !k8s[0].skip_verify);
        assert_eq!(
            k8s[1].headers,
            [("Authorization".to_string(), "Basic c2VjcmV0".to_string())]
        );
        assert!(!format!("{:?}", k8s[1]).contains("c2VjcmV0"));
        assert_eq!(k8s[2].capabilities, Capabilities::ALL);
        let insecure = mirrors.endpoints("172.19.16.11:5000", false);
        assert_eq!(
            urls(&insecure),
            [
                "http://172.19.16.11:5000/v2",
                "https://172.19.16.11:5000/v2"
            ]
        );
    }

    #[test]
    fn kubespray_default_is_docker_hub_once() {
        let default = json!([{
            "prefix": "docker.io",
            "mirrors": [{"host": "https://registry-1.docker.io", "capabilities": ["pull", "resolve"], "skip_verify": false}]
        }]);
        let mirrors = Mirrors::from_kubespray(&default).unwrap();
        assert_eq!(
            mirrors.endpoints("docker.io", false),
            [Endpoint::registry("docker.io", false)]
        );
    }

    #[test]
    fn registries_without_an_entry_use_default_or_themselves() {
        let mirrors = Mirrors::from_kubespray(&kubespray_example()).unwrap();
        assert_eq!(
            urls(&mirrors.endpoints("quay.io", false)),
            ["https://quay.io/v2"]
        );
        assert_eq!(
            urls(&mirrors.endpoints("reg.local:5000", true)),
            ["http://reg.local:5000/v2"]
        );
        let with_default = Mirrors::from_kubespray(&json!([
            {"prefix": "_default", "mirrors": [{"host": "cache.example:5000"}]}
        ]))
        .unwrap();
        assert_eq!(
            urls(&with_default.endpoints("quay.io", false)),
            ["https://cache.example:5000/v2", "https://quay.io/v2"]
        );
        assert_eq!(
            Mirrors::from_kubespray(&Value::Null).unwrap(),
            Mirrors::default()
        );
    }

    #[test]
    fn urls_carry_ns_for_mirrors_only_and_respect_override_path() {
        let mirrors = Mirrors::from_kubespray(&kubespray_example()).unwrap();
        let hub = mirrors.endpoints("docker.io", false);
        assert_eq!(
            hub[0].url("docker.io", "library/nginx", "manifests", "1.27"),
            "https://mirror.gcr.io/v2/library/nginx/manifests/1.27?ns=docker.io"
        );
        assert_eq!(
            hub[1].url("docker.io", "library/nginx", "blobs", "sha256:ab"),
            "https://registry-1.docker.io/v2/library/nginx/blobs/sha256:ab"
        );
        let k8s = mirrors.endpoints("registry.k8s.io", false);
        assert_eq!(
            k8s[0].url("registry.k8s.io", "pause", "manifests", "3.10"),
            "https://harbor.example/v2/k8s/pause/manifests/3.10?ns=registry.k8s.io"
        );
        let own = Endpoint::registry("reg.local:5000", false);
        assert_eq!(
            own.url("reg.local:5000", "a/b", "manifests", "v1"),
            "https://reg.local:5000/v2/a/b/manifests/v1"
        );
    }

    #[test]
    fn mirror_paths_get_v2_unless_overridden() {
        let parse = |host: &str, override_path: bool| {
            Endpoint::parse(host, Capabilities::ALL, false, override_path, Vec::new())
                .unwrap()
                .base_url()
        };
        assert_eq!(parse("mirror.example", false), "https://mirror.example/v2");
        assert_eq!(parse("https://m.example/", false), "https://m.example/v2");
        assert_eq!(parse("https://m.example/v2", false), "https://m.example/v2");
        assert_eq!(
            parse("https://m.example/cache", false),
            "https://m.example/cache/v2"
        );
        assert_eq!(
            parse("https://m.example/cache", true),
            "https://m.example/cache"
        );
        assert_eq!(
            parse("http://10.1.2.3:8080", false),
            "http://10.1.2.3:8080/v2"
        );
    }

    #[test]
    fn bad_entries_say_where_without_quoting_headers() {
        let cases = [
            (json!({"prefix": "x"}), ""),
            (json!([{"mirrors": []}]), "[0].prefix"),
            (
                json!([{"prefix": "x", "mirrors": [{"capabilities": ["pull"]}]}]),
                "[0].mirrors[0].host",
            ),
            (
                json!([{"prefix": "x", "mirrors": [{"host": "m", "capabilities": ["pul"]}]}]),
                "[0].mirrors[0].capabilities",
            ),
            (
                json!([{"prefix": "x", "mirrors": [{"host": "m", "skip_verify": "yes"}]}]),
                "[0].mirrors[0].skip_verify",
            ),
            (
                json!([{"prefix": "x", "mirrors": [{"host": "m", "header": {"Authorization": {"x": "hunter2"}}}]}]),
                "[0].mirrors[0].header",
            ),
            (json!([{"prefix": "x", "server": 5}]), "[0].server"),
        ];
        for (value, at) in cases {
            let err = Mirrors::from_kubespray(&value).unwrap_err();
            assert_eq!(err.at, at, "{value}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
