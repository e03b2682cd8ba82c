//! The `--alert-webhook` sender against local receivers on 127.0.0.1: what
//! arrives, that `send` never waits on the network, retries and backoff,
//! `Retry-After`, no retry on 4xx or redirects, queue overflow, bad URLs,
//! https with a test CA, and few stderr lines in a storm of failures.
//!
//! Every receiver is a std `TcpListener` thread in this process; timeouts and
//! backoffs are short, so the file runs in a few seconds.

use kubectl_mapguard::alerts::webhook::{Alert, Webhook, WebhookOptions, WebhookStats};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a receiver does with request number `n` (0-based).
enum Answer {
    /// Writes this status line's code and extra header lines, then closes.
    Status(u16, &'static str),
    /// Keeps the connection open and never answers.
    Hang,
    /// Waits for a message on the channel, then answers 200.
    WaitThen200(Arc<Mutex<mpsc::Receiver<()>>>),
}

#[derive(Clone, Debug)]
struct Request {
    at: Instant,
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// A plain-HTTP or TLS receiver on 127.0.0.1 that records what it gets.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Request>>>,
    /// Connections accepted, whether or not a request was read from them.
    connections: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type Answers = Box<dyn Fn(usize) -> Answer + Send>;

impl Receiver {
    fn start(answer: impl Fn(usize) -> Answer + Send + 'static) -> Receiver {
        Self::start_with(answer, None)
    }

    fn start_with(
        answer: impl Fn(usize) -> Answer + Send + 'static,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Answers = Box::new(answer);
        let thread = {
            let (got, connections, stop) = (got.clone(), connections.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut hung = Vec::new(); // held open until the receiver stops
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(tcp) = conn else { continue };
                    *connections.lock().unwrap() += 1;
                    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                    match &tls {
                        None => serve(tcp, &answer, &got, &mut hung),
                        Some(config) => {
                            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                            serve(
                                rustls::StreamOwned::new(conn, tcp),
                                &answer,
                                &got,
                                &mut hung,
                            )
                        }
                    }
                }
            })
        };
        Receiver {
            addr,
            got,
            connections,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/services/T0/B0/secret", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }

    fn wait_for_requests(&self, n: usize, within: Duration) -> Vec<Request> {
        let end = Instant::now() + within;
        while self.got.lock().unwrap().len() < n && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.requests()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)); // wake accept
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request from `s`, records it, and answers it.
fn serve<S: Read + Write + Send + 'static>(
    mut s: S,
    answer: &Answers,
    got: &Mutex<Vec<Request>>,
    hung: &mut Vec<Box<dyn Send>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut req = Request {
        at: Instant::now(),
        head,
        body: buf[head_end..].to_vec(),
    };
    let len: usize = req
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    while req.body.len() < len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.body.extend_from_slice(&chunk[..n]),
        }
    }
    req.at = Instant::now();
    let n = {
        let mut got = got.lock().unwrap();
        got.push(req);
        got.len() - 1
    };
    let (code, extra) = match answer(n) {
        Answer::Status(code, extra) => (code, extra),
        Answer::Hang => {
            hung.push(Box::new(s));
            return;
        }
        Answer::WaitThen200(gate) => {
            let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(10));
            (200, "")
        }
    };
    let body = if code == 200 { "ok" } else { "no_service" };
    let response = format!(
        "HTTP/1.1 {code} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(response.as_bytes());
    let _ = s.flush();
}

fn alert(i: usize) -> Alert {
    Alert {
        rule: "delete-storm".into(),
        text: format!("delete storm #{i}: 120 deletes/s on map[string]int in main.evict"),
        fields: vec![
            ("map_type".into(), "map[string]int".into()),
            ("caller".into(), "main.evict".into()),
            ("pod".into(), "default/web-0".into()),
            ("count".into(), i.to_string()),
            ("window".into(), "1s".into()),
        ],
    }
}

