//! The bytes of a layer message in Redis, as channels_redis's msgpack
//! serializer writes them: an optional random prefix, then msgpack of the
//! message map (named keys, strings as str, floats as float64), optionally
//! wrapped in a Fernet token (its base64 text) made with the first of the
//! `symmetric_encryption_keys`.
//!
//! Pure functions over bytes: no Redis here.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use fernet::Fernet;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::layer::{LayerError, Message};

/// Random bytes in front of each queued message, so equal messages stay
/// distinct members of the sorted set.
pub const RANDOM_PREFIX_LENGTH: usize = 12;

/// Encodes and decodes layer messages for one layer configuration.
#[derive(Clone)]
pub struct Codec {
    random_prefix: usize,
    /// First key encrypts; all are tried to decrypt.
    fernets: Vec<Fernet>,
    /// Seconds a Fernet token stays acceptable (`expiry + 10`), or no limit.
    token_ttl: Option<u64>,
}

impl Codec {
    /// The sorted-set layer's codec: 12-byte prefix, tokens valid
    /// `expiry + 10` seconds.
    pub fn for_queues(keys: &[SecretString], expiry: u64) -> Self {
        Self::new(RANDOM_PREFIX_LENGTH, keys, Some(expiry + 10))
    }

    /// The pub/sub layer's codec: no prefix, no token age limit.
    pub fn for_pubsub(keys: &[SecretString]) -> Self {
        Self::new(0, keys, None)
    }

    fn new(random_prefix: usize, keys: &[SecretString], token_ttl: Option<u64>) -> Self {
        Self {
            random_prefix,
            fernets: keys.iter().map(fernet_for).collect(),
            token_ttl,
        }
    }

    pub fn encode(&self, message: &Message) -> Result<Vec<u8>, LayerError> {
        let packed = rmp_serde::to_vec_named(message)
            .map_err(|e| LayerError::InvalidMessage(e.to_string()))?;
        let body = match self.fernets.first() {
            Some(fernet) => fernet.encrypt(&packed).into_bytes(),
            None => packed,
        };
        let mut out = vec![0u8; self.random_prefix];
        rand::rng().fill_bytes(&mut out);
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Message, LayerError> {
        let body = bytes
            .get(self.random_prefix..)
            .ok_or_else(|| LayerError::InvalidMessage("shorter than its random prefix".into()))?;
        let plain;
        let packed = if self.fernets.is_empty() {
            body
        } else {
            plain = self.decrypt(body)?;
            &plain
        };
        match rmp_serde::from_slice::<Value>(packed) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(LayerError::InvalidMessage("not a map".into())),
            Err(e) => Err(LayerError::InvalidMessage(e.to_string())),
        }
    }

    fn decrypt(&self, token: &[u8]) -> Result<Vec<u8>, LayerError> {
        let token = std::str::from_utf8(token)
            .map_err(|_| LayerError::InvalidMessage("encrypted message is not a token".into()))?;
        self.fernets
            .iter()
            .find_map(|fernet| match self.token_ttl {
                Some(ttl) => fernet.decrypt_with_ttl(token, ttl).ok(),
                None => fernet.decrypt(token).ok(),
            })
            .ok_or_else(|| {
                LayerError::InvalidMessage("no key decrypts it, or it is too old".into())
            })
    }
}

