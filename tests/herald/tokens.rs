//! Access tokens: what simplejwt makes is accepted, and each way a token can
//! be wrong is refused with its own reason.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald::tokens::{TokenError, mint, validate, validate_at};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;
use serde_json::{Value, json};

fn secret() -> SecretString {
    SecretString::from("test-secret-key-with-enough-length-0123456789")
}

const TEN_YEARS: i64 = 10 * 365 * 24 * 3600;

/// The clocks every claim test runs at: today, and ten years on. Tokens are
/// signed relative to the clock, so only those meant to expire do.
fn clocks() -> [i64; 2] {
    let now = chrono::Utc::now().timestamp();
    [now, now + TEN_YEARS]
}

/// Signs arbitrary claims with HS256 and the test secret.
fn sign(claims: Value) -> String {
    let key = EncodingKey::from_secret(b"test-secret-key-with-enough-length-0123456789");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn access_claims(now: i64) -> Value {
    json!({"token_type": "access", "exp": now + 300, "iat": now, "jti": "abc", "user_id": "42"})
}

fn with(now: i64, field: &str, value: Value) -> Value {
    let mut claims = access_claims(now);
    claims[field] = value;
    claims
}

fn without(now: i64, field: &str) -> Value {
    let mut claims = access_claims(now);
    claims.as_object_mut().unwrap().remove(field);
    claims
}

/// The simplejwt vectors: their secret, and (variant, token, valid) each.
fn vectors() -> (SecretString, Vec<(String, String, bool)>) {
    let doc = crate::helpers::fixture("tokens.json");
    let secret = SecretString::from(doc["secret_key"].as_str().unwrap());
    let tokens = doc["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let field = |name: &str| t[name].as_str().unwrap().to_string();
            (
                field("variant"),
                field("token"),
                t["valid"].as_bool().unwrap(),
            )
        })
        .collect();
    (secret, tokens)
}

fn vector(variant: &str) -> (SecretString, String) {
    let (secret, tokens) = vectors();
    let (_, token, _) = tokens.into_iter().find(|(v, _, _)| v == variant).unwrap();
    (secret, token)
}

/// When the vectors were made: the `iat` of the valid one. Judging them at
/// that time keeps the outcome independent of the day the suite runs.
fn made_at() -> i64 {
    let (_, token) = vector("valid");
    let body = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
    claims["iat"].as_i64().unwrap()
}

