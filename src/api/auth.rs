//! Who may use the job API: a bearer key compared in constant time. With
//! no key configured the API refuses everything, except in development
//! mode (`herald run --dev`), where clients on this machine may submit: the
//! TCP peer must be loopback (the socket, not a header, decides) and the
//! request plainly local ([`local_request`]).

use std::borrow::Cow;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa::openapi::{self, Content, Object, Ref, RefOr, Type, header::HeaderBuilder};

use super::body::{ErrorBody, error};

/// The API's access rule.
#[derive(Clone)]
pub enum ApiAuth {
    /// Requests must carry `Authorization: Bearer <key>`.
    Key(SecretString),
    /// No key, development mode: clients on this machine may submit.
    Development,
    /// No key: nobody may.
    Closed,
}

impl ApiAuth {
    /// The rule for `key` (empty: none), in development mode or not.
    pub fn new(key: &SecretString, development: bool) -> Self {
        match (key.expose_secret().is_empty(), development) {
            (false, _) => ApiAuth::Key(key.clone()),
            (true, true) => ApiAuth::Development,
            (true, false) => ApiAuth::Closed,
        }
    }

    /// `Err` is the 401 answer, saying why without echoing what was sent.
    /// `peer` is the request's TCP peer (unknown: not local).
    pub(crate) fn check(
        &self,
        headers: &HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<(), Refused> {
        let expected = match self {
            ApiAuth::Development => {
                return local_peer(peer)
                    .and_then(|()| local_request(headers))
                    .map_err(|reason| Refused(format!("without api.key, {reason}").into()));
            }
            ApiAuth::Closed => {
                return Err(Refused(
                    "the job API is disabled: set api.key (HERALD_API__KEY), or run \
                     `herald run --dev` on a developer's machine"
                        .into(),
                ));
            }
            ApiAuth::Key(key) => key.expose_secret().as_bytes(),
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match presented {
            None => Err(Refused(
                "missing `Authorization: Bearer <api key>` header".into(),
            )),
            Some(given) if bool::from(given.as_bytes().ct_eq(expected)) => Ok(()),
            Some(_) => Err(Refused("invalid API key".into())),
        }
    }
}

/// Whether the TCP peer is this machine (a loopback address): the socket
/// says so, whatever the headers claim.
pub(crate) fn local_peer(peer: Option<std::net::SocketAddr>) -> Result<(), &'static str> {
    match peer {
        Some(peer) if peer.ip().is_loopback() => Ok(()),
        _ => Err("only clients on this machine are served (the connection is not from loopback)"),
    }
}

/// Whether a request reaching a loopback listener is plainly local: its
/// `Host` names the loopback interface (so a page of another site whose DNS
/// name was pointed at 127.0.0.1 is refused), no proxy forwarded it (a
/// reverse proxy on the same machine would make a remote client look
/// local), and a browser's `Origin`, when sent, is loopback too (so another
/// site's page cannot post to it). `Err` says which rule failed.
pub(crate) fn local_request(headers: &HeaderMap) -> Result<(), &'static str> {
    const FORWARDED: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];
    if FORWARDED.iter().any(|name| headers.contains_key(*name)) {
        return Err("only direct local requests are served; this one was forwarded by a proxy");
    }
    let text = |name| {
        headers
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().unwrap_or(""))
    };
    if !text(header::HOST).is_some_and(|host| loopback_url(&format!("http://{host}/"))) {
        return Err("only requests for a loopback Host (localhost, 127.0.0.1, [::1]) are served");
    }
    if text(header::ORIGIN).is_some_and(|origin| !loopback_url(origin)) {
        return Err("only pages from a loopback origin are served");
    }
    Ok(())
}

/// Whether `url`'s host is the loopback interface.
fn loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return false;
    };
    match uri.host() {
        Some("localhost") => true,
        Some(name) => name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Why a request was refused; answers 401 with the reason.
#[derive(Debug)]
pub(crate) struct Refused(Cow<'static, str>);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = error(StatusCode::UNAUTHORIZED, self.0.into_owned());
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

/// The 401 answer in the OpenAPI document, shared by every job route.
impl<'r> utoipa::ToResponse<'r> for Refused {
    fn response() -> (&'r str, RefOr<openapi::Response>) {
        let challenge = HeaderBuilder::new()
            .schema(Some(Object::with_type(Type::String)))
            .description(Some("`Bearer`"))
            .build();
        let response = openapi::ResponseBuilder::new()
            .description(
                "No `Authorization: Bearer <api.key>` header, a wrong key, or no key configured \
                 (outside development mode, which serves only clients on herald's machine); the \
                 reason says which.",
            )
            .header("WWW-Authenticate", challenge)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name(ErrorBody::name()))),
            )
            .build();
        ("Unauthorized", response.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn development_trusts_the_socket_not_the_headers() {
        let auth = ApiAuth::new(&SecretString::from(""), true);
        let local = headers(&[("host", "127.0.0.1:8001")]);
        let from = |ip: &str| Some(std::net::SocketAddr::new(ip.parse().unwrap(), 40000));
        assert!(auth.check(&local, from("127.0.0.1")).is_ok());
        assert!(auth.check(&local, from("::1")).is_ok());
        for peer in [from("203.0.113.9"), from("10.0.0.2"), None] {
            let refused = auth.check(&local, peer).unwrap_err();
            assert!(refused.0.contains("not from loopback"), "{}", refused.0);
        }
        let closed = ApiAuth::new(&SecretString::from(""), false);
        assert!(closed.check(&local, from("127.0.0.1")).is_err());
    }

    #[test]
    fn only_plainly_local_requests_count() {
        for host in [
            "localhost",
            "localhost:8001",
            "127.0.0.1:8001",
            "[::1]:8001",
            "127.1.2.3",
        ] {
            assert_eq!(local_request(&headers(&[("host", host)])), Ok(()), "{host}");
        }
        for host in [
            "example.com",
            "evil.localhost.example:80",
            "10.0.0.1:8001",
            "[::2]",
        ] {
            assert!(
                local_request(&headers(&[("host", host)])).is_err(),
                "{host}"
            );
        }
        assert!(local_request(&HeaderMap::new()).is_err());
        let proxied = headers(&[
            ("host", "127.0.0.1:8001"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert!(local_request(&proxied).unwrap_err().contains("proxy"));
        let page = headers(&[
            ("host", "127.0.0.1:8001"),
            ("origin", "http://localhost:8001"),
        ]);
        assert_eq!(local_request(&page), Ok(()));
        let other = headers(&[
            ("host", "127.0.0.1:8001"),
            ("origin", "https://evil.example"),
        ]);
        assert!(local_request(&other).unwrap_err().contains("origin"));
    }
}
