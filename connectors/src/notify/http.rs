//! Posts FHIR resources to a FHIR server: `POST {base}/Communication` over HTTPS (HTTP/1.1),
//! with a bearer token and a conditional create.
//!
//! Each request carries `Content-Type: application/fhir+json`, `Authorization: Bearer <token>`
//! and `If-None-Exist: identifier=urn:vitalflow:notification|<id>`: a server that already has
//! the notification creates nothing (and answers 200), so retries and repeated deliveries are
//! safe.
//!
//! The answer's status decides: 2xx delivered; 408, 429 and 5xx (and connection failures and
//! time-outs) are retried under the [`RetryPolicy`]; any other status is a dead letter. The
//! answer's body is read and dropped: it may echo the resource, and nothing of it is kept.
//! Plain `http://` is refused unless the settings allow it. The connection is kept for the next
//! request and opened again after a failure.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use thiserror::Error;

use super::fhir::NOTIFICATION_SYSTEM;
use super::tls::Connector;
use super::{AttemptError, NotifyError, Outcome, RetryPolicy, connect};

/// The most of an answer's body read (the rest closes the connection).
const MAX_BODY: usize = 256 * 1024;

/// A bearer token. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

/// Why a token cannot be loaded. Messages name where it was looked for, never the token.
#[derive(Debug, Error)]
pub enum TokenError {
    /// The source is neither `file:PATH` nor `env:NAME`.
    #[error("a token source is `file:PATH` or `env:NAME`")]
    Source,
    /// The file cannot be read.
    #[error("cannot read the token file {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The environment variable is not set (or not Unicode).
    #[error("the environment variable {0} is not set")]
    Env(String),
    /// Nothing is left once whitespace is trimmed.
    #[error("the token from {0} is empty")]
    Empty(String),
    /// The token holds characters an HTTP header cannot carry.
    #[error("the token from {0} holds characters an HTTP header cannot carry")]
    Invalid(String),
}

impl BearerToken {
    /// A token (trimmed); `from` names where it came from, for errors.
    ///
    /// # Errors
    /// [`TokenError::Empty`] or [`TokenError::Invalid`].
    pub fn new(token: &str, from: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty(from.to_owned()));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Invalid(from.to_owned()));
        }
        Ok(Self(token.to_owned()))
    }
}

/// Loads a bearer token from `file:PATH` (the file's content) or `env:NAME` (an environment
/// variable), trimmed.
///
/// # Errors
/// An unknown source, a file that cannot be read, a variable not set, an empty token or one
/// with characters a header cannot carry.
pub fn load_token(source: &str) -> Result<BearerToken, TokenError> {
    if let Some(path) = source.strip_prefix("file:") {
        let path = PathBuf::from(path);
        let token = std::fs::read_to_string(&path).map_err(|source| TokenError::File {
            path: path.clone(),
            source,
        })?;
        BearerToken::new(&token, &format!("file {}", path.display()))
    } else if let Some(name) = source.strip_prefix("env:") {
        let token = std::env::var(name).map_err(|_| TokenError::Env(name.to_owned()))?;
        BearerToken::new(&token, &format!("environment variable {name}"))
    } else {
        Err(TokenError::Source)
    }
}

/// Where and how the client posts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FhirHttpSettings {
    /// The FHIR server's base URL (`https://host[:port]/path`); resources go to
    /// `{base}/Communication`.
    pub base_url: String,
    /// The CA certificates (PEM) the server's certificate must chain to; `None`: the system's
    /// trusted roots.
    pub ca_file: Option<PathBuf>,
    /// The name the server's certificate must hold; `None`: the URL's host.
    pub server_name: Option<String>,
    /// Whether an `http://` base URL is taken (no TLS: the token and the PHI travel in clear).
    pub allow_plain_http: bool,
    /// The longest a connection (with its TLS handshake) may take.
    pub connect_timeout: Duration,
    /// The longest a request may take, from sending it to the end of the answer.
    pub request_timeout: Duration,
    /// Retries and when to give up.
    pub retry: RetryPolicy,
}

