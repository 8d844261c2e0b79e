//! Who may use the dashboard: the job API's rule ([`ApiAuth`]), carried by
//! a session cookie so the page asks for the key once.
//!
//! Signing in with the API key (compared in constant time) sets
//! `herald_dashboard`: an HS256 token signed with a secret derived from the
//! key (changing `api.key` ends every session), holding its expiry and a
//! random CSRF token; the cookie is `HttpOnly`, `SameSite=Strict`, with
//! `Max-Age` = `dashboard.session_ttl`. Reads need the cookie (or the
//! bearer key); every button (POST) also needs the CSRF token in the
//! `X-CSRF-Token` header, which the page got when signing in (a bearer key
//! needs none: browsers never send it on their own). With no key the API's
//! rule holds: refused, except in development mode for plainly local
//! requests, which get a session without a key.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cookie::{Cookie, SameSite};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::{ApiAuth, error, local_peer, local_request};

/// The session cookie's name.
pub const COOKIE: &str = "herald_dashboard";
/// The header a button's request carries the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The claims of a session token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// Always "herald-dashboard".
    aud: String,
    exp: i64,
    csrf: String,
}

const AUDIENCE: &str = "herald-dashboard";

/// A valid session.
#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    pub expires: i64,
}

/// The dashboard's access rule and session keys.
#[derive(Clone)]
pub struct Access {
    rule: ApiAuth,
    /// Signs and checks session tokens (derived from the key, or in
    /// development mode from herald's secret).
    signing: Option<[u8; 32]>,
    ttl: std::time::Duration,
    secure: bool,
}

/// How a request was let in.
#[derive(Debug, Clone)]
pub enum Granted {
    /// The session cookie.
    Session(Session),
    /// `Authorization: Bearer <api.key>`.
    Key,
}

/// Why a request was refused: 401 (who are you) or 403 (bad CSRF token).
#[derive(Debug)]
pub struct Denied(StatusCode, String);

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

impl Access {
    /// The rule for `settings` (`api.key`, development mode); `secret` is
    /// herald's signing secret, used for sessions only in development mode.
    pub fn new(settings: &crate::config::Settings, secret: Option<&SecretString>) -> Access {
        let rule = ApiAuth::new(&settings.api.key, settings.development);
        let signing = match &rule {
            ApiAuth::Key(key) => Some(derive(b"key", key.expose_secret().as_bytes())),
            ApiAuth::Development => {
                secret.map(|s| derive(b"development", s.expose_secret().as_bytes()))
            }
            ApiAuth::Closed => None,
        };
        Access {
            rule,
            signing,
            ttl: settings.dashboard.session_ttl,
            secure: settings.dashboard.secure_cookie,
        }
    }