fn quick(retries: u32, backoff_ms: u64) -> WebhookOptions {
    WebhookOptions {
        timeout: Duration::from_secs(2),
        retries,
        backoff: Duration::from_millis(backoff_ms),
        max_backoff: Duration::from_secs(5),
        queue: 64,
        ..Default::default()
    }
}

fn stats(queued: u64, delivered: u64, failed: u64, dropped: u64, attempts: u64) -> WebhookStats {
    WebhookStats {
        queued,
        delivered,
        failed,
        dropped,
        attempts,
    }
}

/// Gaps between consecutive requests' arrival.
fn gaps(reqs: &[Request]) -> Vec<Duration> {
    reqs.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[test]
fn delivers_each_alert_as_slack_json() {
    let rx = Receiver::start(|_| Answer::Status(200, ""));
    let hook = Webhook::start(&rx.url("http"), quick(3, 50)).unwrap();
    assert_eq!(hook.target(), format!("http://{}/…", rx.addr));
    for i in 0..5 {
        hook.send(alert(i));
    }
    assert_eq!(hook.finish(Duration::from_secs(10)), stats(5, 5, 0, 0, 5));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 5, "exactly the alerts sent");
    for (i, req) in reqs.iter().enumerate() {
        assert!(
            req.head
                .starts_with("POST /services/T0/B0/secret HTTP/1.1\r\n"),
            "{}",
            req.head
        );
        assert_eq!(req.header("host").unwrap(), rx.addr.to_string());
        assert_eq!(req.header("content-type").unwrap(), "application/json");
        let v = req.json();
        let want = alert(i);
        assert_eq!(v["text"], want.text.as_str(), "in order, one each");
        // What Slack shows: the line, then the rule and fields as mrkdwn fields.
        assert_eq!(v["blocks"][0]["type"], "section");
        assert_eq!(v["blocks"][0]["text"]["type"], "mrkdwn");
        let shown: Vec<&str> = v["blocks"][1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert_eq!(shown[0], "*rule*\ndelete-storm");
        assert!(shown.contains(&"*map_type*\nmap[string]int"), "{shown:?}");
        assert!(
            shown.contains(&format!("*count*\n{i}").as_str()),
            "{shown:?}"
        );
        // What a machine reads.
        assert_eq!(v["mapguard"]["rule"], "delete-storm");
        for (k, val) in &want.fields {
            assert_eq!(v["mapguard"]["fields"][k], val.as_str(), "field {k}");
        }
    }
}

/// Runs `f` on a thread of its own and returns its result, or fails the test
/// if it takes longer than `limit` (rather than hang the test run).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

#[test]
fn hanging_receiver_never_blocks_send() {
    let rx = Receiver::start(|_| Answer::Hang);
    let timeout = Duration::from_secs(3);
    let opts = WebhookOptions {
        timeout,
        retries: 3,
        backoff: Duration::from_millis(50),
        queue: 10,
        ..Default::default()
    };
    let hook = Webhook::start(&rx.url("http"), opts).unwrap();
    let t0 = Instant::now();
    // Generous: all 100 return before the first attempt can time out.
    let hook = within(
        timeout - Duration::from_millis(500),
        "100 sends",
        move || {
            for i in 0..100 {
                hook.send(alert(i));
            }
            hook
        },
    );
    let sending = t0.elapsed();
    rx.wait_for_requests(1, Duration::from_secs(2)); // an attempt hangs now
    let grace = Duration::from_millis(300);
    let t1 = Instant::now();
    let s = within(Duration::from_millis(1500), "finish", move || {
        hook.finish(grace)
    });
    let finishing = t1.elapsed();
    assert!(finishing >= grace, "finish returned after {finishing:?}");
    assert!(
        sending + finishing < timeout,
        "{sending:?} + {finishing:?}: waited on the attempt?"
    );
    assert_eq!(s.delivered, 0, "{s:?}");
    assert_eq!(s.failed + s.dropped, 100, "{s:?}");
    assert!(s.queued <= 11 && s.dropped >= 89, "{s:?}");
    assert_eq!(s.attempts, 1, "{s:?}");
}

#[test]
fn retries_5xx_then_delivers() {
    let rx = Receiver::start(|n| {
        if n < 2 {
            Answer::Status(500, "")
        } else {
            Answer::Status(200, "")
        }
    });
    let hook = Webhook::start(&rx.url("http"), quick(3, 50)).unwrap();
    hook.send(alert(0));
    assert_eq!(hook.finish(Duration::from_secs(10)), stats(1, 1, 0, 0, 3));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter().all(|r| r.body == reqs[0].body),
        "same body each time"
    );
}

