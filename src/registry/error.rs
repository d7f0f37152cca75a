//! What can go wrong talking to a registry, told apart the way a retry policy needs: network
//! trouble, 5xx, 408 and 429 may pass; a refusal, a missing image or wrong content will not.
//!
//! Every error names the image and the host that answered. None carries a secret: messages
//! come from the registry's own error body (its `errors[].code/message`, or a short first line
//! of text), with the credential in use scrubbed out in case a server echoes it.

use reqwest::StatusCode;

use super::credentials::CredentialError;
use crate::image::Digest;
use crate::image::manifest::ManifestError;
use crate::retry::Transient;

/// A failed registry operation: which image, which host, what happened.
#[derive(Debug, thiserror::Error)]
#[error("{image} from {host}: {kind}")]
pub struct RegistryError {
    /// The image reference, fully qualified (`docker.io/library/nginx:1.27`).
    pub image: String,
    /// The host that answered (a mirror's, when a mirror did), `host[:port]`.
    pub host: String,
    pub kind: ErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("the connection failed: {0}")]
    Network(String),
    #[error("its name does not resolve: {0}")]
    UnknownHost(String),
    /// TLS that cannot work as configured: an untrusted certificate, or a plain-HTTP server.
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("the registry is unavailable ({status}): {message}")]
    Unavailable { status: u16, message: String },
    #[error("access denied ({status}): {message}")]
    Denied { status: u16, message: String },
    #[error("not found: {message}")]
    NotFound { message: String },
    #[error("unexpected answer ({status}): {message}")]
    Status { status: u16, message: String },
    #[error("the manifest is unusable: {0}")]
    Manifest(#[from] ManifestError),
    #[error("{what} has digest {actual}, expected {expected}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("no manifest for {platform} in its index (it has: {available})")]
    NoPlatform { platform: String, available: String },
    #[error("the token endpoint's answer is unusable: {0}")]
    BadToken(String),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
}

impl ErrorKind {
    /// Whether the next mirror (or the registry after its mirrors) is worth asking. Every
    /// answer of a host is, as in containerd; a problem on this side (credentials that cannot
    /// be read) would only repeat.
    pub(crate) fn falls_over(&self) -> bool {
        !matches!(self, ErrorKind::Credentials(_))
    }

    /// When every host failed, the error reported is the most telling one: the furthest a host
    /// got (containerd's order: connection < not found < refused or failed < bad content).
    pub(crate) fn relevance(&self) -> u8 {
        match self {
            ErrorKind::Network(_) | ErrorKind::UnknownHost(_) | ErrorKind::Tls(_) => 1,
            ErrorKind::NotFound { .. } => 2,
            ErrorKind::Unavailable { .. }
            | ErrorKind::Denied { .. }
            | ErrorKind::Status { .. }
            | ErrorKind::BadToken(_)
            | ErrorKind::Credentials(_) => 3,
            ErrorKind::Manifest(_)
            | ErrorKind::DigestMismatch { .. }
            | ErrorKind::SizeMismatch { .. }
            | ErrorKind::NoPlatform { .. } => 4,
        }
    }

    /// The kind of a failed HTTP status, with the registry's explanation.
    pub(crate) fn from_status(status: StatusCode, message: String) -> ErrorKind {
        let code = status.as_u16();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Denied {
                status: code,
                message,
            },
            StatusCode::NOT_FOUND => ErrorKind::NotFound { message },
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => ErrorKind::Unavailable {
                status: code,
                message,
            },
            s if s.is_server_error() => ErrorKind::Unavailable {
                status: code,
                message,
            },
            _ => ErrorKind::Status {
                status: code,
                message,
            },
        }
    }

    /// A transport error, with the causes reqwest keeps in its source chain ("connection
    /// refused", "certificate not valid for name") instead of its bare "error sending request".
    pub(crate) fn from_transport(error: &reqwest::Error) -> ErrorKind {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        let mut hint = None;
        while let Some(cause) = source {
            hint = hint.or_else(|| tls_hint(cause));
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        match hint {
            Some(hint) => ErrorKind::Tls(format!("{message} ({hint})")),
            None if names_no_host(&message) => ErrorKind::UnknownHost(message),
            None => ErrorKind::Network(message),
        }
    }
}

/// Whether a resolver said the name does not exist (getaddrinfo's EAI_NONAME / EAI_NODATA, in
/// the words the C library gives them): retrying will not make it exist, unlike "Temporary
/// failure in name resolution". The resolver's error reaches us only as text.
fn names_no_host(message: &str) -> bool {
    [
        "Name or service not known",
        "No address associated with hostname",
        "nodename nor servname provided",
    ]
    .iter()
    .any(|words| message.contains(words))
}

