//! The HTTPS calls of the device protocol, one function each, with the
//! daemon's error answers mapped to [`Error`] and its clock recorded.

use std::sync::Arc;
use std::time::Duration;

use idprov_proto::device::{
    Credentials, InfoResponse, ProvisionRequest, ProvisionResponse, RenewRequest, paths,
};
use idprov_proto::{ErrorBody, ErrorCode};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::proof::ServerClock;
use crate::trust::{PinnedCa, bootstrap_tls_config};

/// Largest answer read from the daemon; real ones are a few KiB.
const MAX_BODY: usize = 256 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a pending device asks the daemon to hold its `/provision`
/// request for a decision (RFC 7240 `Prefer: wait`); daemons that do not
/// wait answer at once, and the client then polls after `Retry-After`.
pub(crate) const PROVISION_WAIT: Duration = Duration::from_secs(25);

fn user_agent() -> &'static str {
    concat!("idprov-client/", env!("CARGO_PKG_VERSION"))
}

/// A connection to one daemon, over TLS pinned to its CA.
#[derive(Clone)]
pub(crate) struct DaemonApi {
    http: reqwest::Client,
    /// For the channel-bound calls (bound.rs): HTTP/1.1 only.
    bound_tls: Arc<rustls::ClientConfig>,
    base: String,
    clock: Arc<ServerClock>,
}

