//! The webhook's HTTP side: the URL checked and taken apart, the TLS trust,
//! and one attempt at a POST, on hyper-util's client with hyper-rustls.
//!
//! The client runs on a current-thread tokio runtime owned by the sender
//! thread, so the loop that finds alerts (sync or async) never shares a
//! runtime with the network. Connections are never reused (every request
//! says `Connection: close`, and the pool is off): an attempt is one
//! connection, which keeps the count of attempts exact and a stale
//! connection from being retried behind the sender's back.

use super::{one_line, truncate};
use anyhow::{anyhow, bail, Result};
use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, HOST, LOCATION, RETRY_AFTER, USER_AGENT,
};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{self, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::error::Error as StdError;
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The largest response head (status line and headers) read.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// How much of an error response's body is quoted in a failure message.
const MAX_ERROR_BODY: usize = 200;
const USER_AGENT_VALUE: &str = concat!("kubectl-mapguard/", env!("CARGO_PKG_VERSION"));

pub(super) enum Retry {
    No,
    Yes,
    /// `Retry-After`: the server's wait.
    After(Duration),
}

pub(super) struct AttemptError {
    pub(super) msg: String,
    pub(super) retry: Retry,
}

impl AttemptError {
    fn retry(msg: impl Into<String>) -> Self {
        AttemptError {
            msg: msg.into(),
            retry: Retry::Yes,
        }
    }
    fn fatal(msg: impl Into<String>) -> Self {
        AttemptError {
            msg: msg.into(),
            retry: Retry::No,
        }
    }
}

/// A parsed webhook URL.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) tls: bool,
    /// Without the brackets of an IPv6 literal.
    pub(super) host: String,
    pub(super) port: u16,
    /// The `Host` header's value.
    pub(super) host_header: String,
    /// Path and query, at least `/`.
    pub(super) path: String,
    /// `scheme://host[:port]/…`, for messages.
    pub(super) shown: String,
}

impl Target {
    /// Checks what `http::Uri` lets through but a webhook must not have
    /// (credentials, a bad port, odd host names), and says what was wrong
    /// without quoting the URL: its path may be a secret.
    pub(super) fn parse(url: &str) -> Result<Target> {
        const ACCEPTED: &str = "an http:// or https:// URL is accepted \
            (e.g. https://hooks.slack.com/services/T000/B000/XXXX)";
        let Some((scheme, rest)) = url.split_once("://") else {
            bail!("alert webhook URL has no scheme: {ACCEPTED}");
        };
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => bail!(
                "alert webhook URL scheme {:?} is not supported: {ACCEPTED}",
                truncate(scheme, 20)
            ),
        };
        let scheme = if tls { "https" } else { "http" };
        if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
            bail!("alert webhook URL holds {c:?}: percent-encode it");
        }
        if !url.is_ascii() {
            bail!("alert webhook URL holds non-ASCII characters: percent-encode them");
        }
        if rest.is_empty() || rest.starts_with(['/', '?', '#']) {
            bail!("alert webhook URL has no host: {ACCEPTED}");
        }
        let uri: Uri = url.parse().map_err(|e| anyhow!("alert webhook URL: {e}"))?;
        let Some(authority) = uri.authority() else {
            bail!("alert webhook URL has no host: {ACCEPTED}");
        };
        if authority.as_str().contains('@') {
            bail!("alert webhook URL holds credentials (user@host), which are not supported");
        }
        let host = authority.host();
        let bare = match host.strip_prefix('[') {
            Some(v6) => {
                let v6 = v6.strip_suffix(']').unwrap_or(v6);
                if v6.parse::<Ipv6Addr>().is_err() {
                    bail!("alert webhook URL: bad IPv6 address [{v6}]");
                }
                v6
            }
            None => {
                if host.is_empty() {
                    bail!("alert webhook URL has no host: {ACCEPTED}");
                }
                if !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                {
                    bail!("alert webhook URL: bad host {host:?}");
                }
                host
            }
        };
        // `Uri` takes any port text and reads only a valid one: read it here
        // to refuse the rest. With no credentials, the host starts the authority.
        let default_port = if tls { 443 } else { 80 };
        let port = match authority.as_str()[host.len()..].strip_prefix(':') {
            None | Some("") => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => bail!("alert webhook URL: bad port {p:?}"),
            },
        };
        let host_header = if port == default_port {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        let path = match uri.query() {
            Some(q) => format!("{}?{q}", uri.path()),
            None => uri.path().to_string(),
        };
        let target = Target {
            tls,
            host: bare.to_string(),
            port,
            shown: format!("{scheme}://{host_header}/…"),
            host_header,
            path,
        };
        target
            .uri()
            .map_err(|e| anyhow!("alert webhook URL: {e}"))?;
        Ok(target)
    }

    /// What the request goes to: the URL as checked, less its fragment.
    fn uri(&self) -> Result<Uri, http::Error> {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        Uri::builder()
            .scheme(if self.tls { "https" } else { "http" })
            .authority(format!("{host}:{}", self.port))
            .path_and_query(self.path.as_str())
            .build()
    }
}

