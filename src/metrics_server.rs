//! A small HTTP/1.1 server for `--metrics-addr`, on hyper: `GET /metrics`
//! serves the last exposition [`MetricsServer::publish`]ed, `GET /` a pointer
//! to it, anything else 404.
//!
//! The server owns a current-thread tokio runtime on a thread of its own. Its
//! callers are sync (`watch` on local processes) and async (`watch` in a
//! cluster): a runtime of its own serves both the same way, and the server
//! never waits on, nor is stalled by, the work of the caller's runtime.
//!
//! At most [`MAX_CONNECTIONS`] connections are answered at once (past that a
//! connection is answered 503 and closed); a client has [`READ_TIMEOUT`] to
//! send its request head and then [`WRITE_TIMEOUT`] to read the response, so
//! a slow or silent client holds only its own connection, and only for a few
//! seconds. Every response closes its connection. Dropping the server stops
//! accepting and closes the listener (it waits up to a second for the
//! server's thread to do so); connections already being answered finish on
//! that thread, which then ends.
//!
//! The address is `HOST:PORT`; `:PORT` means every interface, as in Go
//! programs. Binding a non-loopback address exposes map types and function
//! names of the traced programs to whoever can reach it.

use anyhow::{anyhow, Result};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinSet;

/// Connections answered at once; more are turned away with 503.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers) read.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// How long a connection past [`MAX_CONNECTIONS`] may take to get its 503:
/// it is answered by the accept loop itself, which must not wait on it.
const TURN_AWAY_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a closed connection is drained, so that what the client sent
/// beyond the request head does not turn into a reset that loses the response.
const LINGER: Duration = Duration::from_millis(500);

const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
const INDEX: &str = "<!doctype html>\n<html><head><title>kubectl-mapguard</title></head>\
                     <body><h1>kubectl-mapguard</h1>\
                     <p><a href=\"/metrics\">/metrics</a></p></body></html>\n";

/// Starts the server when an address is given, and says where on stderr.
pub fn serve(addr: Option<&str>) -> Result<Option<MetricsServer>> {
    let Some(addr) = addr else { return Ok(None) };
    let server = MetricsServer::start(addr)?;
    eprintln!(
        "serving Prometheus metrics at http://{}/metrics",
        server.local_addr()
    );
    Ok(Some(server))
}

pub struct MetricsServer {
    addr: SocketAddr,
    body: Arc<Mutex<Bytes>>,
    stop: Option<oneshot::Sender<()>>,
    /// Told when the listener is closed. In a Mutex so that the server is
    /// Sync, as its callers share it.
    closed: Mutex<mpsc::Receiver<()>>,
}

impl MetricsServer {
    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one) and serves from a
    /// background thread. Until the first [`publish`](Self::publish),
    /// `/metrics` is empty (a valid exposition with no samples).
    pub fn start(addr: &str) -> Result<MetricsServer> {
        // `:9464` means every interface, as Go programs (and so most
        // Prometheus exporters) read it.
        let full = match addr.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => addr.to_string(),
        };
        let addrs: Vec<SocketAddr> = full
            .to_socket_addrs()
            .map_err(|e| {
                anyhow!(
                    "invalid --metrics-addr {addr:?} ({e}): expected HOST:PORT, e.g. \
                     127.0.0.1:9464, or :9464 for every interface"
                )
            })?
            .collect();
        let body = Arc::new(Mutex::new(Bytes::new()));
        let (bound_tx, bound_rx) = mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (closed_tx, closed_rx) = mpsc::sync_channel(1);
        let served = body.clone();
        std::thread::Builder::new()
            .name("metrics-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::bind(&addrs[..]).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = bound_tx.send(Err(e));
                            return;
                        }
                    };
                    match listener.local_addr() {
                        Ok(local) => {
                            let _ = bound_tx.send(Ok(local));
                        }
                        Err(e) => {
                            let _ = bound_tx.send(Err(e));
                            return;
                        }
                    }
                    serve_until(listener, served, stop_rx, closed_tx).await
                })
            })?;
        let local = bound_rx
            .recv()
            .map_err(|_| anyhow!("cannot listen on {addr}: the server's thread ended"))?
            .map_err(|e| {
                let what = match e.kind() {
                    ErrorKind::AddrInUse => format!("address {addr} in use"),
                    ErrorKind::PermissionDenied => format!(
                        "not permitted to listen on {addr} (ports below 1024 need privileges)"
                    ),
                    ErrorKind::AddrNotAvailable => {
                        format!("address {addr} is not one of this machine's")
                    }
                    _ => format!("cannot listen on {addr}: {e}"),
                };
                anyhow!("{what}: pick another --metrics-addr")
            })?;
        Ok(MetricsServer {
            addr: local,
            body,
            stop: Some(stop_tx),
            closed: Mutex::new(closed_rx),
        })
    }

    /// Replaces what `GET /metrics` serves.
    pub fn publish(&self, text: String) {
        let text = Bytes::from(text);
        match self.body.lock() {
            Ok(mut body) => *body = text,
            Err(poisoned) => *poisoned.into_inner() = text,
        }
    }

    /// The address bound (with the port chosen, when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // So that the port is free when the server is gone; should the
        // thread not answer, leave it (it ends with the process) rather than
        // block here.
        let closed = match self.closed.get_mut() {
            Ok(rx) => rx,
            Err(poisoned) => poisoned.into_inner(),
        };
        let _ = closed.recv_timeout(Duration::from_secs(1));
    }
}

