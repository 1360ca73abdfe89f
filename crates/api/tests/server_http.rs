//! The HTTP server over a real socket, with short configured timeouts: a query nested
//! 2,000 levels deep answers 400 and the process keeps serving; slow heads, slow bodies and
//! idle connections are closed on time; connections beyond the limit wait to be accepted;
//! hyper's own 400/414/431 answers carry the Salesforce error array.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use refunds_api::server::{serve, HttpLimits};
use refunds_testkit::{Backend, TestApp, V};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Longest any step may take before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);

struct Served {
    addr: SocketAddr,
    app: TestApp,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(limits: HttpLimits) -> Served {
    let app = TestApp::start(Backend::Sqlite)
        .await
        .expect("SQLite needs no configuration");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(serve(listener, app.router.clone(), limits, None, shutdown));
    Served {
        addr,
        app,
        stop,
        task,
    }
}

fn limits(header_ms: u64, body_ms: u64, idle_ms: u64, connections: usize) -> HttpLimits {
    HttpLimits {
        header_timeout: Duration::from_millis(header_ms),
        body_timeout: Duration::from_millis(body_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        max_connections: connections,
    }
}

/// One answer read off the socket: status, lower-cased head, body (by Content-Length).
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{} answered non-JSON ({e}): {}", self.status, self.body))
    }

    fn error_code(&self) -> String {
        let body = self.json();
        assert!(body.is_array(), "Salesforce error array: {body}");
        body[0]["errorCode"]
            .as_str()
            .expect("errorCode")
            .to_string()
    }
}

async fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("the body in time")
            .expect("read");
        assert!(n > 0, "connection closed inside a body");
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Answer {
        status,
        head,
        body: String::from_utf8(body).expect("UTF-8"),
    })
}

/// Waits until the server closes the connection; answers how long that took.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("the server closes the connection in time")
        {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => continue,
        }
    }
}

