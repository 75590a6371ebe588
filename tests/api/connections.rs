//! Slow, idle and oversized clients (issue 7): every connection is closed within its limit (set
//! short here), the connection cap holds while real requests are still served, and the answers
//! made below the router (400, 408, 431) are JSON errors. Spoken over raw sockets, as such
//! clients speak.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use klaxon::config::HttpConfig;

use crate::common::app::{TestApp, ADMIN_TOKEN};
use crate::common::Backend;

/// The limits under test: short, so that the tests run in seconds.
const SHORT: Duration = Duration::from_millis(500);
/// How long a connection may take to be closed once its limit has passed: generous, for loaded
/// machines.
const CLOSE_SLACK: Duration = Duration::from_secs(15);

fn short_limits() -> HttpConfig {
    HttpConfig {
        header_timeout: SHORT,
        body_timeout: SHORT,
        idle_timeout: SHORT,
        ..HttpConfig::default()
    }
}

async fn spawn(limits: HttpConfig) -> Option<TestApp> {
    TestApp::spawn_with(Backend::Sqlite, |config| config.http = limits).await
}

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection (a reset counts) and returns what it sent;
/// panics if it is still open after `within`.
async fn until_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, stream.read(&mut chunk)).await {
            Err(_) => panic!(
                "the connection is still open after {within:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return received,
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The status and JSON body of one whole answer.
fn parse_answer(answer: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let status = head
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, body)
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nhost: klaxon\r\n\r\n";

/// Reads one answer to `GET /health` (its head and JSON body) off a keep-alive connection.
async fn read_health_answer(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !received.ends_with(b"}") {
        let n = timeout(CLOSE_SLACK, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read the answer");
        assert!(n > 0, "closed before answering");
        received.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends `GET /health` on a keep-alive connection and expects 200.
async fn ask_health(stream: &mut TcpStream) {
    stream.write_all(HEALTH).await.expect("send the request");
    let answer = read_health_answer(stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Expects the server to close the connection within `within` without a word.
async fn closed_silently(stream: &mut TcpStream, within: Duration) {
    let received = until_closed(stream, within).await;
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
}

#[tokio::test]
async fn a_socket_that_sends_nothing_is_closed() {
    let Some(app) = spawn(short_limits()).await else {
        return;
    };
    let mut silent = connect(&app).await;
    closed_silently(&mut silent, SHORT + CLOSE_SLACK).await;
    app.finish().await;
}

#[tokio::test]
async fn a_dripped_head_is_cut_off_with_408() {
    let Some(app) = spawn(short_limits()).await else {
        return;
    };
    let mut dripping = connect(&app).await;
    let deadline = Instant::now() + SHORT + CLOSE_SLACK;
    let mut answer = Vec::new();
    for byte in HEALTH.iter().cycle() {
        assert!(
            Instant::now() < deadline,
            "the dripping head is never cut off"
        );
        if dripping.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut chunk = [0u8; 1024];
        match timeout(Duration::from_millis(100), dripping.read(&mut chunk)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    answer.extend(until_closed(&mut dripping, CLOSE_SLACK).await);
    let (status, body) = parse_answer(&answer);
    assert_eq!(status, 408, "{body}");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
    app.finish().await;
}

#[tokio::test]
async fn an_idle_keep_alive_is_closed_after_the_idle_limit_not_the_head_limit() {
    let long_idle = Duration::from_secs(3);
    let Some(app) = spawn(HttpConfig {
        idle_timeout: long_idle,
        ..short_limits()
    })
    .await
    else {
        return;
    };
    let mut client = connect(&app).await;
    ask_health(&mut client).await;
    // Idle for longer than a head may take: the idle limit, not the head's, applies.
    tokio::time::sleep(SHORT * 2).await;
    ask_health(&mut client).await;
    closed_silently(&mut client, long_idle + CLOSE_SLACK).await;
    app.finish().await;
}

#[tokio::test]
async fn a_half_sent_body_is_cut_off() {
    let Some(app) = spawn(short_limits()).await else {
        return;
    };
    let mut client = connect(&app).await;
    client
        .write_all(
            format!(
                "POST /message HTTP/1.1\r\nhost: klaxon\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"text\": \"half"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = until_closed(&mut client, SHORT + CLOSE_SLACK).await;
    let (status, body) = parse_answer(&answer);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    app.finish().await;
}

#[tokio::test]
async fn the_connection_cap_holds_and_real_requests_are_still_served() {
    let head_limit = Duration::from_secs(2);
    let Some(app) = spawn(HttpConfig {
        header_timeout: head_limit,
        max_connections: 2,
        ..short_limits()
    })
    .await
    else {
        return;
    };
    let _silent = [connect(&app).await, connect(&app).await];
    let mut waiting = connect(&app).await;
    waiting.write_all(HEALTH).await.unwrap();
    // Both places are taken for at least the head limit: no answer before then.
    let mut chunk = [0u8; 16];
    let early = timeout(head_limit / 2, waiting.read(&mut chunk)).await;
    assert!(early.is_err(), "answered beyond the cap: {early:?}");
    // Once the silent ones are closed, the waiting request is served.
    assert!(read_health_answer(&mut waiting)
        .await
        .starts_with("HTTP/1.1 200"));
    let (status, _) = app.get("/health").await;
    assert_eq!(status, 200);
    app.finish().await;
}

#[tokio::test]
async fn an_oversized_head_gets_431_as_json() {
    let Some(app) = spawn(HttpConfig::default()).await else {
        return;
    };
    let mut client = connect(&app).await;
    let filler = "a".repeat(klaxon::http::MAX_HEADER_BYTES);
    let request = format!("GET /health HTTP/1.1\r\nhost: klaxon\r\nx-filler: {filler}\r\n\r\n");
    let _ = client.write_all(request.as_bytes()).await;
    let (status, body) = parse_answer(&until_closed(&mut client, CLOSE_SLACK).await);
    assert_eq!(status, 431, "{body}");
    assert_eq!(
        body["error"]["code"], "request_header_fields_too_large",
        "{body}"
    );
    // So does a head of more headers than allowed, however short.
    let mut client = connect(&app).await;
    let many: String = (0..=klaxon::http::MAX_HEADERS)
        .map(|i| format!("x-h{i}: 1\r\n"))
        .collect();
    let request = format!("GET /health HTTP/1.1\r\nhost: klaxon\r\n{many}\r\n");
    let _ = client.write_all(request.as_bytes()).await;
    let (status, body) = parse_answer(&until_closed(&mut client, CLOSE_SLACK).await);
    assert_eq!(status, 431, "{body}");
    // A head just under the limit is served.
    let (status, _) = TestApp::send(
        app.request(reqwest::Method::GET, "/health", None)
            .header("x-filler", "a".repeat(klaxon::http::MAX_HEADER_BYTES / 2)),
    )
    .await;
    assert_eq!(status, 200);
    app.finish().await;
}

#[tokio::test]
async fn a_malformed_head_gets_400_as_json() {
    let Some(app) = spawn(HttpConfig::default()).await else {
        return;
    };
    let mut client = connect(&app).await;
    client
        .write_all(b"GET /health HTTP/1.1\r\nhost: klaxon\r\nno colon here\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = parse_answer(&until_closed(&mut client, CLOSE_SLACK).await);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    app.finish().await;
}

/// Stopping closes the door to new connections and lets the request in flight finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_refuses_new_connections_and_finishes_the_request_in_flight() {
    const BODY: &str = r#"{"text":"in flight"}"#;
    let Some(app) = spawn(HttpConfig::default()).await else {
        return;
    };
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut client = connect(&app).await;
    // With `expect: 100-continue` the server answers `100 Continue` once the handler reads the
    // body: the request is then in flight.
    let head = format!(
        "POST /message HTTP/1.1\r\nhost: klaxon\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        BODY.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("100 Continue\r\n\r\n") {
        let mut chunk = [0; 256];
        let n = timeout(CLOSE_SLACK, client.read(&mut chunk))
            .await
            .expect("100 Continue in time")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..n]);
    }
    let stopping = tokio::spawn(app.finish());
    crate::common::eventually("new connections to be refused", CLOSE_SLACK, || {
        let addr = addr.clone();
        async move { TcpStream::connect(addr).await.is_err() }
    })
    .await;
    client.write_all(BODY.as_bytes()).await.unwrap();
    let answer =
        String::from_utf8_lossy(&until_closed(&mut client, CLOSE_SLACK).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    timeout(CLOSE_SLACK, stopping)
        .await
        .expect("stop returns once the request is answered")
        .expect("the stop does not panic");
}
