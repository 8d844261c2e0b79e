//! The signing secret herald generates when no SECRET_KEY is configured:
//! 50 characters in `<data_dir>/secret_key`, created with mode 0600 and
//! refused when others can read it.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::Rng;
use secrecy::SecretString;

use super::ConfigError;

/// File inside `data_dir` that keeps the generated secret key.
const SECRET_FILE: &str = "secret_key";

/// The secret kept in `data_dir`, generated on first use.
pub(super) fn load_or_create(data_dir: &Path) -> Result<SecretString, ConfigError> {
    load_or_create_secret(&data_dir.join(SECRET_FILE))
}

fn load_or_create_secret(path: &Path) -> Result<SecretString, ConfigError> {
    let key = path.display().to_string();
    let fail = |e: std::io::Error| ConfigError::new(&key, e.to_string());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let new_file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match new_file {
        Ok(mut file) => {
            let secret = generate_secret();
            file.write_all(secret.as_bytes()).map_err(fail)?;
            file.sync_all().map_err(fail)?;
            Ok(SecretString::from(secret))
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read_secret(path, &key),
        Err(e) => Err(fail(e)),
    }
}

fn read_secret(path: &Path, key: &str) -> Result<SecretString, ConfigError> {
    let fail = |e: std::io::Error| ConfigError::new(key, e.to_string());
    let mut file = std::fs::File::open(path).map_err(fail)?;
    let mode = file.metadata().map_err(fail)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::new(
            key,
            format!("permissions {mode:04o} are too open; run chmod 600 on it"),
        ));
    }
    let mut secret = String::new();
    file.read_to_string(&mut secret).map_err(fail)?;
    let secret = secret.trim().to_string();
    if secret.is_empty() {
        return Err(ConfigError::new(key, "the secret key file is empty"));
    }
    Ok(SecretString::from(secret))
}

/// 50 characters from Django's `get_random_secret_key` alphabet, from the OS RNG.
fn generate_secret() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*(-_=+)";
    let mut rng = rand::rng();
    (0..50)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn generated_secret_is_kept_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join(SECRET_FILE);
        let first = load_or_create_secret(&path).unwrap();
        let second = load_or_create_secret(&path).unwrap();
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert_eq!(first.expose_secret().len(), 50);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn secret_file_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE);
        std::fs::write(&path, "abc").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_secret(&path).unwrap_err();
        assert!(err.reason.contains("too open"), "{err}");
    }

    #[test]
    fn two_generated_secrets_differ() {
        assert_ne!(generate_secret(), generate_secret());
    }
}