fn get(path: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\r\n")
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_nested_2000_levels_answers_400_and_the_server_keeps_serving() {
    let served = start(HttpLimits::default()).await;
    let soql = format!(
        "SELECT Id FROM OrderSummary WHERE {}OrderNumber = 'x'{}",
        "(".repeat(2_000),
        ")".repeat(2_000)
    );
    let path = format!(
        "{V}/query?q={}",
        soql.replace(' ', "+")
            .replace('(', "%28")
            .replace(')', "%29")
            .replace('\'', "%27")
            .replace('=', "%3D")
    );
    let mut stream = connect(served.addr).await;
    stream
        .write_all(get(&path, &served.app.token).as_bytes())
        .await
        .expect("send");
    let answer = read_answer(&mut stream).await.expect("an answer");
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.error_code(), "MALFORMED_QUERY");
    // The same connection and a new one both still answer.
    let normal = format!("{V}/query?q=SELECT+Id+FROM+OrderSummary");
    stream
        .write_all(get(&normal, &served.app.token).as_bytes())
        .await
        .expect("send");
    let answer = read_answer(&mut stream).await.expect("an answer");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let mut fresh = connect(served.addr).await;
    fresh
        .write_all(get("/healthz", "").as_bytes())
        .await
        .expect("send");
    assert_eq!(read_answer(&mut fresh).await.expect("answer").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_partial_heads_are_closed_after_the_header_timeout() {
    let header = Duration::from_millis(600);
    let served = start(limits(600, 60_000, 60_000, 16)).await;

    // Nothing at all after connecting.
    let started = Instant::now();
    let mut silent = connect(served.addr).await;
    let took = closed_after(&mut silent, started).await;
    assert!(took >= header - Duration::from_millis(50), "{took:?}");

    // A partial request line.
    let started = Instant::now();
    let mut partial = connect(served.addr).await;
    partial.write_all(b"GET /heal").await.expect("send");
    let took = closed_after(&mut partial, started).await;
    assert!(took >= header - Duration::from_millis(50), "{took:?}");

    // A header line every 200 ms: each arrives before the timeout, the head never does.
    let started = Instant::now();
    let mut slow = connect(served.addr).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("send");
    let mut closed = false;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow
            .write_all(format!("X-Slow-{i}: yes\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        if started.elapsed() > header * 3 {
            break;
        }
    }
    let took = if closed {
        started.elapsed()
    } else {
        closed_after(&mut slow, started).await
    };
    assert!(
        took >= header - Duration::from_millis(50) && took < Duration::from_secs(10),
        "{took:?}"
    );

    // A whole head in time is answered.
    let mut prompt = connect(served.addr).await;
    prompt
        .write_all(get("/healthz", "").as_bytes())
        .await
        .expect("send");
    assert_eq!(read_answer(&mut prompt).await.expect("answer").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_answers_408_and_the_connection_closes() {
    let body = Duration::from_millis(700);
    let served = start(limits(5_000, 700, 60_000, 16)).await;
    let mut stream = connect(served.addr).await;
    let head = format!(
        "POST {V}/sobjects/OrderSummary HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"OrderNumber\"",
        served.app.token
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.expect("send");
    let answer = read_answer(&mut stream).await.expect("an answer");
    let took = started.elapsed();
    assert_eq!(answer.status, 408, "{}", answer.body);
    assert_eq!(answer.error_code(), "REQUEST_TIMEOUT");
    assert!(answer.head.contains("connection: close"), "{}", answer.head);
    assert!(took >= body - Duration::from_millis(50), "{took:?}");
    closed_after(&mut stream, started).await;
    assert_eq!(
        served
            .app
            .scalar("SELECT COUNT(*) FROM order_summaries")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let idle = Duration::from_millis(1_500);
    let served = start(limits(300, 5_000, 1_500, 16)).await;
    let mut stream = connect(served.addr).await;
    stream
        .write_all(get("/healthz", "").as_bytes())
        .await
        .expect("send");
    assert_eq!(read_answer(&mut stream).await.expect("answer").status, 200);
    let idle_since = Instant::now();
    let took = closed_after(&mut stream, idle_since).await;
    assert!(
        took >= idle - Duration::from_millis(100),
        "closed after {took:?}, before the idle timeout"
    );
    // Kept alive for a while, a connection still serves its next request.
    let mut kept = connect(served.addr).await;
    for _ in 0..3 {
        kept.write_all(get("/healthz", "").as_bytes())
            .await
            .expect("send");
        assert_eq!(read_answer(&mut kept).await.expect("answer").status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let served = start(limits(60_000, 60_000, 60_000, 2)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(served.addr).await;
        stream
            .write_all(get("/healthz", "").as_bytes())
            .await
            .expect("send");
        assert_eq!(read_answer(&mut stream).await.expect("answer").status, 200);
        held.push(stream);
    }
    // The third connects (the kernel's backlog) but is not served while two are open.
    let mut third = connect(served.addr).await;
    third
        .write_all(get("/healthz", "").as_bytes())
        .await
        .expect("send");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
    assert!(early.is_err(), "served beyond the limit: {early:?}");
    drop(held.pop());
    assert_eq!(read_answer(&mut third).await.expect("answer").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_heads_answer_the_salesforce_error_array() {
    let served = start(HttpLimits::default()).await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            format!(
                "GET {V}/query?q={} HTTP/1.1\r\nHost: test\r\n\r\n",
                "a".repeat(70_000)
            )
            .into_bytes(),
            414,
            "URI_TOO_LONG",
        ),
        (
            format!(
                "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n",
                "b".repeat(200_000)
            )
            .into_bytes(),
            431,
            "REQUEST_HEADER_FIELDS_TOO_LARGE",
        ),
        (
            {
                let mut head = "GET /healthz HTTP/1.1\r\nHost: test\r\n".to_string();
                for i in 0..150 {
                    head.push_str(&format!("X-H{i}: v\r\n"));
                }
                head.push_str("\r\n");
                head.into_bytes()
            },
            431,
            "REQUEST_HEADER_FIELDS_TOO_LARGE",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHo st: x\r\n\r\n".to_vec(),
            400,
            "MALFORMED_REQUEST",
        ),
        (
            b"\x16\x03\x01garbage\r\n\r\n".to_vec(),
            400,
            "MALFORMED_REQUEST",
        ),
    ];
    for (request, status, code) in cases {
        let mut stream = connect(served.addr).await;
        // The server may answer and close before it has read everything.
        let _ = stream.write_all(&request).await;
        let answer = read_answer(&mut stream).await.expect("an answer");
        assert_eq!(answer.status, status, "{}", answer.body);
        assert_eq!(answer.error_code(), code);
        assert!(
            answer
                .head
                .contains("content-type: application/json;charset=utf-8"),
            "{}",
            answer.head
        );
    }
    // The longest URI hyper takes still reaches the router.
    let path = format!(
        "{V}/query?q=SELECT+Id+FROM+Refund+WHERE+Status+%3D+%27{}%27",
        "s".repeat(60_000)
    );
    let mut stream = connect(served.addr).await;
    stream
        .write_all(get(&path, &served.app.token).as_bytes())
        .await
        .expect("send");
    assert_eq!(read_answer(&mut stream).await.expect("answer").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_open_connections_and_returns() {
    let served = start(HttpLimits::default()).await;
    let mut stream = connect(served.addr).await;
    stream
        .write_all(get("/healthz", "").as_bytes())
        .await
        .expect("send");
    assert_eq!(read_answer(&mut stream).await.expect("answer").status, 200);
    served.stop.send(true).expect("stop");
    tokio::time::timeout(PATIENCE, served.task)
        .await
        .expect("serve returns once its connections have closed")
        .expect("no panic");
    closed_after(&mut stream, Instant::now()).await;
}
