//! HTTP to one endpoint: the request, the authentication a `401` asks for, and a failed
//! status turned into an [`ErrorKind`] with the registry's own explanation.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use super::auth::{self, AuthCache, AuthKey, Challenge};
use super::credentials::{self, Credential};
use super::error::{ErrorKind, registry_message};
use super::mirrors::Endpoint;
use super::{ConfigError, CredentialSource, RegistryConfig};

/// How much of an error body is read for its message.
const ERROR_BODY_LIMIT: usize = 64 << 10;

pub(crate) struct Transport {
    http: reqwest::Client,
    /// For endpoints configured with `skip_verify`.
    unverified: reqwest::Client,
    credentials: CredentialSource,
    /// Per host, what the credential source said (errors are not kept: they may be fixed).
    known: Mutex<HashMap<String, Option<Credential>>>,
    auth: AuthCache,
}

impl Transport {
    pub(crate) fn new(config: &RegistryConfig) -> Result<Transport, ConfigError> {
        let mut roots = Vec::new();
        for path in &config.ca_files {
            let pem = std::fs::read(path).map_err(|e| ConfigError::CaFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ConfigError::CaFile {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(ConfigError::CaFile {
                    path: path.clone(),
                    message: "it holds no PEM certificate".into(),
                });
            }
            roots.extend(certs);
        }
        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!("dropship/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(config.connect_timeout)
                .read_timeout(config.read_timeout)
        };
        let http = builder()
            .tls_certs_merge(roots)
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        let unverified = builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(Transport {
            http,
            unverified,
            credentials: config.credentials.clone(),
            known: Mutex::new(HashMap::new()),
            auth: AuthCache::default(),
        })
    }

    /// Sends `method url` to `endpoint` for `repository`, answering one authentication
    /// challenge; a response that is not a success becomes an error.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        method: Method,
        url: &str,
        accept: Option<&str>,
    ) -> Result<Response, ErrorKind> {
        let client = self.client(endpoint);
        // A mirror configured with its own Authorization header is not authenticated here.
        let fixed_auth = endpoint
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(AUTHORIZATION.as_str()));
        let key = AuthKey {
            base_url: endpoint.base_url(),
            repository: repository.to_string(),
        };
        let mut authorization = if fixed_auth {
            None
        } else {
            self.auth.current(&key)
        };
        let mut challenged = false;
        loop {
            let mut request = client.request(method.clone(), url);
            for (name, value) in &endpoint.headers {
                request = request.header(name, value);
            }
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(authorization) = &authorization {
                request = request.header(AUTHORIZATION, authorization.clone());
            }
            tracing::debug!("{method} {url}");
            let response = request
                .send()
                .await
                .map_err(|e| ErrorKind::from_transport(&e))?;
            if response.status() == StatusCode::UNAUTHORIZED && !challenged && !fixed_auth {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(auth::parse_challenge);
                if let Some(challenge) = challenge {
                    let renewed = self
                        .auth
                        .renew(&key, authorization.as_ref(), async || {
                            self.authorize(client, endpoint, repository, &challenge)
                                .await
                        })
                        .await?;
                    if renewed.is_some() {
                        authorization = renewed;
                        continue;
                    }
                }
            }
            return self.check(response, endpoint).await;
        }
    }

    fn client(&self, endpoint: &Endpoint) -> &reqwest::Client {
        if endpoint.skip_verify {
            &self.unverified
        } else {
            &self.http
        }
    }

    /// The authorization that answers `challenge`, if the credentials allow one.
    async fn authorize(
        &self,
        client: &reqwest::Client,
        endpoint: &Endpoint,
        repository: &str,
        challenge: &Challenge,
    ) -> Result<Option<(HeaderValue, Option<Duration>)>, ErrorKind> {
        let credential = self.credential_for(endpoint).await?;
        match challenge {
            Challenge::Basic => Ok(match credential {
                Some(Credential::Basic { username, password }) => {
                    Some((auth::basic_header(&username, &password), None))
                }
                // An identity token is only good at a token endpoint.
                Some(Credential::IdentityToken(_)) | None => None,
            }),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope
                    .clone()
                    .unwrap_or_else(|| format!("repository:{repository}:pull"));
                let (header, lifetime) = auth::fetch_token(
                    client,
                    realm,
                    service.as_deref(),
                    &scope,
                    credential.as_ref(),
                )
                .await?;
                Ok(Some((header, Some(lifetime))))
            }
        }
    }

    /// The credentials for `endpoint`: its own host's, else (a mirror) those of the registry it
    /// serves.
    async fn credential_for(&self, endpoint: &Endpoint) -> Result<Option<Credential>, ErrorKind> {
        if let Some(own) = self.credential(&endpoint.host).await? {
            return Ok(Some(own));
        }
        match &endpoint.mirror_of {
            Some(registry) => self.credential(registry).await,
            None => Ok(None),
        }
    }

    /// What the credential source holds for `host`, asked once per host (a helper is a
    /// process to run).
    async fn credential(&self, host: &str) -> Result<Option<Credential>, ErrorKind> {
        let CredentialSource::DockerConfig(path) = &self.credentials else {
            return Ok(None);
        };
        if let Some(known) = self.known.lock().expect("credentials lock").get(host) {
            return Ok(known.clone());
        }
        let (path, registry) = (path.clone(), host.to_string());
        let found = tokio::task::spawn_blocking(move || credentials::lookup(&path, &registry))
            .await
            .map_err(|e| ErrorKind::Network(format!("credential lookup stopped: {e}")))??;
        self.known
            .lock()
            .expect("credentials lock")
            .insert(host.to_string(), found.clone());
        Ok(found)
    }

    /// `response` if it is a success, else its error with the registry's message.
    async fn check(&self, response: Response, endpoint: &Endpoint) -> Result<Response, ErrorKind> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_limited(response, ERROR_BODY_LIMIT)
            .await
            .unwrap_or_default();
        let known: Vec<Credential> = {
            let known = self.known.lock().expect("credentials lock");
            std::iter::once(&endpoint.host)
                .chain(&endpoint.mirror_of)
                .filter_map(|host| known.get(host).cloned().flatten())
                .collect()
        };
        let mut secrets: Vec<&str> = endpoint.headers.iter().map(|(_, v)| v.as_str()).collect();
        secrets.extend(known.iter().map(Credential::secret));
        let message = registry_message(status, &body, &secrets);
        Err(ErrorKind::from_status(status, message))
    }
}

/// The body, or its first `limit` bytes.
async fn read_limited(mut response: Response, limit: usize) -> Result<Bytes, ErrorKind> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ErrorKind::from_transport(&e))?
    {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == limit {
            break;
        }
    }
    Ok(body.freeze())
}

/// The whole body, refused past `limit` bytes.
pub(crate) async fn read_at_most(
    mut response: Response,
    limit: u64,
    too_large: impl Fn() -> ErrorKind,
) -> Result<Bytes, ErrorKind> {
    if content_length(&response).is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ErrorKind::from_transport(&e))?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The `Content-Length` header (also on a HEAD answer, where the body is empty).
pub(crate) fn content_length(response: &Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
