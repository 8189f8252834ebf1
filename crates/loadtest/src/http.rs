//! A keep-alive HTTP/1.1 connection per worker, and the target it talks to.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::stats::Recorder;

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the server is: one resolved address, the `Host` header, and the path prefix; and,
/// when several servers of one deployment are loaded, all of their addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub prefix: String,
    /// Every server's address, `addr` among them.
    pub servers: Vec<SocketAddr>,
}

impl Target {
    /// Parses `http://host:port[/prefix]`, or several such URLs separated by commas (servers of
    /// one deployment, which then share the load), and resolves them. Anything but a loopback
    /// address is refused unless `allow_remote`: a load test is not to be pointed at someone
    /// else.
    pub async fn resolve(base_url: &str, allow_remote: bool) -> anyhow::Result<Self> {
        let mut urls = base_url.split(',').map(str::trim);
        let mut target = Self::resolve_one(urls.next().unwrap_or_default(), allow_remote).await?;
        for url in urls {
            let other = Self::resolve_one(url, allow_remote).await?;
            anyhow::ensure!(
                other.prefix == target.prefix,
                "every --base-url must have the same path ({} and {})",
                target.prefix,
                other.prefix
            );
            target.servers.push(other.addr);
        }
        Ok(target)
    }

    /// The target of client number `n`: the servers taken in turn.
    pub fn spread(&self, n: usize) -> Target {
        Target {
            addr: self.servers[n % self.servers.len()],
            ..self.clone()
        }
    }

    async fn resolve_one(base_url: &str, allow_remote: bool) -> anyhow::Result<Self> {
        let rest = base_url.strip_prefix("http://").ok_or_else(|| {
            anyhow::anyhow!("--base-url must start with http:// (got {base_url})")
        })?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&with_port).await?.collect();
        let addr = *addrs
            .first()
            .ok_or_else(|| anyhow::anyhow!("{authority} resolves to no address"))?;
        if !allow_remote && !addrs.iter().all(|a| a.ip().is_loopback()) {
            anyhow::bail!(
                "{authority} is not a loopback address; pass --allow-remote to load a server \
                 that is not on this machine"
            );
        }
        Ok(Self {
            addr,
            host: authority.to_owned(),
            prefix: prefix.to_owned(),
            servers: vec![addr],
        })
    }
}

/// A credential, sent as `Authorization: Bearer`.
pub type Credential<'a> = Option<&'a str>;

/// One connection, reopened after an error.
pub struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("target", &self.target)
            .finish()
    }
}

/// What came back: the status and the body, when the request got an answer at all.
pub type Answer = Option<(u16, Bytes)>;

impl Conn {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    async fn open(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.target.addr).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = connection.await; // ends when the sender is dropped or the peer closes
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just opened"))
    }

    /// Sends one request and records it under `endpoint`: its latency and status, or an error
    /// when the connection failed or the request timed out (never a slow success).
    pub async fn call(
        &mut self,
        recorder: &mut Recorder,
        endpoint: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        credential: Credential<'_>,
    ) -> Answer {
        let started = Instant::now();
        let answer =
            tokio::time::timeout(REQUEST_TIMEOUT, self.send(method, path, body, credential)).await;
        match answer {
            Ok(Ok((status, bytes))) => {
                recorder.record(endpoint, status, started.elapsed());
                Some((status, bytes))
            }
            Ok(Err(_)) | Err(_) => {
                self.sender = None;
                recorder.error(endpoint);
                None
            }
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        credential: Credential<'_>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let uri = format!("{}{path}", self.target.prefix);
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, &self.target.host);
        if let Some(token) = credential {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(value) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(serde_json::to_vec(value)?))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body)?;
        let sender = self.open().await?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}