/// Accepts until told to stop, then closes the listener, says so, and lets
/// the connections being answered finish.
async fn serve_until(
    listener: TcpListener,
    body: Arc<Mutex<Bytes>>,
    mut stop: oneshot::Receiver<()>,
    closed: mpsc::SyncSender<()>,
) {
    let mut answering = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(_) = answering.join_next(), if !answering.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    // e.g. too many open files, or a connection reset before
                    // accept: not the server's end.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if answering.len() >= MAX_CONNECTIONS {
                    turn_away(stream).await;
                } else {
                    answering.spawn(answer(stream, body.clone()));
                }
            }
        }
    }
    drop(listener);
    let _ = closed.send(());
    while answering.join_next().await.is_some() {}
}

fn http1() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_header_size(MAX_REQUEST_HEAD)
        .keep_alive(false)
        .title_case_headers(true)
        // No Date, as ever: a scrape keeps its own time, and the headers
        // stay in the order set.
        .auto_date_header(false);
    b
}

/// Answers one request and closes the connection. Never panics on input:
/// hyper answers what it cannot parse (400, 431 for a head too large).
async fn answer(mut stream: TcpStream, metrics: Arc<Mutex<Bytes>>) {
    let asked = Arc::new(Notify::new());
    let service = {
        let asked = asked.clone();
        service_fn(move |req: Request<Incoming>| {
            asked.notify_one();
            let response = respond(&req, &metrics);
            async move { Ok::<_, Infallible>(response) }
        })
    };
    let conn = http1().serve_connection(TokioIo::new(&mut stream), service);
    // hyper bounds the wait for the head; the response's clock starts when
    // the head is in.
    let too_slow = async {
        asked.notified().await;
        tokio::time::sleep(WRITE_TIMEOUT).await;
    };
    tokio::select! {
        _ = conn => {}
        _ = too_slow => {}
    }
    linger(&mut stream).await;
}

/// Answers a connection past the limit with 503, if it asks within
/// [`TURN_AWAY_TIMEOUT`]: the accept loop waits on it.
async fn turn_away(stream: TcpStream) {
    let service = service_fn(|_: Request<Incoming>| async {
        Ok::<_, Infallible>(reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            Bytes::from_static(b"too many connections\n"),
        ))
    });
    let conn = http1().serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(TURN_AWAY_TIMEOUT, conn).await;
}

fn respond(req: &Request<Incoming>, metrics: &Mutex<Bytes>) -> Response<Whole> {
    // hyper leaves out the body of a HEAD response, and keeps its length.
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            Bytes::from_static(b"only GET and HEAD\n"),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let text = match metrics.lock() {
                Ok(b) => b.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            reply(StatusCode::OK, METRICS_CONTENT_TYPE, text)
        }
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            Bytes::from_static(INDEX.as_bytes()),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            Bytes::from_static(b"not found: the metrics are at /metrics\n"),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Whole> {
    let length = HeaderValue::from(body.len());
    let mut response = Response::new(Whole(Some(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, length);
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A response body sent in one piece. Unlike `http_body_util::Full`, an
/// empty one is not "ended" before it is polled, so hyper writes its
/// `Content-Length: 0` where the headers have it rather than last.
struct Whole(Option<Bytes>);

impl Body for Whole {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let data = self.0.take().filter(|d| !d.is_empty());
        Poll::Ready(data.map(|d| Ok(Frame::data(d))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// Tells the client we are done, then lets it close first (briefly).
async fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests' client side, on a runtime of their own.
    fn client() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        client().block_on(async {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(request.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
                .await
                .expect("an answer within 5s")
                .unwrap();
            String::from_utf8(out).unwrap()
        })
    }

    #[test]
    fn serves_what_was_published_and_survives_bad_requests() {
        let server = MetricsServer::start("127.0.0.1:0").unwrap();
        let addr = server.local_addr();
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"),
            "{r}"
        );
        server.publish("a 1\n".into());
        let r = get(addr, "GET /metrics?x=1 HTTP/1.0\n\n");
        assert!(r.ends_with("\r\n\r\na 1\n"), "{r}");
        assert!(get(addr, "garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
        let big = format!(
            "GET /{} HTTP/1.1\r\n\r\n",
            "a".repeat(MAX_REQUEST_HEAD + 10)
        );
        let r = get(addr, &big);
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        // A client that connects and says nothing does not block others.
        let rt = client();
        let _silent = rt.block_on(TcpStream::connect(addr)).unwrap();
        let r = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        assert!(r.contains("Content-Length: 4\r\n"), "{r}");
    }

    #[test]
    fn a_taken_address_says_what_to_do() {
        let first = MetricsServer::start("127.0.0.1:0").unwrap();
        let addr = first.local_addr().to_string();
        let err = MetricsServer::start(&addr).err().unwrap().to_string();
        assert_eq!(
            err,
            format!("address {addr} in use: pick another --metrics-addr")
        );
        let err = MetricsServer::start("nonsense").err().unwrap().to_string();
        assert!(err.contains("expected HOST:PORT"), "{err}");
        let err = MetricsServer::start("127.0.0.1:99999")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("expected HOST:PORT"), "{err}");
    }

    #[test]
    fn dropping_stops_listening() {
        let server = MetricsServer::start("127.0.0.1:0").unwrap();
        let addr = server.local_addr();
        drop(server);
        assert!(client().block_on(TcpStream::connect(addr)).is_err());
    }

    #[test]
    fn past_the_limit_connections_get_503() {
        let server = MetricsServer::start("127.0.0.1:0").unwrap();
        let addr = server.local_addr();
        let rt = client();
        // Silent clients hold every slot until READ_TIMEOUT.
        let _held: Vec<TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| rt.block_on(TcpStream::connect(addr)).unwrap())
            .collect();
        // Let the accept loop take them all in before the next one.
        std::thread::sleep(Duration::from_millis(200));
        let r = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.ends_with("too many connections\n"), "{r}");
    }

    #[test]
    fn the_server_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<MetricsServer>();
    }
}
