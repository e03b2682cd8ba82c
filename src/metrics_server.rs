//! A tiny HTTP/1.1 server for `--metrics-addr`: `GET /metrics` serves the
//! last exposition [`MetricsServer::publish`]ed, `GET /` a pointer to it,
//! anything else 404. Std only.
//!
//! One thread accepts; each connection gets a thread of its own, at most
//! [`MAX_CONNECTIONS`] at once (past that a connection is answered 503 and
//! closed), with read and write timeouts, so a slow or silent client holds
//! only its own thread, and only for a few seconds. Every response closes its
//! connection. Dropping the server stops accepting and closes the listener
//! (it wakes the accept thread with a loopback connection and joins it; should
//! that connection fail, the thread is left detached, holding the port until
//! the process exits); connections already being answered finish on their own
//! threads.
//!
//! The address is `HOST:PORT`; `:PORT` means every interface, as in Go
//! programs. Binding a non-loopback address exposes map types and function
//! names of the traced programs to whoever can reach it.

use anyhow::{anyhow, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections answered at once; more are turned away with 503.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers) read.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
    body: Arc<Mutex<Arc<String>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
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
        let listener = TcpListener::bind(&addrs[..]).map_err(|e| {
            let what = match e.kind() {
                ErrorKind::AddrInUse => format!("address {addr} in use"),
                ErrorKind::PermissionDenied => {
                    format!("not permitted to listen on {addr} (ports below 1024 need privileges)")
                }
                ErrorKind::AddrNotAvailable => {
                    format!("address {addr} is not one of this machine's")
                }
                _ => format!("cannot listen on {addr}: {e}"),
            };
            anyhow!("{what}: pick another --metrics-addr")
        })?;
        let local = listener.local_addr()?;
        let body = Arc::new(Mutex::new(Arc::new(String::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (body, stop) = (body.clone(), stop.clone());
            std::thread::Builder::new()
                .name("metrics-accept".into())
                .spawn(move || accept_loop(listener, body, stop))?
        };
        Ok(MetricsServer {
            addr: local,
            body,
            stop,
            accept: Some(accept),
        })
    }

    /// Replaces what `GET /metrics` serves.
    pub fn publish(&self, text: String) {
        let text = Arc::new(text);
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
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop with a connection of our own; if that cannot
        // connect, leave the thread behind (it ends with the process) rather
        // than block here.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            if let Some(accept) = self.accept.take() {
                let _ = accept.join();
            }
        }
    }
}

fn accept_loop(listener: TcpListener, body: Arc<Mutex<Arc<String>>>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match conn {
            Ok(s) => s,
            // e.g. too many open files, or a connection reset before accept:
            // not the server's end.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            // Answered from this thread: a short timeout, and no lingering.
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let mut stream = stream;
            let _ = respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                b"too many connections\n",
                false,
            );
            continue;
        }
        let (body, mine) = (body.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                let mut stream = stream;
                handle(&mut stream, &body);
                linger(&mut stream);
                mine.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Answers one request and closes the connection. Never panics on input.
fn handle(stream: &mut TcpStream, body: &Mutex<Arc<String>>) {
    let head = match read_head(stream) {
        Ok(Some(head)) => head,
        Ok(None) => {
            let _ = respond(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain; charset=utf-8",
                b"request head too large\n",
                false,
            );
            return;
        }
        // Timed out, reset, or closed before a full request: nothing to answer.
        Err(_) => return,
    };
    let request_line = head.lines().next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (method, target) = match (method, target, version, parts.next()) {
        (Some(m), Some(t), Some(v), None)
            if !m.is_empty() && t.starts_with('/') && v.starts_with("HTTP/1.") =>
        {
            (m, t)
        }
        _ => {
            let _ = respond(
                stream,
                "400 Bad Request",
                "text/plain; charset=utf-8",
                b"bad request\n",
                false,
            );
            return;
        }
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        let _ = respond(
            stream,
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            b"only GET and HEAD\n",
            false,
        );
        return;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    match path {
        "/metrics" => {
            let text = match body.lock() {
                Ok(b) => b.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            let _ = respond(
                stream,
                "200 OK",
                METRICS_CONTENT_TYPE,
                text.as_bytes(),
                head_only,
            );
        }
        "/" => {
            let page = "<!doctype html>\n<html><head><title>kubectl-mapguard</title></head>\
                        <body><h1>kubectl-mapguard</h1>\
                        <p><a href=\"/metrics\">/metrics</a></p></body></html>\n";
            let _ = respond(
                stream,
                "200 OK",
                "text/html; charset=utf-8",
                page.as_bytes(),
                head_only,
            );
        }
        _ => {
            let _ = respond(
                stream,
                "404 Not Found",
                "text/plain; charset=utf-8",
                b"not found: the metrics are at /metrics\n",
                head_only,
            );
        }
    }
}

/// Reads up to the blank line that ends the request head. `Ok(None)` when it
/// is longer than [`MAX_REQUEST_HEAD`]. A request body, if any, is ignored.
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        // The socket's timeout bounds each read; this bounds them all, so a
        // client sending a byte at a time cannot hold the thread for long.
        if Instant::now() > deadline {
            return Err(ErrorKind::TimedOut.into());
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&buf).filter(|&end| end <= MAX_REQUEST_HEAD) {
            buf.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()?;
    // Tell the client we are done.
    stream.shutdown(Shutdown::Write)
}

/// Lets the client close first (briefly), so that a response is not cut
/// short by a reset when the client sent more than was read.
fn linger(stream: &mut TcpStream) {
    let deadline = Instant::now() + Duration::from_millis(500);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline && matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
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
        let _silent = TcpStream::connect(addr).unwrap();
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
        assert!(TcpStream::connect(addr).is_err());
    }
}