/// What to do about a TLS failure that will not pass by itself, if `cause` is one: rustls'
/// verdict, however deep hyper and io errors wrapped it (an `io::Error`'s `source()` skips
/// the error it wraps, so those are unwrapped by hand).
fn tls_hint(cause: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut current = cause;
    while let Some(inner) = current
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        current = inner;
    }
    match current.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            Some("trust its CA, or name it a plain-HTTP registry if it is one")
        }
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            Some("it does not speak TLS: name it a plain-HTTP registry if it is one")
        }
        _ => None,
    }
}

impl Transient for RegistryError {
    fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Network(_) | ErrorKind::Unavailable { .. }
        )
    }
}

/// The explanation in a registry's error body: the distribution API's `errors` list, an OAuth2
/// `error_description`, Docker Hub's `details`, or else the first line of the text. `secrets`
/// are cut out wherever they appear.
pub(crate) fn registry_message(status: StatusCode, body: &[u8], secrets: &[&str]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        errors: Vec<Entry>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        error_description: Option<String>,
        #[serde(default)]
        details: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let from_json = serde_json::from_slice::<Envelope>(body).ok().and_then(|e| {
        let listed: Vec<String> = e
            .errors
            .iter()
            .map(
                |entry| match (entry.code.is_empty(), entry.message.is_empty()) {
                    (false, false) => format!("{}: {}", entry.code, entry.message),
                    (false, true) => entry.code.clone(),
                    _ => entry.message.clone(),
                },
            )
            .filter(|text| !text.is_empty())
            .collect();
        if !listed.is_empty() {
            return Some(listed.join("; "));
        }
        e.error_description.or(e.details).or(e.error)
    });
    let text = from_json.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        line.chars().take(200).collect()
    });
    let text = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no explanation")
            .to_string()
    } else {
        text
    };
    scrub(text, secrets)
}

/// `text` with every secret replaced.
pub(crate) fn scrub(mut text: String, secrets: &[&str]) -> String {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "<hidden>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_does_not_exist_is_not_worth_retrying_a_flaky_resolver_is() {
        let unknown = "dns error: failed to lookup address information: Name or service not known";
        let flaky =
            "dns error: failed to lookup address information: Temporary failure in name resolution";
        assert!(names_no_host(unknown) && !names_no_host(flaky));
        let error = |kind| RegistryError {
            image: "docker.io/library/app:1".into(),
            host: "registry-1.docker.io".into(),
            kind,
        };
        assert!(!error(ErrorKind::UnknownHost(unknown.into())).is_transient());
        assert!(error(ErrorKind::Network(flaky.into())).is_transient());
    }

    #[test]
    fn statuses_split_into_transient_and_permanent() {
        let transient = |status: u16| {
            let kind = ErrorKind::from_status(StatusCode::from_u16(status).unwrap(), "x".into());
            RegistryError {
                image: "i".into(),
                host: "h".into(),
                kind,
            }
            .is_transient()
        };
        for status in [500, 502, 503, 504, 429, 408] {
            assert!(transient(status), "{status}");
        }
        for status in [400, 401, 403, 404, 405] {
            assert!(!transient(status), "{status}");
        }
    }

    #[test]
    fn registry_messages_are_read_from_the_usual_bodies() {
        let ok = StatusCode::UNAUTHORIZED;
        let distribution = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository"}]}]}"#;
        assert_eq!(
            registry_message(ok, distribution, &[]),
            "UNAUTHORIZED: authentication required"
        );
        assert_eq!(
            registry_message(ok, br#"{"details":"incorrect username or password"}"#, &[]),
            "incorrect username or password"
        );
        assert_eq!(
            registry_message(
                ok,
                br#"{"error":"invalid_grant","error_description":"bad refresh token"}"#,
                &[]
            ),
            "bad refresh token"
        );
        assert_eq!(
            registry_message(ok, b"\n  upstream says no\nmore\n", &[]),
            "upstream says no"
        );
        assert_eq!(registry_message(ok, b"", &[]), "Unauthorized");
    }

    #[test]
    fn secrets_never_survive_into_a_message() {
        let body = br#"{"errors":[{"code":"DENIED","message":"password hunter22 rejected"}]}"#;
        let message = registry_message(StatusCode::FORBIDDEN, body, &["hunter22"]);
        assert_eq!(message, "DENIED: password <hidden> rejected");
    }
}
