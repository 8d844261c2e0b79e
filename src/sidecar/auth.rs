//! Who a WebSocket client is: the token from the `Sec-WebSocket-Protocol`
//! header first, then the `access` cookie, then `?token=`, as the contract
//! orders them; and which subprotocol the handshake answer echoes.
//! Pure functions over the request's headers and query, tested on values.

use axum::http::HeaderMap;
use axum::http::header::{COOKIE, HOST, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use secrecy::SecretString;

use crate::tokens::{self, AccessToken, TokenError};

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Subprotocol,
    Cookie,
    Query,
}

/// The credential of a handshake request and the subprotocol to echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The token and where it came from; `None` when the client sent none.
    pub token: Option<(String, TokenSource)>,
    /// The value to select in the handshake answer: a fixed protocol name
    /// when the client offered one beside the token, else the token itself
    /// when it was offered alone (browsers fail a handshake whose answer
    /// selects nothing they offered).
    pub echo: Option<String>,
}

/// Why authentication failed; the close reason is [`AuthError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no access token: send it as a subprotocol, the `access` cookie or ?token=")]
    Missing,
    #[error("the access cookie is not accepted from this page's origin")]
    OriginNotAllowed,
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl AuthError {
    /// A short stable name, used as the close reason and the metrics label.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::OriginNotAllowed => "origin_not_allowed",
            AuthError::Token(error) => error.code(),
        }
    }
}

/// True for a value shaped like a compact JWT (three dot-separated base64url
/// parts); anything else in the subprotocol list is a protocol name.
fn looks_like_jwt(value: &str) -> bool {
    let parts: Vec<&str> = value.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// The offered subprotocols, in the client's order: the header (or headers)
/// split on commas and trimmed, as Django Channels builds
/// `scope["subprotocols"]`.
pub fn offered_subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(String::from)
        .collect()
}

/// The value of the `access` cookie, if any.
pub fn access_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == "access")
        .map(|cookie| cookie.value_trimmed().to_string())
        .filter(|value| !value.is_empty())
}

/// Picks the token by the contract's order and the subprotocol to echo.
pub fn credentials(headers: &HeaderMap, query_token: Option<&str>) -> Credentials {
    let offered = offered_subprotocols(headers);
    let from_protocol = offered.iter().find(|p| looks_like_jwt(p)).cloned();
    let name = offered.iter().find(|p| !looks_like_jwt(p)).cloned();
    let echo = name.or_else(|| from_protocol.clone());
    let token = from_protocol
        .map(|t| (t, TokenSource::Subprotocol))
        .or_else(|| access_cookie(headers).map(|t| (t, TokenSource::Cookie)))
        .or_else(|| {
            query_token
                .filter(|t| !t.is_empty())
                .map(|t| (t.to_string(), TokenSource::Query))
        });
    Credentials { token, echo }
}

/// May a cookie credential be used from this request's page? Browsers send
/// cookies with cross-site WebSocket handshakes, so the `Origin` must be
/// listed in `allowed` or, with an empty list, name the same host:port as
/// the `Host` header. A request without `Origin` is not from a browser page.
pub fn cookie_origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/');
    if !allowed.is_empty() {
        return allowed
            .iter()
            .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin));
    }
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h.trim()))
}

/// Validates the chosen token; a cookie must come from an allowed origin.
pub fn authenticate(
    secret: &SecretString,
    credentials: &Credentials,
    headers: &HeaderMap,
    allowed_origins: &[String],
) -> Result<AccessToken, AuthError> {
    let (token, source) = credentials.token.as_ref().ok_or(AuthError::Missing)?;
    if *source == TokenSource::Cookie && !cookie_origin_allowed(headers, allowed_origins) {
        return Err(AuthError::OriginNotAllowed);
    }
    Ok(tokens::validate(secret, token)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiMSJ9.c2ln";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn token_alone_is_echoed() {
        let c = credentials(&headers(&[("sec-websocket-protocol", JWT)]), None);
        assert_eq!(c.token, Some((JWT.into(), TokenSource::Subprotocol)));
        assert_eq!(c.echo.as_deref(), Some(JWT));
    }

    #[test]
    fn a_name_beside_the_token_is_echoed_never_the_token() {
        for value in [format!("{JWT}, herald.v1"), format!("herald.v1, {JWT}")] {
            let c = credentials(&headers(&[("sec-websocket-protocol", &value)]), None);
            assert_eq!(c.token, Some((JWT.into(), TokenSource::Subprotocol)));
            assert_eq!(c.echo.as_deref(), Some("herald.v1"));
        }
    }

    #[test]
    fn order_is_subprotocol_then_cookie_then_query() {
        let h = headers(&[
            ("sec-websocket-protocol", JWT),
            ("cookie", "a=b; access=cookie.tok.en"),
        ]);
        assert_eq!(
            credentials(&h, Some("q")).token.unwrap().1,
            TokenSource::Subprotocol
        );
        let h = headers(&[("cookie", "a=b; access=cookie.tok.en")]);
        let c = credentials(&h, Some("q"));
        assert_eq!(c.token, Some(("cookie.tok.en".into(), TokenSource::Cookie)));
        assert_eq!(c.echo, None);
        let c = credentials(&HeaderMap::new(), Some("q"));
        assert_eq!(c.token, Some(("q".into(), TokenSource::Query)));
        assert_eq!(credentials(&HeaderMap::new(), Some("")).token, None);
    }

    #[test]
    fn a_lone_non_jwt_subprotocol_is_a_name() {
        let c = credentials(&headers(&[("sec-websocket-protocol", "chat")]), None);
        assert_eq!(c.token, None);
        assert_eq!(c.echo.as_deref(), Some("chat"));
    }

    #[test]
    fn missing_token_has_its_code() {
        let secret = SecretString::from("k");
        let c = credentials(&HeaderMap::new(), None);
        let err = authenticate(&secret, &c, &HeaderMap::new(), &[]).unwrap_err();
        assert_eq!(err.code(), "missing_token");
    }

    #[test]
    fn cookie_origins() {
        let same = headers(&[("host", "h:8001"), ("origin", "http://h:8001")]);
        assert!(cookie_origin_allowed(&same, &[]));
        let other = headers(&[("host", "h:8001"), ("origin", "https://evil.example")]);
        assert!(!cookie_origin_allowed(&other, &[]));
        let listed = ["https://evil.example/".to_string()];
        assert!(cookie_origin_allowed(&other, &listed));
        assert!(!cookie_origin_allowed(&same, &listed));
        assert!(cookie_origin_allowed(&headers(&[("host", "h")]), &[]));
    }
}