    /// Signs in with `key` (ignored in development mode, where the request
    /// must be plainly local): the session and its `Set-Cookie` value.
    pub fn sign_in(
        &self,
        key: &str,
        headers: &HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<(Session, HeaderValue), Denied> {
        match &self.rule {
            ApiAuth::Key(expected) => {
                let matches: bool = key
                    .as_bytes()
                    .ct_eq(expected.expose_secret().as_bytes())
                    .into();
                if !matches {
                    return Err(unauthorized("invalid API key"));
                }
            }
            ApiAuth::Development => local(headers, peer)?,
            ApiAuth::Closed => return Err(closed()),
        }
        self.issue()
    }

    /// A fresh session and its cookie.
    fn issue(&self) -> Result<(Session, HeaderValue), Denied> {
        let Some(signing) = &self.signing else {
            return Err(closed());
        };
        let mut random = [0u8; 32];
        rand::rng().fill(&mut random);
        let csrf = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let expires = chrono::Utc::now().timestamp().saturating_add(ttl);
        let claims = Claims {
            aud: AUDIENCE.into(),
            exp: expires,
            csrf: csrf.clone(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(signing),
        )
        .map_err(|_| Denied(StatusCode::INTERNAL_SERVER_ERROR, "no session".into()))?;
        let cookie = Cookie::build((COOKIE, token))
            .http_only(true)
            .same_site(SameSite::Strict)
            .path("/")
            .secure(self.secure)
            .max_age(cookie::time::Duration::seconds(ttl))
            .build();
        let value = HeaderValue::from_str(&cookie.to_string())
            .map_err(|_| Denied(StatusCode::INTERNAL_SERVER_ERROR, "no session".into()))?;
        Ok((Session { csrf, expires }, value))
    }

    /// The `Set-Cookie` value that ends the session in the browser.
    pub fn sign_out_cookie(&self) -> HeaderValue {
        let cookie = Cookie::build((COOKIE, ""))
            .http_only(true)
            .same_site(SameSite::Strict)
            .path("/")
            .secure(self.secure)
            .max_age(cookie::time::Duration::ZERO)
            .build();
        HeaderValue::from_str(&cookie.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("herald_dashboard=; Max-Age=0; Path=/"))
    }

    /// The session of the request's cookie, if any and valid.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let signing = self.signing.as_ref()?;
        let token = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .find(|cookie| cookie.name() == COOKIE)?
            .value()
            .to_string();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.leeway = 0;
        let data =
            jsonwebtoken::decode::<Claims>(&token, &DecodingKey::from_secret(signing), &validation)
                .ok()?;
        Some(Session {
            csrf: data.claims.csrf,
            expires: data.claims.exp,
        })
    }

    /// Lets a read in: the session cookie or the bearer key (and, in
    /// development mode, only plainly local requests).
    pub fn read(
        &self,
        headers: &HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Granted, Denied> {
        match &self.rule {
            ApiAuth::Closed => return Err(closed()),
            ApiAuth::Development => local(headers, peer)?,
            ApiAuth::Key(_) => {}
        }
        if let Some(session) = self.session(headers) {
            return Ok(Granted::Session(session));
        }
        if let ApiAuth::Key(_) = &self.rule
            && headers.contains_key(header::AUTHORIZATION)
        {
            return self
                .rule
                .check(headers, peer)
                .map(|()| Granted::Key)
                .map_err(|_| unauthorized("invalid API key"));
        }
        Err(unauthorized(
            "sign in to the dashboard (the session cookie is missing or expired), or send \
             `Authorization: Bearer <api.key>`",
        ))
    }

    /// Lets a change in: [`Access::read`], and with a session the CSRF
    /// token it was issued with in `X-CSRF-Token`.
    pub fn write(
        &self,
        headers: &HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Granted, Denied> {
        let granted = self.read(headers, peer)?;
        if let Granted::Session(session) = &granted {
            let given = headers
                .get(CSRF_HEADER)
                .map(|value| value.as_bytes())
                .unwrap_or_default();
            if !bool::from(given.ct_eq(session.csrf.as_bytes())) {
                return Err(Denied(
                    StatusCode::FORBIDDEN,
                    "missing or wrong X-CSRF-Token header (reload the dashboard)".into(),
                ));
            }
        }
        Ok(granted)
    }

    /// In development mode, a plainly local request without a session gets
    /// one (no key exists to ask for).
    pub fn development_session(
        &self,
        headers: &HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Option<Result<(Session, HeaderValue), Denied>> {
        match self.rule {
            ApiAuth::Development => Some(local(headers, peer).and_then(|()| self.issue())),
            _ => None,
        }
    }

    /// Whether this is development mode (no key needed).
    pub fn development(&self) -> bool {
        matches!(self.rule, ApiAuth::Development)
    }
}

/// The session secret: SHA-256 over a label and the key material.
fn derive(label: &[u8], material: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"herald dashboard session\0");
    hash.update(label);
    hash.update(b"\0");
    hash.update(material);
    hash.finalize().into()
}

fn local(headers: &HeaderMap, peer: Option<std::net::SocketAddr>) -> Result<(), Denied> {
    local_peer(peer)
        .and_then(|()| local_request(headers))
        .map_err(|reason| unauthorized(&format!("without api.key, {reason}")))
}

fn unauthorized(reason: &str) -> Denied {
    Denied(StatusCode::UNAUTHORIZED, reason.to_string())
}

fn closed() -> Denied {
    unauthorized(
        "the dashboard is closed: set api.key (HERALD_API__KEY), or run `herald run --dev` \
         on a developer's machine",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access_for(key: &str) -> Access {
        let mut settings = crate::config::Settings::defaults();
        settings.api.key = SecretString::from(key.to_string());
        Access::new(&settings, None)
    }

    fn with_cookie(value: &HeaderValue) -> HeaderMap {
        let pair = value
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, pair.parse().unwrap());
        headers
    }

    #[test]
    fn a_session_needs_the_key_and_buttons_need_its_csrf_token() {
        let access = access_for("k3y");
        let none = HeaderMap::new();
        assert!(access.sign_in("wrong", &none, None).is_err());
        let (session, cookie) = access.sign_in("k3y", &none, None).unwrap();
        let text = cookie.to_str().unwrap();
        for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"] {
            assert!(text.contains(attribute), "{attribute} in {text}");
        }
        let mut headers = with_cookie(&cookie);
        assert!(matches!(
            access.read(&headers, None),
            Ok(Granted::Session(_))
        ));
        let refused = access.write(&headers, None).unwrap_err();
        assert_eq!(refused.0, StatusCode::FORBIDDEN);
        headers.insert(CSRF_HEADER, "nope".parse().unwrap());
        assert_eq!(
            access.write(&headers, None).unwrap_err().0,
            StatusCode::FORBIDDEN
        );
        headers.insert(CSRF_HEADER, session.csrf.parse().unwrap());
        assert!(access.write(&headers, None).is_ok());
        // Another key's sessions are not this one's.
        assert!(access_for("other").read(&headers, None).is_err());
        assert_eq!(
            access.read(&none, None).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, "Bearer k3y".parse().unwrap());
        assert!(matches!(access.write(&bearer, None), Ok(Granted::Key)));
        bearer.insert(header::AUTHORIZATION, "Bearer no".parse().unwrap());
        assert!(access.read(&bearer, None).is_err());
    }

    #[test]
    fn without_a_key_the_dashboard_is_closed() {
        let access = access_for("");
        let local = Some("127.0.0.1:5000".parse().unwrap());
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8001".parse().unwrap());
        assert!(access.sign_in("", &headers, local).is_err());
        assert!(access.read(&headers, local).is_err());
        assert!(access.development_session(&headers, local).is_none());
    }
}
