//! Serving the API's connections: the accept loop, and what each connection may cost.
//!
//! Promises (issue 7, docs/configuration.md `[http]`):
//! - A request head must arrive within `header_timeout`, counted from its first byte (from the
//!   connection's opening, for its first request); a body within `body_timeout` of its head; a
//!   keep-alive connection waits at most `idle_timeout` for its next request. A connection past
//!   its limit is closed; a head cut off half-sent first gets a 408.
//! - At most [`connection_cap`] connections are open at once; further ones wait in the kernel's
//!   backlog until one closes. The cap stays below the descriptor limit, so the database and the
//!   log always have descriptors left.
//! - Accept errors (`EMFILE` and the like) are logged once per burst and retried with backoff.
//! - A head over [`MAX_HEADER_BYTES`] gets 431, a malformed one 400. hyper writes those answers
//!   itself, bodiless; [`Guarded`] puts the SPEC's JSON error in their place, as it does for 408.
//! - On stop, no connection is accepted; requests in flight finish, idle connections close.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::api::error::ErrorBody;
use crate::config::{HttpConfig, DEFAULT_MAX_CONNECTIONS};

/// The largest request head (request line and headers) accepted; larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The most headers a request may have; more get 431.
pub const MAX_HEADERS: usize = 100;
/// Descriptors kept back from the connection cap: the database pool, the SQLite files, Redis,
/// the listener, the log.
pub const RESERVED_DESCRIPTORS: usize = 64;
/// The first pause after an accept error; each further error in a burst doubles it.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause between accepts while they fail.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a connection whose head is overdue has to send its 408 before it is dropped.
const TIMED_OUT_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// The connection cap: `configured`, lowered to stay [`RESERVED_DESCRIPTORS`] below the
/// process's open-file limit (`RLIMIT_NOFILE`), and between 1 and `u32::MAX`. Lowering a
/// configured cap is worth a warning; lowering the default is what it is for.
pub fn connection_cap(configured: usize) -> usize {
    let configured = configured.min(u32::MAX as usize);
    let Some(limit) = descriptor_limit() else {
        return configured;
    };
    let room = limit.saturating_sub(RESERVED_DESCRIPTORS).max(1);
    if configured > room {
        if configured == DEFAULT_MAX_CONNECTIONS {
            tracing::info!(descriptor_limit = limit, cap = room, "connection cap");
        } else {
            tracing::warn!(
                configured,
                descriptor_limit = limit,
                cap = room,
                "http.max_connections lowered to stay below the open-file limit (ulimit -n)"
            );
        }
    }
    configured.min(room)
}

#[cfg(unix)]
fn descriptor_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (read == 0 && limit.rlim_cur != libc::RLIM_INFINITY)
        .then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
fn descriptor_limit() -> Option<usize> {
    None
}

/// Serves `app` on `listener` within `limits` until `stopping` turns true, then lets requests
/// in flight finish and returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpConfig,
    stopping: watch::Receiver<bool>,
) -> io::Result<()> {
    let cap = connection_cap(limits.max_connections);
    let permits = Arc::new(Semaphore::new(cap));
    let stopped = stopped(stopping.clone());
    tokio::pin!(stopped);
    let mut errors = AcceptErrors::default();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.map_err(io::Error::other)?,
            () = &mut stopped => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => break,
        };
        match accepted {
            Ok((stream, _)) => {
                errors.recovered();
                let connection = serve_connection(stream, app.clone(), limits, stopping.clone());
                tokio::spawn(async move {
                    connection.await;
                    drop(permit);
                });
            }
            Err(error) => {
                if let Some(pause) = errors.pause(&error) {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {},
                        () = &mut stopped => break,
                    }
                }
            }
        }
    }
    drop(listener);
    let all = u32::try_from(cap).expect("connection_cap is at most u32::MAX");
    let _ = permits.acquire_many(all).await;
    Ok(())
}

/// Completes once `stopping` turns true (or its sender is gone).
async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Accept errors come in bursts (the descriptor limit reached, say): the first of a burst is
/// logged, the rest are counted, and each waits longer before the next try.
#[derive(Default)]
struct AcceptErrors {
    in_burst: u64,
    backoff: Option<Duration>,
}

