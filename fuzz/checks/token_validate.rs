//! Access tokens (`herald::tokens`): `validate_at` never panics on any
//! string at any clock, and what it accepts is consistent (`exp` after the
//! clock, a user id of at least 0); a token `mint` makes validates for its
//! user until its `exp`, and not at `exp` nor under another secret.
//!
//! Input: one mode byte (modulo 4), then per mode:
//! - 0: clock (8 bytes, i64 little-endian), then a whole token, checked
//!   against the secret of `tests/fixtures/tokens.json`;
//! - 1: clock, then the claims (any bytes), signed HS256 with that secret
//!   under a standard header, so the claim checks behind the signature are
//!   reached;
//! - 2: clock, then the header (any bytes), with standard claims, signed;
//! - 3: user id (i64), ttl in seconds (u64), a clock offset (i64), then the
//!   secret (UTF-8, lossy): the mint/validate round trip.
//!
//! The fuzz target `fuzz/fuzz_targets/token_validate.rs` calls [`check`] on every
//! input; `tests/herald/fuzz_corpus.rs` calls it on every committed seed
//! and past crash, in the ordinary test build.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald::tokens::{AccessToken, TokenError, mint, validate_at};
use jsonwebtoken::{Algorithm, EncodingKey};
use secrecy::SecretString;
use serde_json::Value;

/// tokens.json's `secret_key`.
const SECRET: &str = "golden-vectors-secret-not-for-any-deployment-0123456789";
const HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT"}"#;
const CLAIMS: &[u8] =
    br#"{"token_type":"access","exp":2111388372,"iat":1796028372,"jti":"j","user_id":"42"}"#;

fn take<const N: usize>(data: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = data.split_first_chunk::<N>()?;
    *data = rest;
    Some(*head)
}

/// `header.claims.signature`, signed HS256 with `secret`.
fn signed(header: &[u8], claims: &[u8], secret: &str) -> String {
    let unsigned = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(secret.as_bytes());
    let signature = jsonwebtoken::crypto::sign(unsigned.as_bytes(), &key, Algorithm::HS256)
        .expect("HS256 signs with any key");
    format!("{unsigned}.{signature}")
}

/// What any accepted token must satisfy.
fn check_accepted(result: &Result<AccessToken, TokenError>, now: i64) {
    if let Ok(token) = result {
        assert!(
            token.exp > now,
            "accepted at {now} but exp is {}",
            token.exp
        );
        assert!(token.user_id >= 0, "accepted user id {}", token.user_id);
    }
    if let Err(error) = result {
        let _ = (error.to_string(), error.code());
    }
}

/// The minted token's `iat` and `exp`, read without checking.
fn times(token: &str) -> (i64, i64) {
    let claims = token.split('.').nth(1).expect("three parts");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).expect("base64")).expect("JSON");
    (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    )
}

fn round_trip(mut data: &[u8]) {
    let (Some(user), Some(ttl), Some(offset)) = (
        take::<8>(&mut data),
        take::<8>(&mut data),
        take::<8>(&mut data),
    ) else {
        return;
    };
    let (user_id, ttl, offset) = (
        i64::from_le_bytes(user),
        u64::from_le_bytes(ttl),
        i64::from_le_bytes(offset),
    );
    let text = String::from_utf8_lossy(data).into_owned();
    let secret = SecretString::from(text.clone());
    let token = match mint(&secret, user_id, Duration::from_secs(ttl)) {
        Ok(token) => token,
        Err(TokenError::Signing(_)) if ttl > i64::MAX as u64 => return,
        Err(error) => panic!("mint failed for user {user_id}, ttl {ttl}: {error}"),
    };
    let (iat, exp) = times(&token);
    assert_eq!(exp, iat.saturating_add(ttl as i64));
    let at = |now| validate_at(&secret, &token, now);
    if ttl == 0 {
        assert_eq!(at(iat), Err(TokenError::Expired));
        return;
    }
    if user_id < 0 {
        // Not a user id simplejwt would write; refused when read back.
        assert_eq!(at(iat), Err(TokenError::MalformedUserId));
        return;
    }
    assert_eq!(at(iat), Ok(AccessToken { user_id, exp }));
    assert_eq!(at(exp.saturating_sub(1)), Ok(AccessToken { user_id, exp }));
    if exp < i64::MAX {
        assert_eq!(at(exp), Err(TokenError::Expired));
    }
    let now = iat.saturating_add(offset);
    let expected = if now < exp {
        Ok(AccessToken { user_id, exp })
    } else {
        Err(TokenError::Expired)
    };
    assert_eq!(at(now), expected, "at {now}");
    let other = SecretString::from(format!("{text}x"));
    assert_eq!(
        validate_at(&other, &token, iat),
        Err(TokenError::BadSignature)
    );
}

/// The property, on one input: panics when it does not hold.
pub(crate) fn check(data: &[u8]) {
    let Some((&mode, mut data)) = data.split_first() else {
        return;
    };
    if mode & 3 == 3 {
        return round_trip(data);
    }
    let Some(clock) = take::<8>(&mut data) else {
        return;
    };
    let now = i64::from_le_bytes(clock);
    let secret = SecretString::from(SECRET);
    let token = match mode & 3 {
        0 => String::from_utf8_lossy(data).into_owned(),
        1 => signed(HEADER, data, SECRET),
        _ => signed(data, CLAIMS, SECRET),
    };
    check_accepted(&validate_at(&secret, &token, now), now);
}