fn judge(variant: &str, at: i64) -> Result<i64, TokenError> {
    let (secret, token) = vector(variant);
    validate_at(&secret, &token, at).map(|t| t.user_id)
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

/// Every vector, judged when it was made, is accepted exactly when
/// simplejwt accepted it, and refused for its own reason.
#[test]
fn vectors_are_judged_as_simplejwt_judged_them() {
    let at = made_at();
    let (secret, tokens) = vectors();
    for (variant, token, valid) in tokens {
        let outcome = validate_at(&secret, &token, at);
        assert_eq!(outcome.is_ok(), valid, "{variant}: {outcome:?}");
    }
    let expected = [
        ("valid", Ok(42)),
        ("int-user-id", Ok(42)),
        ("expired", Err(TokenError::Expired)),
        ("wrong-key", Err(TokenError::BadSignature)),
        ("alg-none", Err(TokenError::AlgNone)),
        ("hs512", Err(TokenError::WrongAlgorithm("HS512".into()))),
        ("refresh", Err(TokenError::WrongTokenType)),
        ("no-exp", Err(TokenError::MissingExpiry)),
        ("no-user-id", Err(TokenError::MissingUserId)),
        ("garbage", Err(TokenError::Malformed)),
    ];
    for (variant, outcome) in expected {
        assert_eq!(judge(variant, at), outcome, "{variant}");
    }
}

/// Past the vectors' lifetime, `exp` is judged before the claims (as
/// simplejwt does): the long-lived ones now expire, the rest keep the reason
/// that comes first.
#[test]
fn vectors_past_their_lifetime_expire_first() {
    let later = made_at() + TEN_YEARS + 1;
    for variant in ["valid", "int-user-id", "expired", "refresh", "no-user-id"] {
        assert_eq!(judge(variant, later), Err(TokenError::Expired), "{variant}");
    }
    assert_eq!(judge("wrong-key", later), Err(TokenError::BadSignature));
    assert_eq!(judge("alg-none", later), Err(TokenError::AlgNone));
    assert_eq!(judge("no-exp", later), Err(TokenError::MissingExpiry));
    assert_eq!(judge("garbage", later), Err(TokenError::Malformed));
}

#[test]
fn accepts_string_and_integer_user_id_at_every_clock() {
    for now in clocks() {
        for user_id in [json!("42"), json!(42)] {
            let token = sign(with(now, "user_id", user_id));
            assert_eq!(validate_at(&secret(), &token, now).unwrap().user_id, 42);
        }
    }
}

#[test]
fn rejects_expired() {
    for now in clocks() {
        let just_expired = sign(with(now, "exp", json!(now - 1)));
        assert_eq!(
            validate_at(&secret(), &just_expired, now),
            Err(TokenError::Expired)
        );
        let expiring_now = sign(with(now, "exp", json!(now)));
        assert_eq!(
            validate_at(&secret(), &expiring_now, now),
            Err(TokenError::Expired),
            "exp equal to now is expired, as in PyJWT"
        );
        let token = sign(access_claims(now));
        assert_eq!(
            validate_at(&secret(), &token, now + 300),
            Err(TokenError::Expired)
        );
        assert!(validate_at(&secret(), &token, now + 299).is_ok());
    }
    let just_expired = sign(with(0, "exp", json!(chrono::Utc::now().timestamp() - 1)));
    assert_eq!(
        validate(&secret(), &just_expired),
        Err(TokenError::Expired),
        "validate reads the real clock"
    );
}

#[test]
fn rejects_not_yet_valid() {
    for now in clocks() {
        let token = sign(with(now, "nbf", json!(now + 120)));
        assert_eq!(
            validate_at(&secret(), &token, now),
            Err(TokenError::NotYetValid)
        );
        assert!(validate_at(&secret(), &token, now + 120).is_ok());
    }
}

#[test]
fn rejects_bad_signature() {
    let other = SecretString::from("another-secret");
    for now in clocks() {
        let token = sign(access_claims(now));
        assert_eq!(
            validate_at(&other, &token, now),
            Err(TokenError::BadSignature)
        );
    }
}

#[test]
fn rejects_refresh_token_type() {
    for now in clocks() {
        for claims in [
            with(now, "token_type", json!("refresh")),
            without(now, "token_type"),
        ] {
            assert_eq!(
                validate_at(&secret(), &sign(claims), now),
                Err(TokenError::WrongTokenType)
            );
        }
    }
}

#[test]
fn rejects_missing_exp() {
    for now in clocks() {
        let own = sign(without(now, "exp"));
        assert_eq!(
            validate_at(&secret(), &own, now),
            Err(TokenError::MissingExpiry)
        );
    }
}

#[test]
fn rejects_missing_user_id() {
    for now in clocks() {
        let token = sign(without(now, "user_id"));
        assert_eq!(
            validate_at(&secret(), &token, now),
            Err(TokenError::MissingUserId)
        );
    }
}

#[test]
fn rejects_malformed_user_id() {
    let now = clocks()[0];
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
        let token = sign(with(now, "user_id", bad.clone()));
        assert_eq!(
            validate_at(&secret(), &token, now),
            Err(TokenError::MalformedUserId),
            "{bad}"
        );
    }
}

#[test]
fn rejects_garbage() {
    for junk in ["", "a", "a.b", "....", "🔔.🔔.🔔"] {
        assert_eq!(
            validate(&secret(), junk),
            Err(TokenError::Malformed),
            "{junk:?}"
        );
    }
    let now = clocks()[0];
    let text_exp = sign(with(now, "exp", json!("soon")));
    assert_eq!(
        validate_at(&secret(), &text_exp, now),
        Err(TokenError::Malformed)
    );
}

/// The reason shown to a client never contains the token or the key.
#[test]
fn reasons_do_not_leak_the_token() {
    let now = clocks()[0];
    let token = sign(with(now, "exp", json!(now - 10)));
    let error = validate(&secret(), &token).unwrap_err();
    let text = error.to_string();
    assert!(!text.contains(&token[..20]) && !text.contains("test-secret"));
    assert_eq!(error.code(), "expired");
}
