//! Access tokens: what simplejwt makes is accepted, and each way a token can
//! be wrong is refused with its own reason.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald::tokens::{TokenError, mint, validate};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use serde_json::{Value, json};

fn secret() -> SecretString {
    SecretString::from("test-secret-key-with-enough-length-0123456789")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Signs arbitrary claims with HS256 and the test secret.
fn sign(claims: Value) -> String {
    let key = EncodingKey::from_secret(b"test-secret-key-with-enough-length-0123456789");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn access_claims() -> Value {
    json!({"token_type": "access", "exp": now() + 300, "iat": now(), "jti": "abc", "user_id": "42"})
}

fn with(field: &str, value: Value) -> Value {
    let mut claims = access_claims();
    claims[field] = value;
    claims
}

fn without(field: &str) -> Value {
    let mut claims = access_claims();
    claims.as_object_mut().unwrap().remove(field);
    claims
}

/// The simplejwt vectors: (variant, token), with the vectors' secret.
fn vector(variant: &str) -> (SecretString, String) {
    let doc = crate::helpers::fixture("tokens.json");
    let secret = SecretString::from(doc["secret_key"].as_str().unwrap());
    let token = doc["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["variant"] == variant)
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    (secret, token)
}

#[test]
fn minted_token_round_trips_with_simplejwt_claims() {
    let token = mint(&secret(), 42, Duration::from_secs(300)).unwrap();
    let parsed = validate(&secret(), &token).unwrap();
    assert_eq!(parsed.user_id, 42);
    let body = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
    assert_eq!(claims["token_type"], "access");
    assert_eq!(claims["user_id"], "42");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
    assert_eq!(parsed.exp, claims["exp"].as_i64().unwrap());
}

#[test]
fn accepts_simplejwt_string_user_id() {
    let (secret, token) = vector("valid");
    assert_eq!(validate(&secret, &token).unwrap().user_id, 42);
}

#[test]
fn accepts_simplejwt_integer_user_id() {
    let (secret, token) = vector("int-user-id");
    assert_eq!(validate(&secret, &token).unwrap().user_id, 42);
}

#[test]
fn rejects_expired() {
    let (secret, token) = vector("expired");
    assert_eq!(validate(&secret, &token), Err(TokenError::Expired));
    let just_expired = sign(with("exp", json!(now() - 1)));
    assert_eq!(
        validate(&self::secret(), &just_expired),
        Err(TokenError::Expired)
    );
}

#[test]
fn rejects_not_yet_valid() {
    let token = sign(with("nbf", json!(now() + 120)));
    assert_eq!(validate(&secret(), &token), Err(TokenError::NotYetValid));
}

#[test]
fn rejects_bad_signature() {
    let (secret, token) = vector("wrong-key");
    assert_eq!(validate(&secret, &token), Err(TokenError::BadSignature));
    let other = SecretString::from("another-secret");
    let token = sign(access_claims());
    assert_eq!(validate(&other, &token), Err(TokenError::BadSignature));
}

#[test]
fn rejects_alg_none() {
    let (secret, token) = vector("alg-none");
    assert_eq!(validate(&secret, &token), Err(TokenError::AlgNone));
}

#[test]
fn rejects_another_algorithm() {
    let (secret, token) = vector("hs512");
    assert!(
        matches!(validate(&secret, &token), Err(TokenError::WrongAlgorithm(alg)) if alg == "HS512")
    );
}

#[test]
fn rejects_refresh_token_type() {
    let (secret, token) = vector("refresh");
    assert_eq!(validate(&secret, &token), Err(TokenError::WrongTokenType));
    let missing = sign(without("token_type"));
    assert_eq!(
        validate(&self::secret(), &missing),
        Err(TokenError::WrongTokenType)
    );
}

// The vectors without exp or user_id expired minutes after they were made,
// so these two sign their own tokens with the same claims.
#[test]
fn rejects_missing_exp() {
    let (secret, token) = vector("no-exp");
    assert_eq!(validate(&secret, &token), Err(TokenError::MissingExpiry));
    let own = sign(without("exp"));
    assert_eq!(
        validate(&self::secret(), &own),
        Err(TokenError::MissingExpiry)
    );
}

#[test]
fn rejects_missing_user_id() {
    let token = sign(without("user_id"));
    assert_eq!(validate(&secret(), &token), Err(TokenError::MissingUserId));
}

#[test]
fn rejects_malformed_user_id() {
    for bad in [
        json!("abc"),
        json!(""),
        json!(1.5),
        json!(-3),
        json!("-3"),
        json!(null),
        json!([42]),
        json!("4 2"),
    ] {
        let token = sign(with("user_id", bad.clone()));
        assert_eq!(
            validate(&secret(), &token),
            Err(TokenError::MalformedUserId),
            "{bad}"
        );
    }
}

#[test]
fn rejects_garbage() {
    let (secret, token) = vector("garbage");
    assert_eq!(validate(&secret, &token), Err(TokenError::Malformed));
    for junk in ["", "a", "a.b", "....", "🔔.🔔.🔔"] {
        assert_eq!(
            validate(&secret, junk),
            Err(TokenError::Malformed),
            "{junk:?}"
        );
    }
}

/// The reason shown to a client never contains the token or the key.
#[test]
fn reasons_do_not_leak_the_token() {
    let token = sign(with("exp", json!(now() - 10)));
    let error = validate(&secret(), &token).unwrap_err();
    let text = error.to_string();
    assert!(!text.contains(&token[..20]) && !text.contains("test-secret"));
    assert_eq!(error.code(), "expired");
}