impl FhirHttpSettings {
    /// Settings for `base_url`: 10 s to connect, 30 s a request, the default [`RetryPolicy`].
    #[must_use]
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            ca_file: None,
            server_name: None,
            allow_plain_http: false,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// Percent-encodes all but URL-unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Posts FHIR resources to one server. One request at a time.
pub struct FhirHttpClient {
    settings: FhirHttpSettings,
    host: String,
    port: u16,
    tls: Option<Connector>,
    authority: HeaderValue,
    path: String,
    authorization: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl std::fmt::Debug for FhirHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirHttpClient")
            .field("settings", &self.settings)
            .field("connected", &self.sender.is_some())
            .finish_non_exhaustive()
    }
}

impl FhirHttpClient {
    /// A client posting to `settings.base_url` with `token`; it connects when it first posts.
    ///
    /// # Errors
    /// The URL is unusable (or `http://` without `allow_plain_http`), or the TLS configuration
    /// cannot be made.
    pub fn new(settings: FhirHttpSettings, token: &BearerToken) -> Result<Self, NotifyError> {
        let url = |what: &str| NotifyError::Url(what.to_owned());
        let uri: Uri = settings.base_url.parse().map_err(|_| url("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if settings.allow_plain_http => false,
            Some("http") => return Err(url("http:// is not allowed: use https://")),
            _ => return Err(url("the scheme is not https://")),
        };
        if uri.query().is_some() {
            return Err(url("a base URL has no query"));
        }
        let authority = uri.authority().ok_or_else(|| url("no host"))?;
        if authority.as_str().contains('@') {
            return Err(url("a base URL has no user information"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(url("no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = format!("{}/Communication", uri.path().trim_end_matches('/'));
        let tls = if tls {
            Some(Connector::new(
                settings.ca_file.as_deref(),
                settings.server_name.as_deref().unwrap_or(&host),
                &[b"http/1.1"],
            )?)
        } else {
            None
        };
        let authority =
            HeaderValue::from_str(authority.as_str()).map_err(|_| url("invalid host"))?;
        // `BearerToken` holds visible ASCII only: always a valid header value.
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.0))
            .map_err(|_| NotifyError::Url("unusable token".to_owned()))?;
        authorization.set_sensitive(true);
        Ok(Self {
            settings,
            host,
            port,
            tls,
            authority,
            path,
            authorization,
            sender: None,
        })
    }

    /// Posts a `Communication` (see [`communication`](super::communication)) whose identifier
    /// is `notification_id`, until the server takes or refuses it or the retry policy gives up.
    pub async fn post_communication(
        &mut self,
        resource: &serde_json::Value,
        notification_id: &str,
    ) -> Outcome {
        let body = match serde_json::to_vec(resource) {
            Ok(b) => Bytes::from(b),
            Err(_) => {
                return Outcome::Rejected {
                    attempts: 0,
                    code: "unserializable".to_owned(),
                    text: String::new(),
                };
            }
        };
        // Only unreserved characters and `%XX`: always a valid header value.
        let condition = format!(
            "identifier={NOTIFICATION_SYSTEM}|{}",
            percent_encode(notification_id)
        );
        let Ok(condition) = HeaderValue::from_str(&condition) else {
            return Outcome::Rejected {
                attempts: 0,
                code: "invalid-id".to_owned(),
                text: String::new(),
            };
        };
        let mut backoff = self.settings.retry.start();
        loop {
            let attempt = backoff.begin_attempt();
            let reused = self.sender.is_some();
            let error = match self.attempt(&body, &condition, &backoff).await {
                Ok(status) if status.is_success() => {
                    tracing::debug!(attempt, status = status.as_u16(), "FHIR resource posted");
                    return Outcome::Delivered {
                        attempts: attempt,
                        code: status.as_str().to_owned(),
                    };
                }
                Ok(status)
                    if status.is_server_error()
                        || status == StatusCode::REQUEST_TIMEOUT
                        || status == StatusCode::TOO_MANY_REQUESTS =>
                {
                    tracing::warn!(
                        attempt,
                        status = status.as_u16(),
                        "FHIR server busy or failing"
                    );
                    AttemptError::Status(status.as_u16())
                }
                Ok(status) => {
                    tracing::warn!(
                        attempt,
                        status = status.as_u16(),
                        "FHIR server refused the resource"
                    );
                    return Outcome::Rejected {
                        attempts: attempt,
                        code: status.as_str().to_owned(),
                        text: status.canonical_reason().unwrap_or_default().to_owned(),
                    };
                }
                Err(e) => {
                    self.sender = None;
                    tracing::warn!(attempt, error = %e, "FHIR delivery attempt failed");
                    e
                }
            };
            match backoff.next_delay(reused && error.stale_connection()) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => {
                    return Outcome::GaveUp {
                        attempts: attempt,
                        reason: error.to_string(),
                    };
                }
            }
        }
    }

    /// One request: connects if needed, posts and reads the answer; its status.
    async fn attempt(
        &mut self,
        body: &Bytes,
        condition: &HeaderValue,
        backoff: &super::Backoff,
    ) -> Result<StatusCode, AttemptError> {
        if self.sender.as_ref().is_some_and(SendRequest::is_closed) {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = connect(
                &self.host,
                self.port,
                self.tls.as_ref(),
                backoff.step_timeout(self.settings.connect_timeout),
            )
            .await?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| AttemptError::Http(e.to_string()))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "FHIR server connection ended");
                }
            });
            self.sender = Some(sender);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(AttemptError::Closed);
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
            .header(HOST, self.authority.clone())
            .header(CONTENT_TYPE, "application/fhir+json")
            .header(ACCEPT, "application/fhir+json")
            .header(AUTHORIZATION, self.authorization.clone())
            .header(HeaderName::from_static("if-none-exist"), condition.clone())
            .body(Full::new(body.clone()))
            .map_err(|_| AttemptError::Http("the request cannot be built".to_owned()))?;
        let exchange = async {
            sender.ready().await.map_err(|_| AttemptError::Closed)?;
            let response = sender.send_request(request).await.map_err(|e| {
                // A kept connection the server had closed (idle keep-alive).
                if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
                    AttemptError::Closed
                } else {
                    AttemptError::Http(e.to_string())
                }
            })?;
            let status = response.status();
            // Read (and drop) the body, so that the connection can carry the next request.
            Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|_| {
                    AttemptError::Protocol("the answer's body is too long or cut short")
                })?;
            Ok(status)
        };
        tokio::time::timeout(
            backoff.step_timeout(self.settings.request_timeout),
            exchange,
        )
        .await
        .map_err(|_| AttemptError::Timeout("waiting for the FHIR server"))?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use hyper::Response;
    use hyper::body::Incoming;
    use hyper::service::service_fn;

    use super::*;
    use crate::notify::testing::{certificates, notification};
    use crate::notify::{FhirSettings, communication};

    /// A request the test server took.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// A FHIR server on a thread of its own (HTTPS with the test certificate, or plain HTTP):
    /// it answers the statuses of `statuses` in turn (the last one for every later request).
    struct Server {
        port: u16,
        seen: Arc<Mutex<Vec<Seen>>>,
        connections: Arc<Mutex<usize>>,
    }

    impl Server {
        fn start(tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>, statuses: &[u16]) -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let port = listener.local_addr().unwrap().port();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let connections = Arc::new(Mutex::new(0));
            let statuses = Arc::new(Mutex::new(
                statuses.iter().copied().collect::<VecDeque<_>>(),
            ));
            let (s, c) = (Arc::clone(&seen), Arc::clone(&connections));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            return;
                        };
                        *c.lock().unwrap() += 1;
                        let (s, statuses, tls) =
                            (Arc::clone(&s), Arc::clone(&statuses), tls.clone());
                        tokio::spawn(async move {
                            let service = service_fn(move |req: Request<Incoming>| {
                                let (s, statuses) = (Arc::clone(&s), Arc::clone(&statuses));
                                async move {
                                    let (parts, body) = req.into_parts();
                                    let body = body.collect().await.unwrap().to_bytes().to_vec();
                                    s.lock().unwrap().push(Seen {
                                        method: parts.method.to_string(),
                                        path: parts.uri.to_string(),
                                        headers: parts
                                            .headers
                                            .iter()
                                            .map(|(n, v)| {
                                                (n.to_string(), v.to_str().unwrap().to_owned())
                                            })
                                            .collect(),
                                        body,
                                    });
                                    let status = {
                                        let mut q = statuses.lock().unwrap();
                                        if q.len() > 1 {
                                            q.pop_front().unwrap()
                                        } else {
                                            q[0]
                                        }
                                    };
                                    let answer = Response::builder()
                                        .status(status)
                                        .header(CONTENT_TYPE, "application/fhir+json")
                                        .body(Full::new(Bytes::from_static(
                                            b"{\"resourceType\":\"OperationOutcome\"}",
                                        )))
                                        .unwrap();
                                    Ok::<_, Infallible>(answer)
                                }
                            });
                            let builder = hyper::server::conn::http1::Builder::new();
                            match tls {
                                None => {
                                    let _ =
                                        builder.serve_connection(TokioIo::new(tcp), service).await;
                                }
                                Some(config) => {
                                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                                    let Ok(stream) = acceptor.accept(tcp).await else {
                                        return;
                                    };
                                    let _ = builder
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                }
                            }
                        });
                    }
                });
            });
            Self {
                port,
                seen,
                connections,
            }
        }
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// An HTTPS server with the test certificates, and the settings of a client trusting them;
    /// `None` without `openssl`.
    fn https(statuses: &[u16]) -> Option<(tempfile::TempDir, Server, FhirHttpSettings)> {
        let dir = tempfile::tempdir().unwrap();
        if !certificates(dir.path()) {
            return None;
        }
        let p = |f: &str| dir.path().join(f);
        let config = crate::mllp::server_config(&p("server.pem"), &p("server.key"), None).unwrap();
        let server = Server::start(Some(config), statuses);
        let mut settings =
            FhirHttpSettings::new(format!("https://localhost:{}/fhir/", server.port));
        settings.ca_file = Some(p("ca.pem"));
        settings.retry = RetryPolicy {
            initial_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
            give_up_after: Duration::from_secs(20),
        };
        Some((dir, server, settings))
    }

    fn token(dir: &std::path::Path) -> BearerToken {
        let file = dir.join("token");
        std::fs::write(&file, "  s3cr3t-token.abc\n").unwrap();
        load_token(&format!("file:{}", file.display())).unwrap()
    }

    #[test]
    fn a_communication_is_posted_over_https_with_token_and_condition() {
        let Some((dir, server, settings)) = https(&[201]) else {
            return;
        };
        let n = notification();
        let resource = communication(
            &n,
            &FhirSettings {
                mrn_system: "https://hospital.example/mrn".into(),
            },
        )
        .unwrap();
        let mut client = FhirHttpClient::new(settings, &token(dir.path())).unwrap();
        let outcomes = run(async {
            let a = client
                .post_communication(&resource, &n.notification_id)
                .await;
            let b = client
                .post_communication(&resource, &n.notification_id)
                .await;
            (a, b)
        });
        let want = Outcome::Delivered {
            attempts: 1,
            code: "201".into(),
        };
        assert_eq!(outcomes, (want.clone(), want));
        // The connection was kept.
        assert_eq!(*server.connections.lock().unwrap(), 1);
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let r = &seen[0];
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/fhir/Communication");
        assert_eq!(r.header("authorization"), Some("Bearer s3cr3t-token.abc"));
        assert_eq!(r.header("content-type"), Some("application/fhir+json"));
        assert_eq!(
            r.header("if-none-exist"),
            Some("identifier=urn:vitalflow:notification|3f2a9c1e-7b44-4d0e-9a51-0c6d2e8f1a77")
        );
        assert_eq!(
            r.header("host"),
            Some(format!("localhost:{}", server.port).as_str())
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body, resource);
        assert_eq!(body["resourceType"], "Communication");
    }

    #[test]
    fn a_busy_server_is_tried_again_and_a_refusal_is_a_dead_letter() {
        let Some((dir, server, settings)) = https(&[503, 201]) else {
            return;
        };
        let resource = serde_json::json!({"resourceType": "Communication", "status": "completed"});
        let mut client = FhirHttpClient::new(settings.clone(), &token(dir.path())).unwrap();
        assert_eq!(
            run(client.post_communication(&resource, "n-1")),
            Outcome::Delivered {
                attempts: 2,
                code: "201".into()
            }
        );
        assert_eq!(server.seen.lock().unwrap().len(), 2);

        let Some((dir, _server, settings)) = https(&[400]) else {
            return;
        };
        let mut client = FhirHttpClient::new(settings, &token(dir.path())).unwrap();
        assert_eq!(
            run(client.post_communication(&resource, "n-1")),
            Outcome::Rejected {
                attempts: 1,
                code: "400".into(),
                text: "Bad Request".into()
            }
        );

        let Some((dir, _server, mut settings)) = https(&[429]) else {
            return;
        };
        settings.retry.give_up_after = Duration::from_millis(250);
        let mut client = FhirHttpClient::new(settings, &token(dir.path())).unwrap();
        match run(client.post_communication(&resource, "n-1")) {
            Outcome::GaveUp { attempts, reason } => {
                assert!(attempts >= 2, "{attempts}");
                assert_eq!(reason, "HTTP status 429");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_server_certificate_not_trusted_is_not_posted_to() {
        let Some((dir, server, mut settings)) = https(&[201]) else {
            return;
        };
        settings.server_name = Some("elsewhere.example".into());
        settings.retry.give_up_after = Duration::from_millis(200);
        let mut client = FhirHttpClient::new(settings, &token(dir.path())).unwrap();
        let outcome = run(client.post_communication(&serde_json::json!({}), "n-1"));
        assert!(
            matches!(&outcome, Outcome::GaveUp { reason, .. } if reason.starts_with("connecting")),
            "{outcome:?}"
        );
        assert!(server.seen.lock().unwrap().is_empty());
    }

    #[test]
    fn plain_http_only_when_allowed() {
        let t = BearerToken::new("t", "test").unwrap();
        let err =
            FhirHttpClient::new(FhirHttpSettings::new("http://127.0.0.1:1/fhir"), &t).unwrap_err();
        assert!(err.to_string().contains("http:// is not allowed"), "{err}");
        for bad in [
            "ftp://x/",
            "not a url",
            "https://u:p@host/",
            "https://host/fhir?x=1",
        ] {
            assert!(
                FhirHttpClient::new(FhirHttpSettings::new(bad), &t).is_err(),
                "{bad}"
            );
        }

        let server = Server::start(None, &[200]);
        let mut settings = FhirHttpSettings::new(format!("http://127.0.0.1:{}", server.port));
        settings.allow_plain_http = true;
        let mut client = FhirHttpClient::new(settings, &t).unwrap();
        assert_eq!(
            run(client.post_communication(&serde_json::json!({}), "a b|c")),
            Outcome::Delivered {
                attempts: 1,
                code: "200".into()
            }
        );
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen[0].path, "/Communication");
        assert_eq!(
            seen[0].header("if-none-exist"),
            Some("identifier=urn:vitalflow:notification|a%20b%7Cc")
        );
    }

    #[test]
    fn tokens_load_from_files_and_the_environment_and_errors_never_show_them() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(token(dir.path()), BearerToken("s3cr3t-token.abc".into()));
        assert_eq!(format!("{:?}", token(dir.path())), "BearerToken(..)");

        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let err = load_token(&format!("file:{}", empty.display())).unwrap_err();
        assert!(matches!(err, TokenError::Empty(_)), "{err}");
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "s3cr3t two\n").unwrap();
        let err = load_token(&format!("file:{}", bad.display())).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(matches!(err, TokenError::Invalid(_)), "{err}");
        let err = load_token("file:/nonexistent/token").unwrap_err();
        assert!(matches!(err, TokenError::File { .. }), "{err}");

        let err = load_token("s3cr3t-pasted-by-mistake").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let err = load_token("env:VITALFLOW_TEST_TOKEN_NOT_SET_ANYWHERE").unwrap_err();
        assert!(matches!(err, TokenError::Env(_)), "{err}");
        // An environment variable every test process has.
        let path = std::env::var("PATH").unwrap_or_default();
        if !path.trim().is_empty() && path.bytes().all(|b| b.is_ascii_graphic()) {
            assert_eq!(
                load_token("env:PATH").unwrap(),
                BearerToken(path.trim().into())
            );
        }
    }
}
