//! `herald health`: the client side of `/healthz` and `/readyz`, for a
//! container's HEALTHCHECK (the slim image has no curl) or a shell script.
//! One HTTP/1.1 GET over a plain TCP connection, bounded by a timeout; the
//! answer is one line that says what was found.
//!
//! A listen address on every interface (`0.0.0.0`, `[::]`) is probed on
//! the loopback address of its family: that is where the process answers
//! its own host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of an answer that is read: a health answer is a line or two.
const MAX_ANSWER: u64 = 16 * 1024;

/// Why a probe did not find the process healthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{setting} is {value:?}, not an address such as 127.0.0.1:8001")]
    BadAddress { setting: String, value: String },
    #[error("nothing answers on {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} did not answer {path} within {timeout:?}")]
    Timeout {
        addr: SocketAddr,
        path: String,
        timeout: Duration,
    },
    #[error("{addr}: the connection failed while reading {path}: {source}")]
    Io {
        addr: SocketAddr,
        path: String,
        source: std::io::Error,
    },
    #[error("{addr} answered {path} with something that is not HTTP")]
    NotHttp { addr: SocketAddr, path: String },
    #[error("{addr}{path} answered {status}: {reason}")]
    Unhealthy {
        addr: SocketAddr,
        path: String,
        status: u16,
        reason: String,
    },
}

/// The address to probe for a listen setting: its own, or loopback in place
/// of an unspecified address. `setting` names it in the error.
pub fn probe_address(setting: &str, listen: &str) -> Result<SocketAddr, ProbeError> {
    let bad = || ProbeError::BadAddress {
        setting: setting.to_string(),
        value: listen.to_string(),
    };
    let mut addr: SocketAddr = listen.trim().parse().map_err(|_| bad())?;
    if addr.port() == 0 {
        return Err(bad());
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// GETs `path` on `addr`. A 2xx answer is the first line of its body;
/// anything else is an error saying why, with the body's first line (the
/// `/readyz` answer names what is not ready).
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, ProbeError> {
    match tokio::time::timeout(timeout, get(addr, path)).await {
        Ok(answer) => answer,
        Err(_) => Err(ProbeError::Timeout {
            addr,
            path: path.to_string(),
            timeout,
        }),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Result<String, ProbeError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let io = |source| ProbeError::Io {
        addr,
        path: path.to_string(),
        source,
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(io)?;
    let (status, body) = parse(&answer).ok_or_else(|| ProbeError::NotHttp {
        addr,
        path: path.to_string(),
    })?;
    let line = body.lines().map(str::trim).find(|l| !l.is_empty());
    if (200..300).contains(&status) {
        Ok(format!("{addr}{path}: {}", line.unwrap_or("ok")))
    } else {
        Err(ProbeError::Unhealthy {
            addr,
            path: path.to_string(),
            status,
            reason: line
                .unwrap_or("no reason given")
                .chars()
                .take(200)
                .collect(),
        })
    }
}

/// The status code and the body (de-chunked when chunked) of an answer.
fn parse(answer: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut status_line = head.lines().next()?.split_whitespace();
    if !status_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = status_line.next()?.parse().ok()?;
    let chunked = head.lines().any(|header| {
        let header = header.to_ascii_lowercase();
        header.starts_with("transfer-encoding:") && header.contains("chunked")
    });
    let body = if chunked {
        // Size lines and chunks alternate; keep the chunks.
        body.split("\r\n")
            .collect::<Vec<_>>()
            .chunks(2)
            .filter_map(|pair| pair.get(1).copied())
            .collect::<Vec<_>>()
            .join("")
    } else {
        body.to_string()
    };
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_probed_on_loopback() {
        let v4 = probe_address("sidecar.listen", "0.0.0.0:8001").unwrap();
        assert_eq!(v4, "127.0.0.1:8001".parse().unwrap());
        let v6 = probe_address("sidecar.listen", "[::]:8001").unwrap();
        assert_eq!(v6, "[::1]:8001".parse().unwrap());
        let own = probe_address("sidecar.listen", "10.1.2.3:9000").unwrap();
        assert_eq!(own, "10.1.2.3:9000".parse().unwrap());
    }

    #[test]
    fn a_bad_address_names_its_setting() {
        for value in ["", "localhost", "127.0.0.1", "127.0.0.1:0", "1.2.3.4:99999"] {
            let error = probe_address("worker.listen", value).unwrap_err();
            assert!(
                error.to_string().starts_with("worker.listen is "),
                "{error}"
            );
        }
    }

    #[test]
    fn answers_are_read_whole_or_chunked() {
        let plain = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 23\r\n\r\ndatabase: unavailable\n";
        assert_eq!(
            parse(plain),
            Some((503, "database: unavailable\n".to_string()))
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nready\n\r\n0\r\n\r\n";
        assert_eq!(parse(chunked), Some((200, "ready\n".to_string())));
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
