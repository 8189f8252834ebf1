//! Requests to the replicas as a client sees them: one connection each, counted by outcome,
//! routed to the replicas in rotation and moved on from one that does not answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::servers::Routes;

/// How requests went: what a client without a load balancer's retries would have seen.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    /// Connections refused (a replica that is not listening: a load balancer routes elsewhere).
    pub(crate) refused: usize,
    /// Requests sent that got no whole answer (the replica died under them).
    pub(crate) broken: usize,
    /// Answers by status.
    pub(crate) statuses: BTreeMap<u16, usize>,
    /// Answers to writes (every method but `GET`) by status.
    pub(crate) writes: BTreeMap<u16, usize>,
}

impl Tally {
    /// Answers that are errors of the server other than a retryable `503`.
    pub(crate) fn failed(&self) -> usize {
        self.statuses
            .iter()
            .filter(|(status, _)| **status >= 500 && **status != 503)
            .map(|(_, n)| n)
            .sum()
    }
}

/// One request over a connection of its own: the status and JSON body, or an error when the
/// replica did not answer (refused, reset, or no answer within 10 s), counted in `tally`.
pub(crate) async fn tallied(
    tally: &Mutex<Tally>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        tally.lock().unwrap().refused += 1;
        return Err(std::io::Error::other("refused"));
    };
    let answer = exchange(stream, method, path, key, headers, body).await;
    let mut tally = tally.lock().unwrap();
    match &answer {
        Ok((status, _)) => {
            *tally.statuses.entry(*status).or_default() += 1;
            if method != "GET" {
                *tally.writes.entry(*status).or_default() += 1;
            }
        }
        Err(_) => tally.broken += 1,
    }
    answer
}

pub(crate) async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    tallied(&Mutex::default(), addr, method, path, key, headers, body).await
}

pub(crate) async fn exchange(
    mut stream: tokio::net::TcpStream,
    method: &str,
    path: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let exchange = async {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no answer: {text:?}")))?;
        let json = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        Ok((status, json))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("no answer within 10 s")))
}

/// The replicas clients use, as routed, and how their requests went.
#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) routes: Routes,
    pub(crate) tally: Arc<Mutex<Tally>>,
    /// Told of every answer counted in `tally`, and of every completion an agent or the
    /// subscriber records.
    pub(crate) progress: Arc<Notify>,
}

impl Clients {
    /// The replica `at` routes to: the first in rotation from `at` on.
    pub(crate) fn route(&self, at: usize) -> SocketAddr {
        let routes = self.routes.lock().unwrap();
        (0..routes.len())
            .find_map(|k| routes[(at + k) % routes.len()])
            .expect("a replica in rotation")
    }

    pub(crate) async fn call(
        &self,
        at: usize,
        method: &str,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        let answer = tallied(
            &self.tally,
            self.route(at),
            method,
            path,
            key,
            headers,
            body,
        )
        .await;
        self.progress.notify_waiters();
        answer
    }

    /// `call`, moving on to the next replica while one does not answer or answers `503`
    /// (what a load balancer and a retrying client do together), for up to 30 s.
    pub(crate) async fn retried(
        &self,
        at: usize,
        method: &str,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> (u16, Value) {
        let started = Instant::now();
        for turn in 0.. {
            match self.call(at + turn, method, path, key, headers, body).await {
                Ok((503, _)) | Err(_) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "no replica answered {method} {path} within 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(answer) => return answer,
            }
        }
        unreachable!()
    }
}