impl AcceptErrors {
    /// How long to wait after `error`; `None` for errors of one connection (reset before it
    /// was accepted), which say nothing about the next.
    fn pause(&mut self, error: &io::Error) -> Option<Duration> {
        if matches!(
            error.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
        ) {
            return None;
        }
        if self.in_burst == 0 {
            tracing::warn!(%error, "cannot accept connections; backing off until it passes");
        }
        self.in_burst += 1;
        let pause = self.backoff.map_or(ACCEPT_BACKOFF_MIN, |last| {
            (last * 2).min(ACCEPT_BACKOFF_MAX)
        });
        self.backoff = Some(pause);
        Some(pause)
    }

    fn recovered(&mut self) {
        if self.in_burst > 0 {
            tracing::info!(errors = self.in_burst, "accepting connections again");
        }
        *self = Self::default();
    }
}

/// One connection: HTTP/1.1 with keep-alive, within `limits`, closed gracefully on stop.
fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: HttpConfig,
    stopping: watch::Receiver<bool>,
) -> impl Future<Output = ()> {
    let exchange = Arc::new(Exchange::new());
    let io = Guarded {
        stream,
        exchange: exchange.clone(),
        replacement: None,
    };
    let answering = exchange.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let busy = answering.begin();
        let request = request.map(|body| Body::new(DeadlineBody::new(body, limits.body_timeout)));
        let answer = app.clone().oneshot(request);
        async move {
            let response = answer.await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    async move {
        tokio::pin!(connection);
        let outcome = tokio::select! {
            outcome = connection.as_mut() => outcome,
            heard = exchange.overdue(limits) => {
                if !heard {
                    return;
                }
                // A head cut off: hyper's next read of it fails, after the 408 (`Guarded`).
                exchange.expired.store(true, Ordering::Release);
                match tokio::time::timeout(TIMED_OUT_ANSWER_GRACE, connection).await {
                    Ok(outcome) => outcome,
                    Err(_) => return,
                }
            }
            () = stopped(stopping) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = outcome {
            tracing::debug!(%error, "connection closed");
        }
    }
}

/// What the deadlines of a connection need to know of its requests, shared by its socket
/// ([`Guarded`]), the service (which marks the answering) and its watch ([`Exchange::overdue`]).
struct Exchange {
    between: Mutex<Between>,
    /// Told of every change to `between`.
    changed: Notify,
    /// Set once a head is overdue: the socket's next read fails.
    expired: AtomicBool,
}

struct Between {
    /// Whether the app is answering a request (its body has a deadline of its own).
    busy: bool,
    answered: u64,
    /// When the connection opened, or its last answer was given.
    since: Instant,
    /// When the first byte of the next head arrived.
    heard: Option<Instant>,
}

impl Exchange {
    fn new() -> Self {
        Self {
            between: Mutex::new(Between {
                busy: false,
                answered: 0,
                since: Instant::now(),
                heard: None,
            }),
            changed: Notify::new(),
            expired: AtomicBool::new(false),
        }
    }

    fn change(&self, change: impl FnOnce(&mut Between)) {
        change(&mut self.between.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_waiters();
    }

    fn begin(self: &Arc<Self>) -> Answering {
        self.change(|between| between.busy = true);
        Answering(self.clone())
    }

    /// Bytes arrived: between requests, the first starts the head's deadline.
    fn heard(&self) {
        let between = self.between.lock().unwrap_or_else(PoisonError::into_inner);
        if between.busy || between.heard.is_some() {
            return;
        }
        drop(between);
        self.change(|between| between.heard = Some(Instant::now()));
    }

    /// Completes when the connection has waited too long between requests: for a head, from
    /// its first byte (from the opening, for the first request), or idle after an answer.
    /// Returns whether a part of a head had arrived.
    async fn overdue(&self, limits: HttpConfig) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let deadline = {
                let between = self.between.lock().unwrap_or_else(PoisonError::into_inner);
                let deadline = match between.heard {
                    _ if between.answered == 0 => between.since + limits.header_timeout,
                    Some(first_byte) => first_byte + limits.header_timeout,
                    None => between.since + limits.idle_timeout,
                };
                (!between.busy).then_some((deadline, between.heard.is_some()))
            };
            match deadline {
                None => changed.await,
                Some((deadline, heard)) => tokio::select! {
                    () = tokio::time::sleep_until(deadline) => return heard,
                    () = changed => {}
                },
            }
        }
    }
}

/// Held while the app answers a request.
struct Answering(Arc<Exchange>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.change(|between| {
            between.busy = false;
            between.answered += 1;
            between.since = Instant::now();
            between.heard = None;
        });
    }
}