/// channels_redis's `make_fernet`: key = urlsafe-base64(sha256(utf-8 key)).
fn fernet_for(key: &SecretString) -> Fernet {
    let digest = Sha256::digest(key.expose_secret().as_bytes());
    Fernet::new(&URL_SAFE.encode(digest))
        .expect("a 32-byte urlsafe-base64 key is a valid Fernet key")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Herald writes exactly the bytes Python's msgpack writes, after the
    /// 12 random bytes, for every vector; and reads them back.
    #[test]
    fn msgpack_matches_channels_redis_byte_for_byte() {
        let codec = Codec::for_queues(&[], 60);
        for vector in vectors("msgpack_vectors.json")["vectors"]
            .as_array()
            .unwrap()
        {
            let name = vector["name"].as_str().unwrap();
            let message = vector["message"].as_object().unwrap().clone();
            let encoded = codec.encode(&message).unwrap();
            assert_eq!(
                encoded.len() - RANDOM_PREFIX_LENGTH,
                vector["msgpack_hex"].as_str().unwrap().len() / 2
            );
            assert_eq!(
                hex(&encoded[RANDOM_PREFIX_LENGTH..]),
                vector["msgpack_hex"].as_str().unwrap(),
                "{name}"
            );
            let mut python = vec![7u8; RANDOM_PREFIX_LENGTH];
            python.extend(unhex(vector["msgpack_hex"].as_str().unwrap()));
            assert_eq!(codec.decode(&python).unwrap(), message, "{name}");
        }
    }

    #[test]
    fn decrypts_channels_redis_members_with_either_key() {
        let doc = vectors("fernet_vectors.json");
        let keys: Vec<SecretString> = doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| SecretString::from(k.as_str().unwrap()))
            .collect();
        // The vectors are older than any ttl: decode without the age check.
        let codec = Codec::new(RANDOM_PREFIX_LENGTH, &keys, None);
        let second_only = Codec::new(RANDOM_PREFIX_LENGTH, &keys[1..], None);
        for vector in doc["vectors"].as_array().unwrap() {
            let member = unhex(vector["member_hex"].as_str().unwrap());
            let plain = unhex(vector["plain_msgpack_hex"].as_str().unwrap());
            let expected: Value = rmp_serde::from_slice(&plain).unwrap();
            assert_eq!(Value::Object(codec.decode(&member).unwrap()), expected);
            assert!(
                second_only.decode(&member).is_err(),
                "the first key encrypted it"
            );
        }
        let derived = fernet_for(&keys[0]);
        let check = Fernet::new(doc["fernet_keys"][0].as_str().unwrap()).unwrap();
        let token = derived.encrypt(b"x");
        assert_eq!(check.decrypt(&token).unwrap(), b"x");
    }

    #[test]
    fn encrypted_round_trip_and_ttl() {
        let keys = [SecretString::from("k1"), SecretString::from("k2")];
        let codec = Codec::for_queues(&keys, 60);
        let message = serde_json::json!({"type": "t", "n": 1})
            .as_object()
            .unwrap()
            .clone();
        let bytes = codec.encode(&message).unwrap();
        assert!(bytes[RANDOM_PREFIX_LENGTH..].starts_with(b"gAAAAA"));
        assert_eq!(codec.decode(&bytes).unwrap(), message);
        let rotated = Codec::for_queues(&[SecretString::from("new"), SecretString::from("k1")], 60);
        assert_eq!(
            rotated.decode(&bytes).unwrap(),
            message,
            "old key still decrypts"
        );
        let other = Codec::for_queues(&[SecretString::from("zzz")], 60);
        assert!(other.decode(&bytes).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let codec = Codec::for_queues(&[], 60);
        assert!(codec.decode(b"short").is_err());
        assert!(codec.decode(&[0u8; 12]).is_err());
        assert!(
            codec
                .decode(&[[0u8; 12].as_slice(), &[0x91, 0x01]].concat())
                .is_err(),
            "a list is not a message"
        );
        let with_bin = [[0u8; 12].as_slice(), &[0x81, 0xa1, b'b', 0xc4, 0x01, 0x00]].concat();
        assert!(
            codec.decode(&with_bin).is_err(),
            "bytes values have no JSON form"
        );
    }

    #[test]
    fn prefixes_differ() {
        let codec = Codec::for_queues(&[], 60);
        let message = serde_json::json!({"type": "t"})
            .as_object()
            .unwrap()
            .clone();
        assert_ne!(
            codec.encode(&message).unwrap(),
            codec.encode(&message).unwrap()
        );
        assert_eq!(
            Codec::for_pubsub(&[]).encode(&message).unwrap(),
            rmp_serde::to_vec_named(&message).unwrap()
        );
    }
}
