//! The fuzz targets' checks as ordinary tests: every committed seed
//! (`fuzz/corpus/<target>/`) and every past crash
//! (`fuzz/regressions/<target>/`) goes through the same `check` function
//! that the cargo-fuzz target calls (`fuzz/checks/<target>.rs`), in the
//! normal test build, without the sanitizer build of `scripts/fuzz`. A
//! failing input is named by its path.

use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

#[path = "../../fuzz/checks/client_message.rs"]
mod client_message;
#[path = "../../fuzz/checks/codec_decode.rs"]
mod codec_decode;
#[path = "../../fuzz/checks/job_payload.rs"]
mod job_payload;
#[path = "../../fuzz/checks/token_validate.rs"]
mod token_validate;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every file under `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`.
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Runs `check` on every input of `target`; fails naming each input whose
/// check panicked. A target with fewer than `at_least` seeds fails too, so
/// an emptied or moved corpus is not a silent pass.
fn replay(target: &str, at_least: usize, check: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(
        inputs.len() >= at_least,
        "{target}: {} inputs, expected at least {at_least}",
        inputs.len()
    );
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: the check failed on {failed:?}"
    );
}

#[test]
fn client_message_seeds_and_crashes() {
    replay("client_message", 20, client_message::check);
}

#[test]
fn codec_decode_seeds_and_crashes() {
    replay("codec_decode", 20, codec_decode::check);
}

#[test]
fn job_payload_seeds_and_crashes() {
    replay("job_payload", 20, job_payload::check);
}

#[test]
fn token_validate_seeds_and_crashes() {
    replay("token_validate", 20, token_validate::check);
}

/// Each cargo-fuzz target is one of the four above and calls its check,
/// so a target added without a replay here fails.
#[test]
fn every_fuzz_target_is_replayed() {
    let mut targets: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "client_message.rs",
            "codec_decode.rs",
            "job_payload.rs",
            "token_validate.rs"
        ]
    );
    for target in &targets {
        let name = target.trim_end_matches(".rs");
        let text = std::fs::read_to_string(fuzz_dir().join("fuzz_targets").join(target)).unwrap();
        assert!(
            text.contains(&format!("#[path = \"../checks/{name}.rs\"]"))
                && text.contains("checks::check(data)"),
            "{target} does not call fuzz/checks/{name}.rs"
        );
    }
}