#[test]
fn gives_up_after_retries_with_doubling_backoff() {
    let rx = Receiver::start(|_| Answer::Status(500, ""));
    let hook = Webhook::start(&rx.url("http"), quick(3, 40)).unwrap();
    hook.send(alert(0));
    assert_eq!(hook.finish(Duration::from_secs(10)), stats(1, 0, 1, 0, 4));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 4, "retries + 1 attempts");
    for (g, want) in gaps(&reqs).into_iter().zip([40, 80, 160]) {
        assert!(
            g >= Duration::from_millis(want),
            "gap {g:?} < backoff {want}ms"
        );
    }
}

#[test]
fn honours_retry_after_on_429() {
    let rx = Receiver::start(|n| match n {
        0 => Answer::Status(429, "Retry-After: 1\r\n"),
        _ => Answer::Status(200, ""),
    });
    let hook = Webhook::start(&rx.url("http"), quick(3, 20)).unwrap();
    hook.send(alert(0));
    assert_eq!(hook.finish(Duration::from_secs(10)), stats(1, 1, 0, 0, 2));
    let g = gaps(&rx.requests())[0];
    assert!(
        g >= Duration::from_secs(1),
        "retried after {g:?}, not Retry-After: 1"
    );
}

#[test]
fn retry_after_is_capped_at_max_backoff() {
    let rx = Receiver::start(|n| match n {
        0 => Answer::Status(429, "Retry-After: 3600\r\n"),
        _ => Answer::Status(200, ""),
    });
    let opts = WebhookOptions {
        max_backoff: Duration::from_millis(200),
        ..quick(3, 20)
    };
    let hook = Webhook::start(&rx.url("http"), opts).unwrap();
    hook.send(alert(0));
    assert_eq!(hook.finish(Duration::from_secs(10)), stats(1, 1, 0, 0, 2));
    let g = gaps(&rx.requests())[0];
    assert!(
        g >= Duration::from_millis(200) && g < Duration::from_secs(3),
        "retried after {g:?}"
    );
}

#[test]
fn does_not_retry_404() {
    let rx = Receiver::start(|_| Answer::Status(404, ""));
    let hook = Webhook::start(&rx.url("http"), quick(3, 10)).unwrap();
    hook.send(alert(0));
    assert_eq!(hook.finish(Duration::from_secs(10)), stats(1, 0, 1, 0, 1));
    assert_eq!(rx.requests().len(), 1);
}

#[test]
fn does_not_follow_redirects() {
    let rx = Receiver::start(|_| Answer::Status(302, "Location: /elsewhere\r\n"));
    let hook = Webhook::start(&rx.url("http"), quick(3, 10)).unwrap();
    hook.send(alert(0));
    assert_eq!(hook.finish(Duration::from_secs(10)), stats(1, 0, 1, 0, 1));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1, "followed the redirect");
}

#[test]
fn retries_refused_connections() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // closed: connecting is refused
    let hook = Webhook::start(&format!("http://{addr}/hook"), quick(2, 10)).unwrap();
    hook.send(alert(0));
    assert_eq!(hook.finish(Duration::from_secs(10)), stats(1, 0, 1, 0, 3));
}

