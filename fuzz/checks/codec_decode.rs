//! The channel layer codec (`herald::layer::redis::codec`) on bytes as they
//! could sit in Redis: decoding never panics, with or without Fernet keys;
//! a decoded message goes through the sidecar's `from_layer` without a
//! panic; and every map that decodes comes back equal from
//! `decode(encode(map))` with each codec (prefix or not, keys or not).
//!
//! Input: one mode byte, then the bytes to decode. Mode bit 0: the queue
//! codec (12-byte random prefix, `expiry + 10` token age limit) instead of
//! the pub/sub one (no prefix, no age limit); bit 1: with the two keys of
//! `tests/fixtures/fernet_vectors.json` (the first encrypts, both decrypt).
//!
//! The fuzz target `fuzz/fuzz_targets/codec_decode.rs` calls [`check`] on every
//! input; `tests/herald/fuzz_corpus.rs` calls it on every committed seed
//! and past crash, in the ordinary test build.

use std::sync::LazyLock;

use herald::layer::redis::codec::Codec;
use secrecy::SecretString;

/// The keys of the fixture vectors, so the seeded members decrypt.
fn keys() -> Vec<SecretString> {
    ["first-peers-key", "second-peers-key"]
        .into_iter()
        .map(SecretString::from)
        .collect()
}

/// Indexed by the mode's two low bits.
static CODECS: LazyLock<[Codec; 4]> = LazyLock::new(|| {
    [
        Codec::for_pubsub(&[]),
        Codec::for_queues(&[], 60),
        Codec::for_pubsub(&keys()),
        Codec::for_queues(&keys(), 60),
    ]
});

/// The property, on one input: panics when it does not hold.
pub(crate) fn check(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let Ok(message) = CODECS[usize::from(mode & 3)].decode(bytes) else {
        return;
    };
    let _ = herald::sidecar::protocol::from_layer(&message);
    for codec in CODECS.iter() {
        let Ok(encoded) = codec.encode(&message) else {
            continue;
        };
        let decoded = codec
            .decode(&encoded)
            .expect("an encoded message decodes with the codec that encoded it");
        assert_eq!(decoded, message, "decode(encode(x)) == x");
    }
}