/// The socket as hyper sees it. Its reads tell the [`Exchange`] when a head starts, and fail
/// (after a 408) once that head is overdue. The bodiless 400 and 431 hyper writes when it cannot
/// parse a head become JSON errors on their way out.
struct Guarded {
    stream: TcpStream,
    exchange: Arc<Exchange>,
    /// A JSON error being written in place of hyper's own answer, and how much of it is out.
    replacement: Option<(Vec<u8>, usize)>,
}

impl Guarded {
    /// Writes what is left of the replacement answer.
    fn drain_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                break;
            }
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.exchange.expired.load(Ordering::Acquire) {
            if this.replacement.is_none() {
                this.replacement = Some((json_error(StatusCode::REQUEST_TIMEOUT), 0));
            }
            ready!(this.drain_replacement(cx))?;
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.exchange.heard();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacement.is_none() {
            if let Some(status) = hypers_own_answer(buf) {
                this.replacement = Some((json_error(status), 0));
            }
        }
        if this.replacement.is_some() {
            // The rest of hyper's answer is dropped: ours replaces all of it.
            ready!(this.drain_replacement(cx))?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain_replacement(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain_replacement(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The status of `written` if it is the answer hyper makes itself for a head it cannot parse: a
/// 400 or 431 head without a body (a long request target meets the 431 first). The app's error answers always carry one.
fn hypers_own_answer(written: &[u8]) -> Option<StatusCode> {
    if !written.ends_with(b"\r\n\r\n") {
        return None;
    }
    let status = written.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let status = StatusCode::from_bytes(status).ok()?;
    let own = [
        StatusCode::BAD_REQUEST,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    ];
    let bodiless = written
        .windows(b"\r\ncontent-length: 0\r\n".len())
        .any(|line| line.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    (own.contains(&status) && bodiless).then_some(status)
}

/// A whole HTTP/1.1 answer with SPEC §4's error body, which closes the connection.
fn json_error(status: StatusCode) -> Vec<u8> {
    let (code, message) = match status {
        StatusCode::REQUEST_TIMEOUT => (
            "request_timeout",
            "the request head did not arrive in time".to_owned(),
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "request_header_fields_too_large",
            format!(
                "the request head is larger than {MAX_HEADER_BYTES} bytes or has more than \
                 {MAX_HEADERS} headers"
            ),
        ),
        _ => ("bad_request", "the request head is malformed".to_owned()),
    };
    let body = serde_json::to_string(&ErrorBody::new(code, message)).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-content-type-options: nosniff\r\nconnection: close\r\n\r\n",
        body.len()
    );
    [head.into_bytes(), body.into_bytes()].concat()
}

/// A request body that must arrive whole within its deadline, counted from the head.
struct DeadlineBody {
    body: Incoming,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl DeadlineBody {
    fn new(body: Incoming, timeout: Duration) -> Self {
        Self {
            body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

/// Why a body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
struct BodyTimedOut(Duration);

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        ready!(self.deadline.as_mut().poll(cx));
        Poll::Ready(Some(Err(BodyTimedOut(self.timeout).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_per_burst_and_reset_on_success() {
        let mut errors = AcceptErrors::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<_> = (0..10).filter_map(|_| errors.pause(&emfile)).collect();
        assert_eq!(pauses[0], ACCEPT_BACKOFF_MIN);
        assert!(pauses.windows(2).all(|pair| pair[1] >= pair[0]));
        assert_eq!(pauses[9], ACCEPT_BACKOFF_MAX);
        assert_eq!(errors.in_burst, 10);
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(errors.pause(&aborted), None);
        errors.recovered();
        assert_eq!(errors.in_burst, 0);
        assert_eq!(errors.pause(&emfile), Some(ACCEPT_BACKOFF_MIN));
    }

    #[test]
    fn only_hypers_bodiless_head_errors_are_replaced() {
        let own = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            hypers_own_answer(own),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let apps = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 57\r\n\r\n";
        assert_eq!(hypers_own_answer(apps), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hypers_own_answer(ok), None);
    }

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        let cap = connection_cap(usize::MAX);
        if let Some(limit) = descriptor_limit() {
            assert!(
                cap < limit || limit <= RESERVED_DESCRIPTORS,
                "{cap} of {limit}"
            );
        }
        assert_eq!(connection_cap(1), 1);
    }
}