impl DaemonApi {
    pub fn new(base: &str, ca: &PinnedCa, clock: Arc<ServerClock>) -> Result<Self, Error> {
        let mut bound_tls = ca.tls_config()?;
        bound_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(ca.tls_config()?)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(user_agent())
            .build()
            .map_err(|e| Error::config_from("cannot set up the HTTPS client", e))?;
        Ok(DaemonApi {
            http,
            bound_tls: Arc::new(bound_tls),
            base: base.trim_end_matches('/').to_string(),
            clock,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn info(&self) -> Result<InfoResponse, Error> {
        let resp = self
            .http
            .get(format!("{}{}", self.base, paths::INFO))
            .send()
            .await
            .map_err(|e| network(&self.base, &format!("GET {}", paths::INFO), e))?;
        let (_, info): (StatusCode, InfoResponse) = self.answer(resp).await?;
        self.clock.observe_unix_secs(info.time);
        Ok(info)
    }

    /// 200 approved or 202 pending, and whether the daemon held the request
    /// for a decision (`Preference-Applied: wait`). `build` makes the
    /// request with the channel binding of the connection it will be sent
    /// on (bound.rs).
    pub async fn provision(
        &self,
        build: impl FnOnce(Option<&str>) -> Result<ProvisionRequest, Error>,
    ) -> Result<(ProvisionResponse, bool), Error> {
        let prefer = (
            http::HeaderName::from_static("prefer"),
            http::HeaderValue::from_str(&format!("wait={}", PROVISION_WAIT.as_secs()))
                .map_err(|e| Error::config_from("building the request", e))?,
        );
        let raw = self
            .post_bound(
                paths::PROVISION,
                REQUEST_TIMEOUT + PROVISION_WAIT,
                &[prefer],
                build,
            )
            .await?;
        let waited = raw
            .headers
            .get_all("preference-applied")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|p| p.trim().starts_with("wait")));
        let (_, answer) = self.decode(raw)?;
        Ok((answer, waited))
    }

    pub async fn renew(
        &self,
        build: impl FnOnce(Option<&str>) -> Result<RenewRequest, Error>,
    ) -> Result<Credentials, Error> {
        let raw = self
            .post_bound(paths::RENEW, REQUEST_TIMEOUT, &[], build)
            .await?;
        let (status, answer) = self.decode(raw)?;
        match answer {
            ProvisionResponse::Approved(c) => Ok(c),
            ProvisionResponse::Pending(_) => Err(Error::protocol(
                status.as_u16(),
                "renewal answered 'pending'",
            )),
        }
    }

    async fn post_bound<B: serde::Serialize>(
        &self,
        path: &str,
        timeout: Duration,
        extra: &[(http::HeaderName, http::HeaderValue)],
        build: impl FnOnce(Option<&str>) -> Result<B, Error>,
    ) -> Result<crate::bound::RawAnswer, Error> {
        let mut headers = vec![(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(user_agent()),
        )];
        headers.extend_from_slice(extra);
        crate::bound::post_bound(
            &self.bound_tls,
            &self.base,
            &format!("{}{path}", base_path(&self.base)),
            MAX_BODY,
            timeout,
            &headers,
            build,
        )
        .await
    }

    /// The same checks as [`Self::answer`], on an exchange made by bound.rs.
    fn decode<T: DeserializeOwned>(
        &self,
        raw: crate::bound::RawAnswer,
    ) -> Result<(StatusCode, T), Error> {
        if let Some(date) = raw.headers.get(reqwest::header::DATE)
            && let Ok(s) = date.to_str()
        {
            self.clock.observe_http_date(s);
        }
        let status = raw.status;
        if status.is_success() {
            let value = serde_json::from_slice(&raw.body)
                .map_err(|e| Error::protocol_from(status.as_u16(), "unreadable answer", e))?;
            return Ok((status, value));
        }
        Err(api_error(status, retry_after(&raw.headers), &raw.body))
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        resp: reqwest::Response,
    ) -> Result<(StatusCode, T), Error> {
        if let Some(date) = resp.headers().get(reqwest::header::DATE)
            && let Ok(s) = date.to_str()
        {
            self.clock.observe_http_date(s);
        }
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_limited(resp, &self.base).await?;
        if status.is_success() {
            let value = serde_json::from_slice(&body)
                .map_err(|e| Error::protocol_from(status.as_u16(), "unreadable answer", e))?;
            return Ok((status, value));
        }
        Err(api_error(status, retry_after, &body))
    }
}

/// The path part of a base URL (`https://h:p/prefix` → `/prefix`), usually
/// empty.
fn base_path(base: &str) -> String {
    reqwest::Url::parse(base)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default()
}

/// A `Retry-After` in seconds.
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

pub(crate) fn api_error(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Error {
    let Ok(err) = serde_json::from_slice::<ErrorBody>(body) else {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        return Error::protocol(status.as_u16(), idprov_proto::ids::escape_untrusted(&text));
    };
    let message = idprov_proto::ids::escape_untrusted(&err.message);
    if err.code == ErrorCode::Refused {
        return Error::Rejected { message };
    }
    let retry_after = retry_after.or(err.retry_after_secs.map(Duration::from_secs));
    Error::Api {
        status: status.as_u16(),
        body: Box::new(err),
        retry_after,
        message,
    }
}

/// A failed exchange with the daemon; `step` says which (`GET /path`).
fn network(base: &str, step: &str, e: reqwest::Error) -> Error {
    // A certificate the pinned verifier refused is not a network hiccup.
    if refused_certificate(&e) {
        return Error::untrusted_from(format!("{base}: its TLS certificate was refused"), e);
    }
    Error::Network {
        server: base.to_string(),
        message: step.to_string(),
        source: Some(e.into()),
    }
}

/// Whether the TLS layer refused the daemon's certificate, somewhere in the
/// chain of `e` (rustls's error is wrapped in I/O and HTTP errors, and only
/// its text survives the wrapping).
pub(crate) fn refused_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(c) = next {
        let text = c.to_string();
        if text.contains("invalid peer certificate") || text.contains("UnknownIssuer") {
            return true;
        }
        next = c.source();
    }
    false
}

async fn read_limited(mut resp: reqwest::Response, base: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| network(base, "reading the answer", e))?
    {
        if out.len() + chunk.len() > MAX_BODY {
            return Err(Error::protocol(
                resp.status().as_u16(),
                format!("answer longer than {MAX_BODY} bytes"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Download the daemon's CA certificate without trusting the connection.
/// The caller compares it with the pinned fingerprint, or pins it (TOFU).
pub(crate) async fn fetch_ca(base: &str) -> Result<PinnedCa, Error> {
    let base = base.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(bootstrap_tls_config()?)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(user_agent())
        .build()
        .map_err(|e| Error::config_from("cannot set up the HTTPS client", e))?;
    let resp = http
        .get(format!("{base}{}", paths::CA))
        .send()
        .await
        .map_err(|e| network(base, &format!("GET {}", paths::CA), e))?;
    let status = resp.status();
    let body = read_limited(resp, base).await?;
    if !status.is_success() {
        return Err(api_error(status, None, &body));
    }
    let text = String::from_utf8(body)
        .map_err(|e| Error::protocol_from(status.as_u16(), "CA certificate is not PEM text", e))?;
    PinnedCa::from_pem(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_is_a_rejection_and_hints_are_kept() {
        let body = br#"{"code":"refused","message":"no"}"#;
        assert!(matches!(
            api_error(StatusCode::FORBIDDEN, None, body),
            Error::Rejected { .. }
        ));
        let body = br#"{"code":"slow_down","message":"wait","retry_after_secs":7}"#;
        let e = api_error(StatusCode::TOO_MANY_REQUESTS, None, body);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(e.code(), Some(ErrorCode::SlowDown));
        assert!(e.is_retryable());
        // The header wins over the body.
        let e = api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(3)),
            br#"{"code":"busy","message":"x","retry_after_secs":9}"#,
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn non_json_errors_are_protocol_errors_with_escaped_text() {
        let e = api_error(StatusCode::BAD_GATEWAY, None, b"<html>\x1b[2J</html>");
        match e {
            Error::Protocol {
                status, message, ..
            } => {
                assert_eq!(status, 502);
                assert!(!message.contains('\u{1b}'));
            }
            other => panic!("expected Protocol, got {other:?}"),
        }
        let e = api_error(
            StatusCode::BAD_REQUEST,
            None,
            br#"{"code":"bad_request","message":"bad key"}"#,
        );
        assert!(!e.is_retryable());
    }
}