pub(super) fn tls_config(extra_ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut extra = Vec::new();
    if !extra_ca_pem.is_empty() {
        for cert in CertificateDer::pem_slice_iter(extra_ca_pem) {
            extra.push(cert.map_err(|e| anyhow!("bad extra CA certificate PEM: {e}"))?);
        }
        if extra.is_empty() {
            bail!("no CERTIFICATE in the extra CA PEM");
        }
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| anyhow!("cannot load CA certificates: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("{e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

type Body = Full<Bytes>;

/// TLS only for an `https://` target: a plain one needs no CA certificates.
enum Client {
    Plain(legacy::Client<HttpConnector, Body>),
    Tls(legacy::Client<HttpsConnector<HttpConnector>, Body>),
}

impl Client {
    fn request(&self, req: Request<Body>) -> ResponseFuture {
        match self {
            Client::Plain(c) => c.request(req),
            Client::Tls(c) => c.request(req),
        }
    }
}

/// Posts for the sender thread, blocking it for one attempt at a time.
pub(super) struct Poster {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Poster {
    pub(super) fn new(tls: Option<&Arc<rustls::ClientConfig>>) -> std::io::Result<Poster> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let mut builder = legacy::Client::builder(TokioExecutor::new());
        builder
            .pool_max_idle_per_host(0)
            .retry_canceled_requests(false)
            .http1_title_case_headers(true)
            .http1_max_buf_size(MAX_RESPONSE_HEAD);
        let client = match tls {
            None => Client::Plain(builder.build(http)),
            Some(config) => {
                http.enforce_http(false);
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(rustls::ClientConfig::clone(config))
                    .https_only()
                    .enable_http1()
                    .wrap_connector(http);
                Client::Tls(builder.build(https))
            }
        };
        Ok(Poster { rt, client })
    }

    /// One attempt: POST `body`, bounded by `timeout` from the host name's
    /// lookup to the response's head.
    pub(super) fn post(
        &self,
        target: &Target,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(), AttemptError> {
        self.rt.block_on(async {
            let result = post(&self.client, target, body, timeout).await;
            // The connection's task ends once it sees the response dropped;
            // let it run now rather than at the next alert.
            tokio::task::yield_now().await;
            result
        })
    }

    /// Ends without waiting for a host name lookup that outlived its
    /// attempt (dropping the runtime would).
    pub(super) fn close(self) {
        self.rt.shutdown_background();
    }
}

async fn post(
    client: &Client,
    target: &Target,
    body: Bytes,
    timeout: Duration,
) -> Result<(), AttemptError> {
    let deadline = Instant::now() + timeout;
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = target
        .uri()
        .map_err(|e| AttemptError::fatal(format!("bad URL: {e}")))?;
    let headers = req.headers_mut();
    let host = HeaderValue::from_str(&target.host_header)
        .map_err(|e| AttemptError::fatal(format!("bad Host header: {e}")))?;
    headers.insert(HOST, host);
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    let response = tokio::time::timeout_at(deadline, client.request(req))
        .await
        .map_err(|_| AttemptError::retry(format!("timed out after {timeout:?}")))?
        .map_err(|e| request_error(&e))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        let _ = tokio::time::timeout_at(deadline, drain(response.into_body())).await;
        return Ok(());
    }
    let header = |name: HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
    };
    let retry_after = header(RETRY_AFTER)
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let location = header(LOCATION);
    // An error: quote the start of its body (Slack says why there).
    let mut quoted = Vec::new();
    let _ = tokio::time::timeout_at(deadline, async {
        quoted = body_start(response.into_body(), MAX_ERROR_BODY).await;
    })
    .await;
    let body = one_line(&String::from_utf8_lossy(&quoted));
    let said = if body.is_empty() {
        String::new()
    } else {
        format!(": {}", truncate(body.trim(), MAX_ERROR_BODY))
    };
    Err(match status {
        429 | 500..=599 => AttemptError {
            msg: format!("HTTP {status}{said}"),
            retry: retry_after.map_or(Retry::Yes, Retry::After),
        },
        300..=399 => AttemptError::fatal(match location.as_deref().and_then(redact) {
            Some(to) => format!("HTTP {status}: redirect to {to} not followed"),
            None => format!("HTTP {status}: redirect not followed"),
        }),
        _ => AttemptError::fatal(format!("HTTP {status}{said}")),
    })
}

/// Reads a body to its end, so that its connection closes now.
async fn drain(mut body: Incoming) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// The start of a body: its first `max` bytes or more (what came in one
/// piece), or what came before it failed or ended.
async fn body_start(mut body: Incoming, max: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < max {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    got
}

/// Says why a request got no response, and whether a retry may help: a
/// certificate or other TLS failure will fail the same way again.
fn request_error(e: &legacy::Error) -> AttemptError {
    let tls = causes(e).any(|c| c.is::<rustls::Error>());
    let mut said: Vec<String> = causes(e).skip(1).map(|c| c.to_string()).collect();
    said.dedup();
    let said = said.join(": ");
    let tls_said = if tls { "TLS: " } else { "" };
    let hyper_error = causes(e).find_map(|c| c.downcast_ref::<hyper::Error>());
    let msg = if e.is_connect() {
        format!("cannot connect: {tls_said}{said}")
    } else {
        match hyper_error {
            Some(h) if h.is_incomplete_message() => {
                "connection closed without a response".to_string()
            }
            Some(h) if h.is_parse_too_large() => "response head too large".to_string(),
            Some(h) if h.is_parse() => format!("not an HTTP response: {h}"),
            _ => format!("no response: {tls_said}{said}"),
        }
    };
    if tls {
        AttemptError::fatal(msg)
    } else {
        AttemptError::retry(msg)
    }
}

/// `e` and what caused it, looking inside `io::Error`s too (whose `source`
/// skips the error they wrap).
fn causes<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |&e: &&'a (dyn StdError + 'static)| {
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        }
    })
}

/// An absolute URL up to its host (the rest may be a secret); None for a
/// relative one.
pub(super) fn redact(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    let (scheme, authority) = (uri.scheme_str()?, uri.authority()?);
    // `host` and `port` leave out credentials.
    let port = authority
        .port()
        .map(|p| format!(":{}", p.as_str()))
        .unwrap_or_default();
    Some(format!("{scheme}://{}{port}/…", authority.host()))
}
