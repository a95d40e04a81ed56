//! Extractors that turn every rejection into the app's JSON error, and the bearer-token
//! identity extractors.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::auth::{hash_token, Identity};
use crate::error::Error;
use crate::store;

/// `axum::Json` whose rejections (bad JSON, wrong content type) are [`Error`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` with the app's error on a malformed segment.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with the app's error on a malformed query.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct Query<T>(pub T);

/// The caller's identity from `Authorization: Bearer <token>`; 401 without a live token.
pub struct Auth(pub Identity);

/// The caller's identity when there is one; anonymous callers are allowed.
pub struct MaybeAuth(pub Option<Identity>);

/// The raw bearer token of the request, when it has one.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for MaybeAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let Some(token) = bearer_token(parts) else {
            return Ok(MaybeAuth(None));
        };
        match store::users::identity_by_token(&state.db, &hash_token(token)).await? {
            Some(identity) => Ok(MaybeAuth(Some(identity))),
            // a token that was sent but is dead is an error, not an anonymous call: the
            // client should know to log in again
            None => Err(Error::Unauthorized),
        }
    }
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match MaybeAuth::from_request_parts(parts, state).await? {
            MaybeAuth(Some(identity)) => Ok(Auth(identity)),
            MaybeAuth(None) => Err(Error::Unauthorized),
        }
    }
}

/// Largest text field of a multipart form (reference points, ids): a few kilobytes say it.
pub const MAX_FORM_TEXT_BYTES: usize = 64 * 1024;

/// A multipart form's text field, refused (413) past `MAX_FORM_TEXT_BYTES` instead of read
/// whole into memory.
pub async fn form_text(mut field: axum::extract::multipart::Field<'_>) -> Result<String, Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| Error::bad_request("bad_form", e.body_text()))?
    {
        if bytes.len() + chunk.len() > MAX_FORM_TEXT_BYTES {
            return Err(Error::PayloadTooLarge {
                limit: MAX_FORM_TEXT_BYTES as u64,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| Error::bad_request("bad_form", "a form field is not UTF-8 text"))
}

/// The client's address: the socket's peer, or, when the peer is one of the configured
/// `trusted_proxies`, the address that proxy says it forwarded for (`X-Forwarded-For`, read
/// from the right: the nearest entry that is not itself a trusted proxy; an entry that cannot
/// be read stops the walk at the proxy's own address). A header from anybody else is ignored.
/// IPv4-mapped IPv6 addresses count as IPv4, and an IPv6 client as its /64 (one host holds a
/// whole /64), so the per-address limits key on what one client controls.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp {
    pub ip: std::net::IpAddr,
    /// Whether the request came through a trusted proxy (so its `X-Forwarded-Proto` holds).
    pub via_proxy: bool,
}

impl ClientIp {
    pub fn of(parts: &Parts, trusted: &[std::net::IpAddr]) -> ClientIp {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| {
                c.0.ip().to_canonical()
            });
        let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|t| t.to_canonical() == *ip);
        if !is_trusted(&peer) {
            return ClientIp {
                ip: limit_key(peer),
                via_proxy: false,
            };
        }
        let entries: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut ip = peer;
        for entry in entries.iter().rev() {
            let Some(address) = forwarded_address(entry) else {
                break;
            };
            ip = address;
            if !is_trusted(&address) {
                break;
            }
        }
        ClientIp {
            ip: limit_key(ip),
            via_proxy: true,
        }
    }
}

/// One `X-Forwarded-For` entry as an address: bare, `host:port`, or `[v6]:port`.
fn forwarded_address(entry: &str) -> Option<std::net::IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<std::net::IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    let bracketed = entry.strip_prefix('[').and_then(|e| e.split(']').next());
    bracketed
        .and_then(|e| e.parse::<std::net::IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// What the per-address limits count by: an IPv4 address, or an IPv6 address's /64.
fn limit_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        Ok(ClientIp::of(parts, &state.config.trusted_proxies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, forwarded: &[&str]) -> Parts {
        let mut request = axum::http::Request::builder();
        for f in forwarded {
            request = request.header("x-forwarded-for", *f);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        let peer: std::net::SocketAddr = peer.parse().unwrap();
        parts.extensions.insert(axum::extract::ConnectInfo(peer));
        parts
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies_and_from_the_right() {
        let proxy: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let ip = |peer: &str, forwarded: &[&str]| {
            ClientIp::of(&parts(peer, forwarded), &[proxy])
                .ip
                .to_string()
        };
        assert_eq!(
            ip("192.0.2.9:5000", &["203.0.113.5"]),
            "192.0.2.9",
            "not a proxy: ignored"
        );
        assert_eq!(ip("10.0.0.1:5000", &["203.0.113.5"]), "203.0.113.5");
        // the client's own entry on the left does not win over what the proxy appended
        assert_eq!(
            ip("10.0.0.1:5000", &["6.6.6.6, 203.0.113.5"]),
            "203.0.113.5"
        );
        assert_eq!(
            ip("10.0.0.1:5000", &["6.6.6.6", "203.0.113.5:4711"]),
            "203.0.113.5"
        );
        // an entry that cannot be read stops the walk at the proxy
        assert_eq!(ip("10.0.0.1:5000", &["6.6.6.6, unknown"]), "10.0.0.1");
        // IPv4-mapped peers are IPv4; IPv6 clients count by their /64
        assert_eq!(
            ip("[::ffff:10.0.0.1]:5000", &["203.0.113.5"]),
            "203.0.113.5"
        );
        assert_eq!(ip("[2001:db8:1:2:aaaa::1]:5000", &[]), "2001:db8:1:2::");
    }
}
