//! A WebSocket client's text message (`herald::sidecar::protocol::decode`):
//! never panics; an accepted message is the variant its `type` names; a
//! refused one has a reason whose text can be built, with an unknown type
//! shown in at most 40 characters.
//!
//! Input: the message text (invalid UTF-8 is replaced, as a text frame
//! cannot carry it).
//!
//! The fuzz target `fuzz/fuzz_targets/client_message.rs` calls [`check`] on every
//! input; `tests/herald/fuzz_corpus.rs` calls it on every committed seed
//! and past crash, in the ordinary test build.

use herald::sidecar::protocol::{ClientMessage, DecodeError, decode};

/// The property, on one input: panics when it does not hold.
pub(crate) fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match decode(&text) {
        Ok(message) => {
            let value: serde_json::Value =
                serde_json::from_str(&text).expect("an accepted message is JSON");
            let kind = value["type"].as_str().expect("with a string type");
            let named = match message {
                ClientMessage::Ping => "ping",
                ClientMessage::Resume { .. } => "resume",
                ClientMessage::Refresh { .. } => "refresh",
                ClientMessage::MarkRead { .. } => "mark_read",
                ClientMessage::MarkAllRead => "mark_all_read",
            };
            assert_eq!(kind, named);
        }
        Err(error) => {
            if let DecodeError::UnknownType(shown) = &error {
                assert!(shown.chars().count() <= 40, "{shown:?}");
            }
            let _ = error.to_string();
        }
    }
}
