//! `agent-platform probe [PATH]`: the binary's own health probe, for container engines that
//! run a command to check a container (the image has no HTTP client). It asks the server
//! running beside it, on this host at `PORT`, for `PATH` (default `/livez`) and exits 0 on a
//! `200`, 1 on anything else or no answer within two seconds.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;

/// How long the probe waits in all, connecting, asking and reading together.
const WITHIN: Duration = Duration::from_secs(2);

/// Runs the probe: whether the server answered `200`.
pub fn run(config: &Config, path: Option<&str>) -> bool {
    let path = path.unwrap_or("/livez");
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        eprintln!("agent-platform probe: the path must start with '/' and have no spaces");
        return false;
    }
    // A server listening on every address is reached on loopback.
    let host = if config.host.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        config.host
    };
    match ask(SocketAddr::new(host, config.port), path) {
        Ok(200) => true,
        Ok(status) => {
            eprintln!("agent-platform probe: {path} answered {status}");
            false
        }
        Err(e) => {
            eprintln!("agent-platform probe: {path}: {e}");
            false
        }
    }
}

/// The status code the server answers `GET path` with.
fn ask(address: SocketAddr, path: &str) -> std::io::Result<u16> {
    let deadline = std::time::Instant::now() + WITHIN;
    let left = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))
    };
    let mut stream = TcpStream::connect_timeout(&address, left()?)?;
    stream.set_write_timeout(Some(left()?))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut head[read..])? {
            0 => break,
            n => read += n,
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    line.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {line:?}")))
}
