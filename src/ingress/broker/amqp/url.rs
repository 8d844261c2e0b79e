//! kombu's AMQP URLs, as `Connection('amqp://...')` reads them: the schemes
//! `amqp`, `amqps` and `pyamqp` (py-amqp's name for plain AMQP), the user
//! and password (`guest`/`guest` when absent), port 5672 (5671 for amqps),
//! and the virtual host from the path after its first `/`, percent-decoded:
//! `//` and an empty path both mean `/`.

use lapin::uri::{AMQPScheme, AMQPUri};

/// Why a broker URL cannot be used; never repeats the URL (it may hold a
/// password).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(pub &'static str);

/// Whether `url` names an AMQP broker (by its scheme).
pub fn is_amqp(url: &str) -> bool {
    scheme_and_rest(url).is_some()
}

fn scheme_and_rest(url: &str) -> Option<(AMQPScheme, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    match scheme.to_ascii_lowercase().as_str() {
        "amqp" | "pyamqp" => Some((AMQPScheme::AMQP, rest)),
        "amqps" => Some((AMQPScheme::AMQPS, rest)),
        _ => None,
    }
}

/// The connection `url` names, as kombu would make it.
pub fn parse(url: &str) -> Result<AMQPUri, BadUrl> {
    let (scheme, rest) = scheme_and_rest(url.trim())
        .ok_or(BadUrl("expected an amqp://, amqps:// or pyamqp:// URL"))?;
    // lapin's own parser takes the authority and the query; the vhost is
    // read here, since lapin maps an empty path to "" where kombu means "/".
    let (before_query, _) = rest.split_once('?').unwrap_or((rest, ""));
    let path = before_query
        .find('/')
        .map_or("", |at| &before_query[at + 1..]);
    let scheme_name = if scheme == AMQPScheme::AMQPS {
        "amqps"
    } else {
        "amqp"
    };
    let mut uri: AMQPUri = format!("{scheme_name}://{rest}")
        .parse()
        .map_err(|_| BadUrl("not a valid AMQP URL (amqp://USER:PASSWORD@HOST:PORT/VHOST)"))?;
    let vhost = percent_decode(path).ok_or(BadUrl(
        "the virtual host is not valid percent-encoded UTF-8",
    ))?;
    uri.vhost = if vhost.is_empty() {
        "/".to_string()
    } else {
        vhost
    };
    Ok(uri)
}

/// `%XX` escapes undone, as Python's `unquote`.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            // Python leaves a `%` that starts no escape as it is.
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vhost_is_read_as_kombu_reads_it() {
        let vhost = |url| parse(url).unwrap().vhost;
        assert_eq!(vhost("amqp://guest:guest@localhost:5672//"), "/");
        assert_eq!(vhost("amqp://guest:guest@localhost:5672/"), "/");
        assert_eq!(vhost("amqp://localhost"), "/");
        assert_eq!(vhost("amqp://localhost/%2F"), "/");
        assert_eq!(vhost("pyamqp://u:p@rabbit:5673/herald"), "herald");
        assert_eq!(vhost("amqp://h/a%2Fb?heartbeat=10"), "a/b");
    }

    #[test]
    fn host_port_user_and_scheme_come_through() {
        let uri = parse("pyamqp://app:s%40cret@rabbit:5673/v").unwrap();
        assert_eq!(uri.scheme, AMQPScheme::AMQP);
        assert_eq!(uri.authority.host, "rabbit");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.authority.userinfo.username, "app");
        assert_eq!(uri.authority.userinfo.password, "s@cret");
        let uri = parse("amqps://rabbit").unwrap();
        assert_eq!((uri.scheme, uri.authority.port), (AMQPScheme::AMQPS, 5671));
        let uri = parse("amqp://localhost").unwrap();
        assert_eq!(uri.authority.userinfo.username, "guest");
    }

    #[test]
    fn other_schemes_and_bad_escapes_are_refused_without_the_url() {
        assert!(!is_amqp("redis://localhost:6379/0"));
        assert!(is_amqp("AMQP://localhost"));
        let error = parse("sqs://key:s3cret@x").unwrap_err();
        assert!(!error.to_string().contains("s3cret"));
        assert!(parse("amqp://h/%ff").is_err());
        assert!(parse("amqp://h:notaport/").is_err());
    }
}
