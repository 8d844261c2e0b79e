//! JWT access tokens in djangorestframework-simplejwt's format: HS256 signed
//! with Django's SECRET_KEY, claims `token_type: "access"`, `exp`, `iat`,
//! `jti`, `user_id`. `mint` makes one (for `herald token` and the demo);
//! `validate` is what the sidecar trusts.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Map, Value};

/// Why a token was refused. The Display text is safe to show the client: it
/// never repeats the token or the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("unsigned tokens (alg \"none\") are not accepted")]
    AlgNone,
    #[error("token algorithm {0} is not accepted; HS256 only")]
    WrongAlgorithm(String),
    #[error("token has no valid token_type \"access\"")]
    WrongTokenType,
    #[error("token has no user_id claim")]
    MissingUserId,
    #[error("token user_id is not a user id")]
    MalformedUserId,
    #[error("token has no exp claim")]
    MissingExpiry,
    #[error("token is malformed")]
    Malformed,
    #[error("token could not be signed: {0}")]
    Signing(String),
}

impl TokenError {
    /// A short stable name, for metrics labels and close reasons.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::BadSignature => "bad_signature",
            TokenError::AlgNone => "alg_none",
            TokenError::WrongAlgorithm(_) => "wrong_algorithm",
            TokenError::WrongTokenType => "wrong_token_type",
            TokenError::MissingUserId => "missing_user_id",
            TokenError::MalformedUserId => "malformed_user_id",
            TokenError::MissingExpiry => "missing_exp",
            TokenError::Malformed => "malformed",
            TokenError::Signing(_) => "signing",
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub user_id: i64,
    /// Expiry, epoch seconds.
    pub exp: i64,
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    token_type: &'a str,
    exp: i64,
    iat: i64,
    jti: String,
    /// A string, as simplejwt 5.5.1 and later write it.
    user_id: String,
}

/// An access token for `user_id`, valid for `ttl` from now.
pub fn mint(secret: &SecretString, user_id: i64, ttl: Duration) -> Result<String, TokenError> {
    let now = chrono::Utc::now().timestamp();
    let ttl =
        i64::try_from(ttl.as_secs()).map_err(|_| TokenError::Signing("ttl too long".into()))?;
    let claims = MintedClaims {
        token_type: "access",
        exp: now.saturating_add(ttl),
        iat: now,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        user_id: user_id.to_string(),
    };
    let key = EncodingKey::from_secret(secret.expose_secret().as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|e| TokenError::Signing(e.to_string()))
}

/// Checks signature (HS256 only), `exp` and `nbf` (no leeway), `token_type`
/// and `user_id` (an integer or a string of digits), at the current time.
pub fn validate(secret: &SecretString, token: &str) -> Result<AccessToken, TokenError> {
    validate_at(secret, token, chrono::Utc::now().timestamp())
}

/// [`validate`] with the clock given: `now` in epoch seconds. The checks run
/// in simplejwt's order: signature, then `exp` and `nbf`, then the claims.
pub fn validate_at(
    secret: &SecretString,
    token: &str,
    now: i64,
) -> Result<AccessToken, TokenError> {
    check_algorithm(token)?;
    let mut validation = Validation::new(Algorithm::HS256);
    // Times are checked below against `now`, not the library's own clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims::<&str>(&[]);
    let key = DecodingKey::from_secret(secret.expose_secret().as_bytes());
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| from_jwt_error(e.kind()))?
        .claims;
    let exp = check_times(&claims, now)?;
    if claims.get("token_type").and_then(Value::as_str) != Some("access") {
        return Err(TokenError::WrongTokenType);
    }
    let user_id = parse_user_id(claims.get("user_id").ok_or(TokenError::MissingUserId)?)?;
    Ok(AccessToken { user_id, exp })
}

/// `exp` must be present and after `now`; `nbf`, when present, at or before
/// it (no leeway, as simplejwt's default). Answers `exp`.
fn check_times(claims: &Map<String, Value>, now: i64) -> Result<i64, TokenError> {
    let exp = match claims.get("exp") {
        None => return Err(TokenError::MissingExpiry),
        Some(value) => epoch_seconds(value).ok_or(TokenError::Malformed)?,
    };
    if exp <= now {
        return Err(TokenError::Expired);
    }
    let nbf = claims.get("nbf").map(epoch_seconds);
    match nbf {
        Some(None) => Err(TokenError::Malformed),
        Some(Some(nbf)) if nbf > now => Err(TokenError::NotYetValid),
        _ => Ok(exp),
    }
}

/// A NumericDate: an integer, or a float truncated as PyJWT reads it.
fn epoch_seconds(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

/// Reads the header's `alg` before anything else, so `none` and foreign
/// algorithms get their own answer.
fn check_algorithm(token: &str) -> Result<(), TokenError> {
    let header = token.split('.').next().ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    let header: Value = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    match header.get("alg").and_then(Value::as_str) {
        Some("HS256") => Ok(()),
        Some(alg) if alg.eq_ignore_ascii_case("none") => Err(TokenError::AlgNone),
        Some(alg) => Err(TokenError::WrongAlgorithm(alg.chars().take(16).collect())),
        None => Err(TokenError::Malformed),
    }
}

fn from_jwt_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm("other".into()),
        _ => TokenError::Malformed,
    }
}

fn parse_user_id(value: &Value) -> Result<i64, TokenError> {
    let id = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    };
    id.filter(|id| *id >= 0).ok_or(TokenError::MalformedUserId)
}