#[test]
fn full_queue_drops_and_counts() {
    let (release, gate) = mpsc::channel();
    let gate = Arc::new(Mutex::new(gate));
    let rx = Receiver::start(move |_| Answer::WaitThen200(gate.clone()));
    let opts = WebhookOptions {
        queue: 3,
        ..quick(0, 10)
    };
    let hook = Webhook::start(&rx.url("http"), opts).unwrap();
    hook.send(alert(0));
    // The sender holds alert 0 at the receiver; the queue takes 3 more.
    assert_eq!(rx.wait_for_requests(1, Duration::from_secs(5)).len(), 1);
    for i in 1..=10 {
        hook.send(alert(i));
    }
    for _ in 0..4 {
        release.send(()).unwrap();
    }
    assert_eq!(hook.finish(Duration::from_secs(10)), stats(4, 4, 0, 7, 4));
    let counts: Vec<Value> = rx
        .requests()
        .iter()
        .map(|r| r.json()["mapguard"]["fields"]["count"].clone())
        .collect();
    assert_eq!(
        counts,
        ["0", "1", "2", "3"],
        "the first ones queued are sent"
    );
}

#[test]
fn bad_urls_are_refused() {
    for (url, says) in [
        ("ftp://hooks.example.com/SECRET", "http:// or https://"),
        ("hooks.slack.com/services/SECRET", "http:// or https://"),
        ("http:///SECRET", "no host"),
        ("https://user:pw@example.com/SECRET", "credentials"),
        ("http://example.com:http/SECRET", "bad port"),
        ("http://example.com/SE CRET", "percent-encode"),
    ] {
        let err = match Webhook::start(url, WebhookOptions::default()) {
            Ok(_) => panic!("{url} accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(says), "{url}: {err}");
        assert!(
            !err.contains("SECRET"),
            "{url}: the error shows the URL's path: {err}"
        );
    }
}

// A test CA and a certificate for 127.0.0.1 and localhost it signed (ECDSA
// P-256, valid 2020 to 2120), made with openssl for these tests only.
const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBazCCARCgAwIBAgICEAAwCgYIKoZIzj0EAwIwGzEZMBcGA1UEAwwQbWFwZ3Vh
cmQgdGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAwMFowGzEZ
MBcGA1UEAwwQbWFwZ3VhcmQgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABD7eOBfpOrPqWS7T7zzwgjw9w4MRQVzLnQ3VJehm5yRATsChwjAkLzUq8Jh7
LMk6lbNVYdJ/+T3mdb0f3VaaRbGjQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0P
AQH/BAQDAgEGMB0GA1UdDgQWBBQJV9Muft0qwpVDNpGggTRwv2wqWjAKBggqhkjO
PQQDAgNJADBGAiEAlL+Yl9h2Rb1ob3YjEDUQ6SDIxHPjJ67GaxDYo6GIceYCIQCE
teOTd7B14VGTbhhm99i9zXsfIU7KJjghDO4XrpU/wA==
-----END CERTIFICATE-----
";
const TEST_SERVER_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBtDCCAVqgAwIBAgICEAEwCgYIKoZIzj0EAwIwGzEZMBcGA1UEAwwQbWFwZ3Vh
cmQgdGVzdCBDQTAgFw0yMDAxMDEwMDAwMDBaGA8yMTIwMDEwMTAwMDAwMFowFDES
MBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEwLeI
96+/E5025udlDjJ6r5WPfaCk9GwBZ8bD1wsipte+Bg6kbL89ERo4Vx5xneNQdGB/
5EvITaAokr3wKTt5DKOBkjCBjzAMBgNVHRMBAf8EAjAAMA4GA1UdDwEB/wQEAwIH
gDATBgNVHSUEDDAKBggrBgEFBQcDATAaBgNVHREEEzARhwR/AAABgglsb2NhbGhv
c3QwHQYDVR0OBBYEFLDaMr4YBQKOIpZSgc+fm4m38eeWMB8GA1UdIwQYMBaAFAlX
0y5+3SrClUM2kaCBNHC/bCpaMAoGCCqGSM49BAMCA0gAMEUCIHPjm0jgwlFWoLGz
JhhDfIaxE/DNtS+Duk0nse9JXhbbAiEAhLOgBlCLC7m8coOvgpx4mlfDn5ZYAN6S
zKokX+XsDrc=
-----END CERTIFICATE-----
";
const TEST_SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgnH6p59qZh3VgR7RB
20Fsy8Tm32XUBxZGfMAGoFXNSvGhRANCAATAt4j3r78TnTbm52UOMnqvlY99oKT0
bAFnxsPXCyKm174GDqRsvz0RGjhXHnGd41B0YH/kS8hNoCiSvfApO3kM
-----END PRIVATE KEY-----
";

fn tls_server_config() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(TEST_SERVER_CERT.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(TEST_SERVER_KEY.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    Arc::new(config)
}

#[test]
fn https_connects_and_sends() {
    let rx = Receiver::start_with(|_| Answer::Status(200, ""), Some(tls_server_config()));
    let opts = WebhookOptions {
        extra_ca_pem: TEST_CA.as_bytes().to_vec(),
        ..quick(1, 10)
    };
    let hook = Webhook::start(&rx.url("https"), opts).unwrap();
    hook.send(alert(7));
    assert_eq!(hook.finish(Duration::from_secs(10)), stats(1, 1, 0, 0, 1));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].json()["text"], alert(7).text.as_str());
}

#[test]
fn https_refuses_an_untrusted_certificate_without_retrying() {
    let rx = Receiver::start_with(|_| Answer::Status(200, ""), Some(tls_server_config()));
    // The platform's CAs only: the test CA is not among them.
    match Webhook::start(&rx.url("https"), quick(3, 10)) {
        Err(e) => assert!(format!("{e:#}").contains("CA"), "{e:#}"), // no CA on this machine
        Ok(hook) => {
            hook.send(alert(0));
            assert_eq!(hook.finish(Duration::from_secs(10)), stats(1, 0, 1, 0, 1));
        }
    }
    assert!(rx.requests().is_empty(), "a request got through");
    assert!(*rx.connections.lock().unwrap() <= 1);
}

#[test]
fn bad_extra_ca_is_an_error() {
    let opts = WebhookOptions {
        extra_ca_pem: b"not a certificate".to_vec(),
        ..Default::default()
    };
    let err = Webhook::start("https://127.0.0.1:1/x", opts)
        .err()
        .expect("accepted");
    assert!(format!("{err:#}").contains("CERTIFICATE"), "{err:#}");
}

/// In the child process of `a_storm_of_failures_prints_two_lines`: 30 alerts,
/// all refused with 404. Does nothing in a normal run.
#[test]
fn storm_child() {
    if std::env::var_os("MAPGUARD_WEBHOOK_STORM_CHILD").is_none() {
        return;
    }
    let rx = Receiver::start(|_| Answer::Status(404, ""));
    let hook = Webhook::start(&rx.url("http"), quick(3, 10)).unwrap();
    for i in 0..30 {
        hook.send(alert(i));
    }
    assert_eq!(
        hook.finish(Duration::from_secs(20)),
        stats(30, 0, 30, 0, 30)
    );
}

#[test]
fn a_storm_of_failures_prints_two_lines() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "storm_child", "--nocapture", "--test-threads=1"])
        .env("MAPGUARD_WEBHOOK_STORM_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("alert webhook"))
        .collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains("HTTP 404: no_service"), "{}", lines[0]);
    assert!(
        lines[1].contains("0 of 30 alerts delivered, 30 failed, 0 dropped"),
        "{}",
        lines[1]
    );
    assert!(
        !stderr.contains("secret"),
        "the URL's path is shown: {stderr}"
    );
}
