//! Image references, parsed and normalised the way Docker does it.
//!
//! `nginx` means `docker.io/library/nginx:latest`; `host:port/path:tag` names another registry;
//! `name@sha256:<hex>` pins a digest. `docker save` writes tags in the short ("familiar") form,
//! so matching a reference against an archive's `RepoTags` goes through [`ImageRef::familiar`].

use std::fmt;
use std::str::FromStr;

const DEFAULT_DOMAIN: &str = "docker.io";
const OFFICIAL_PREFIX: &str = "library/";

/// A reference that is not a valid image name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct RefError {
    pub reference: String,
    pub reason: &'static str,
}

/// A normalised image reference: registry domain, repository path, and a tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<Self, RefError> {
        let fail = |reason| RefError {
            reference: reference.to_string(),
            reason,
        };
        if reference.is_empty() {
            return Err(fail("it is empty"));
        }
        if reference.chars().any(char::is_whitespace) {
            return Err(fail("it contains whitespace"));
        }
        let (name_and_tag, digest) = match reference.split_once('@') {
            Some((name, digest)) => {
                if !is_sha256_digest(digest) {
                    return Err(fail("the digest must be sha256: followed by 64 hex digits"));
                }
                (name, Some(digest.to_string()))
            }
            None => (reference, None),
        };
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_and_tag[..at], Some(&name_and_tag[at + 1..]))
            }
            None => (name_and_tag, None),
        };
        if let Some(tag) = tag
            && !is_valid_tag(tag)
        {
            return Err(fail(
                "the tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        let (domain, path) = split_domain(name);
        if domain.is_empty() || !is_valid_domain(domain) {
            return Err(fail("the registry host is not a valid host[:port]"));
        }
        if path.is_empty() || !path.split('/').all(is_valid_path_component) {
            return Err(fail(
                "each repository path component must be lowercase letters, digits and . _ - separators",
            ));
        }
        let (domain, path) = if domain == DEFAULT_DOMAIN || domain == "index.docker.io" {
            let path = if path.contains('/') {
                path.to_string()
            } else {
                format!("{OFFICIAL_PREFIX}{path}")
            };
            (DEFAULT_DOMAIN.to_string(), path)
        } else {
            (domain.to_string(), path.to_string())
        };
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(ImageRef {
            domain,
            path,
            tag,
            digest,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within its registry, e.g. `library/nginx`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Full repository name without tag or digest, e.g. `docker.io/library/nginx`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The short repository name Docker prints, e.g. `nginx` or `registry:5000/app`.
    pub fn familiar_repository(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix(OFFICIAL_PREFIX)
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.repository()
        }
    }

    /// The short form Docker prints and `docker save` writes, e.g. `nginx:1.25`.
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_repository();
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
        out
    }

    /// The `RepoTags` entry `docker save` writes for this reference (none for a bare digest).
    pub fn repo_tag(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|tag| format!("{}:{tag}", self.familiar_repository()))
    }

    /// Whether a `RepoTags` / `RepoDigests` entry as Docker writes it names this reference.
    pub fn matches(&self, docker_name: &str) -> bool {
        let Ok(other) = ImageRef::parse(docker_name) else {
            return false;
        };
        if self.repository() != other.repository() {
            return false;
        }
        match (&self.digest, &other.digest) {
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
            (None, _) => self.tag == other.tag,
        }
    }
}

impl fmt::Display for ImageRef {
    /// The fully qualified form, e.g. `docker.io/library/nginx:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

/// Docker's rule: the first component is a registry when it has a dot or a port, or is localhost.
fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => (DEFAULT_DOMAIN, name),
    }
}

fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    host_ok && port_ok
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`, as in Docker's reference grammar.
fn is_valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(r: &str) -> String {
        ImageRef::parse(r).unwrap().to_string()
    }

    #[test]
    fn official_images_get_docker_io_library_and_latest() {
        assert_eq!(full("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(full("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(full("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            full("index.docker.io/library/nginx:1"),
            "docker.io/library/nginx:1"
        );
        assert_eq!(full("bitnami/redis:7"), "docker.io/bitnami/redis:7");
    }

    #[test]
    fn registries_with_ports_and_deep_paths() {
        assert_eq!(
            full("registry.testbed:5000/a/b/c:v1.2"),
            "registry.testbed:5000/a/b/c:v1.2"
        );
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(full("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(
            full("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
    }

    #[test]
    fn digests_keep_no_implicit_tag() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let r = ImageRef::parse(&format!("quay.io/x/y@{digest}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(digest.as_str()));
        assert_eq!(r.repo_tag(), None);
        let tagged = ImageRef::parse(&format!("y:1@{digest}")).unwrap();
        assert_eq!(
            tagged.to_string(),
            format!("docker.io/library/y:1@{digest}")
        );
    }

    #[test]
    fn familiar_form_is_what_docker_save_writes() {
        assert_eq!(
            ImageRef::parse("docker.io/library/nginx")
                .unwrap()
                .familiar(),
            "nginx:latest"
        );
        assert_eq!(
            ImageRef::parse("docker.io/bitnami/redis:7")
                .unwrap()
                .familiar(),
            "bitnami/redis:7"
        );
        assert_eq!(
            ImageRef::parse("registry.testbed:5000/base:1")
                .unwrap()
                .repo_tag()
                .unwrap(),
            "registry.testbed:5000/base:1"
        );
    }

    #[test]
    fn matches_repo_tags_in_any_spelling() {
        let r = ImageRef::parse("docker.io/library/nginx:latest").unwrap();
        assert!(r.matches("nginx:latest"));
        assert!(r.matches("nginx"));
        assert!(!r.matches("nginx:1.25"));
        assert!(!r.matches("other/nginx:latest"));
        let digest = format!("sha256:{}", "cd".repeat(32));
        let pinned = ImageRef::parse(&format!("nginx@{digest}")).unwrap();
        assert!(pinned.matches(&format!("nginx@{digest}")));
        assert!(!pinned.matches("nginx:latest"));
    }

    #[test]
    fn bad_references_name_themselves() {
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "a b",
            "x@sha256:12",
            "reg:99999999/x",
            "a//b",
            "a..b",
        ] {
            let err = ImageRef::parse(bad).unwrap_err();
            assert_eq!(err.reference, bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
