//! Registry authentication: what a `401`'s `WWW-Authenticate` asks for, the token dance of the
//! distribution spec, and a cache so each host and repository fetches a token once per expiry.
//!
//! - `Basic`: the credentials themselves, on every request (htpasswd registries).
//! - `Bearer realm=…,service=…,scope=…`: a token from `realm`, asked for with `service` and
//!   `scope` by a GET with the credentials as Basic (or none: anonymous pulls of public
//!   images), or, with a Docker identity token, by the OAuth2 POST `grant_type=refresh_token`
//!   the docker CLI makes. The token goes out as `Authorization: Bearer` until it expires, and
//!   a `401` on a cached token fetches a new one once.
//!
//! Many tasks pulling from one repository at once wait for one token fetch, not one each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use reqwest::header::HeaderValue;

use super::credentials::Credential;
use super::error::{ErrorKind, registry_message};

/// The distribution spec's default when a token answer says nothing of its lifetime.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A token is renewed this long before it expires, so it does not expire in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);
/// The OAuth2 client id sent with the refresh-token grant.
const CLIENT_ID: &str = "dropship";

/// What a registry's `401` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// The challenge to answer among those in a `WWW-Authenticate` value: Bearer before Basic.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut basic = false;
    for challenge in http_auth::parser::ChallengeParser::new(header).flatten() {
        let param = |name: &str| {
            challenge
                .params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.to_unescaped())
        };
        if challenge.scheme.eq_ignore_ascii_case("bearer") {
            if let Some(realm) = param("realm") {
                return Some(Challenge::Bearer {
                    realm,
                    service: param("service"),
                    scope: param("scope"),
                });
            }
        } else if challenge.scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    basic.then_some(Challenge::Basic)
}

/// The `Authorization` value for Basic credentials.
pub(crate) fn basic_header(username: &str, password: &str) -> HeaderValue {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    sensitive(format!("Basic {encoded}"))
}

fn sensitive(value: String) -> HeaderValue {
    let mut header = HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}

/// Which authorization a request needs: one per API root and repository (a token's scope).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AuthKey {
    pub base_url: String,
    pub repository: String,
}

#[derive(Clone)]
struct Cached {
    header: HeaderValue,
    /// `None` for Basic credentials, which do not expire.
    expires: Option<Instant>,
}

/// Authorizations known to work, and one lock per key so that a refresh happens once.
#[derive(Default)]
pub(crate) struct AuthCache {
    current: Mutex<HashMap<AuthKey, Cached>>,
    refreshing: Mutex<HashMap<AuthKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl AuthCache {
    /// The authorization to send up front, if one is known and still valid.
    pub(crate) fn current(&self, key: &AuthKey) -> Option<HeaderValue> {
        let current = self.current.lock().expect("auth cache lock");
        current
            .get(key)
            .filter(|c| c.expires.is_none_or(|at| Instant::now() < at))
            .map(|c| c.header.clone())
    }

    /// A new authorization after `rejected` (what was sent, if anything) met a `401`: the one
    /// another task obtained meanwhile, or the result of `obtain`, which then is cached.
    pub(crate) async fn renew(
        &self,
        key: &AuthKey,
        rejected: Option<&HeaderValue>,
        obtain: impl AsyncFnOnce() -> Result<Option<(HeaderValue, Option<Duration>)>, ErrorKind>,
    ) -> Result<Option<HeaderValue>, ErrorKind> {
        let gate = {
            let mut refreshing = self.refreshing.lock().expect("auth cache lock");
            refreshing.entry(key.clone()).or_default().clone()
        };
        let _turn = gate.lock().await;
        if let Some(fresh) = self.current(key)
            && Some(&fresh) != rejected
        {
            return Ok(Some(fresh));
        }
        let Some((header, lifetime)) = obtain().await? else {
            return Ok(None);
        };
        let expires = lifetime.map(|l| Instant::now() + l.saturating_sub(EXPIRY_MARGIN));
        self.current.lock().expect("auth cache lock").insert(
            key.clone(),
            Cached {
                header: header.clone(),
                expires,
            },
        );
        Ok(Some(header))
    }
}

/// A token endpoint's answer (distribution's `token`, OAuth2's `access_token`).
#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Fetches a Bearer token from `realm` for `scope`, with `credential` or anonymously; returns
/// the `Authorization` value and how long it is good for.
pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scope: &str,
    credential: Option<&Credential>,
) -> Result<(HeaderValue, Duration), ErrorKind> {
    let mut params: Vec<(&str, &str)> = vec![("scope", scope)];
    if let Some(service) = service {
        params.push(("service", service));
    }
    let request = match credential {
        Some(Credential::IdentityToken(refresh_token)) => {
            params.extend([
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.as_str()),
                ("client_id", CLIENT_ID),
            ]);
            http.post(realm).form(&params)
        }
        Some(Credential::Basic { username, password }) => http.get(realm).query(&params).header(
            reqwest::header::AUTHORIZATION,
            basic_header(username, password),
        ),
        None => http.get(realm).query(&params),
    };
    let response = request
        .send()
        .await
        .map_err(|e| ErrorKind::from_transport(&e))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| ErrorKind::from_transport(&e))?;
    let secrets: Vec<&str> = credential.map(Credential::secret).into_iter().collect();
    if status != StatusCode::OK {
        let message = registry_message(status, &body, &secrets);
        return Err(ErrorKind::from_status(
            status,
            format!("the token endpoint refused: {message}"),
        ));
    }
    let answer: TokenAnswer = serde_json::from_slice(&body)
        .map_err(|_| ErrorKind::BadToken("it is not a JSON token answer".into()))?;
    let token = answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ErrorKind::BadToken("it holds no token".into()))?;
    let lifetime = answer
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME);
    Ok((sensitive(format!("Bearer {token}")), lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_bearer_preferred() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="r", Bearer realm="https://t/token""#),
            Some(Challenge::Bearer {
                realm: "https://t/token".into(),
                service: None,
                scope: None,
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn basic_headers_are_sensitive_base64() {
        let header = basic_header("alice", "s3cret");
        assert_eq!(header.to_str().unwrap(), "Basic YWxpY2U6czNjcmV0");
        assert!(header.is_sensitive());
    }

    #[tokio::test]
    async fn one_refresh_serves_every_waiting_task() {
        let cache = Arc::new(AuthCache::default());
        let key = AuthKey {
            base_url: "https://r/v2".into(),
            repository: "a".into(),
        };
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, key, fetches) = (cache.clone(), key.clone(), fetches.clone());
                tokio::spawn(async move {
                    cache
                        .renew(&key, None, async || {
                            fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok(Some((
                                sensitive("Bearer t1".into()),
                                Some(Duration::from_secs(60)),
                            )))
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            let header = task.await.unwrap().unwrap().unwrap();
            assert_eq!(header.to_str().unwrap(), "Bearer t1");
        }
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The token that failed is replaced, not handed out again.
        let rejected = cache.current(&key).unwrap();
        let renewed = cache
            .renew(&key, Some(&rejected), async || {
                Ok(Some((sensitive("Bearer t2".into()), None)))
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renewed.to_str().unwrap(), "Bearer t2");
    }

    #[test]
    fn expired_tokens_are_not_sent() {
        let cache = AuthCache::default();
        let key = AuthKey {
            base_url: "b".into(),
            repository: "r".into(),
        };
        cache.current.lock().unwrap().insert(
            key.clone(),
            Cached {
                header: sensitive("Bearer old".into()),
                expires: Some(Instant::now() - Duration::from_secs(1)),
            },
        );
        assert_eq!(cache.current(&key), None);
    }
}
