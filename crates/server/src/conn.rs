//! Connections: our own accept loop over hyper (axum::serve has no knobs
//! for these), so that every connection is bounded in number and in time.
//!
//! - At most `max_connections` at once. At the cap, a new connection takes
//!   the place of one with no request in flight (the one nearest its
//!   deadline: a header trickling in, or idle the longest), so that slow
//!   sockets cannot keep prompt clients out. If every connection has a
//!   request in flight, the new one gets a 503 (JSON, `Retry-After`) and
//!   is closed. Writing that reply is itself bounded: at most [`REFUSING`]
//!   at a time, past that the socket is just closed.
//! - A request header must be complete within `timeout_header` of the
//!   connection being accepted, or of its first byte on a kept-alive
//!   connection; a connection with nothing in flight is closed after
//!   `timeout_idle`. While a request is in flight (from its complete header
//!   until its reply body is written) neither clock runs: the handlers bound
//!   the body read (`timeout_body`), and generation is bounded by tokens.
//! - On stop, connections with nothing in flight are closed at once, the
//!   others finish their reply and close (hyper's graceful shutdown);
//!   `lib.rs` gives them 10 s.

use crate::error::ApiError;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tower::ServiceExt;

/// Refusals (503 over the cap) being written at once.
const REFUSING: usize = 64;

/// How long a refused client gets to finish sending before we close, so
/// that the kernel does not answer its late bytes with a reset that would
/// discard our 503 before the client reads it.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// How long a new connection waits for the slot of one it evicted.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// How often an idle connection re-reads its clock.
const TICK: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub timeout_header: Duration,
    pub timeout_idle: Duration,
}

/// Accepts and serves connections until `stop` turns true, then waits for
/// the open ones to finish (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let busy_reply = Bytes::from(busy_reply(limits.max_connections));
    let open = Arc::new(Open::default());
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to
                    // close rather than spin.
                    eprintln!("cria serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let mut permit = slots.clone().try_acquire_owned().ok();
        if permit.is_none() && open.evict_one(limits) {
            // The evicted connection's task returns its slot at once; the
            // bound is for a runtime too busy to run it.
            let freed = tokio::time::timeout(EVICTION_WAIT, slots.clone().acquire_owned());
            permit = freed.await.ok().and_then(Result::ok);
        }
        match permit {
            Some(permit) => {
                let router = router.clone();
                let stop = stop.clone();
                let entry = open.add();
                conns.spawn(async move {
                    connection(tcp, router, limits, stop, entry.clock.clone()).await;
                    drop(entry);
                    drop(permit);
                });
            }
            None => {
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    let reply = busy_reply.clone();
                    tokio::spawn(async move {
                        refuse(tcp, reply).await;
                        drop(permit);
                    });
                }
            }
        }
        while conns.try_join_next().is_some() {}
    }
    // New connections are refused by the kernel from here on.
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

/// The raw 503 for a connection over the cap.
fn busy_reply(max: usize) -> String {
    let body = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the server has its maximum of {max} connections open; retry later"),
    )
    .code("too_many_connections")
    .body()
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

async fn refuse(mut tcp: TcpStream, reply: Bytes) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        tcp.write_all(&reply).await?;
        tcp.shutdown().await?;
        let mut buf = [0u8; 4096];
        while tcp.read(&mut buf).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}

async fn connection(
    tcp: TcpStream,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
    clock: Arc<Clock>,
) {
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(Watched {
        tcp,
        clock: clock.clone(),
    });
    let service = {
        let clock = clock.clone();
        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let busy = Busy::new(clock.clone());
            let router = router.clone();
            async move {
                let resp = router.oneshot(req.map(Body::new)).await?;
                Ok::<_, std::convert::Infallible>(resp.map(|inner| Tracked { inner, _busy: busy }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        // Our clock below replaces hyper's (which starts when the
        // connection waits for a request, so it would also be the idle
        // limit).
        .header_read_timeout(None)
        // Header names go out as `Content-Type`, as llama-server sends
        // them: case does not matter in HTTP, but some clients (and
        // llama.cpp's tests) look names up in a plain dictionary.
        .title_case_headers(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            // Errors here are the client's (reset, bad request line); hyper
            // has already answered what can be answered.
            _ = conn.as_mut() => return,
            _ = stopped(&mut stop), if !stopping => {
                // Nothing in flight (idle, or a header still arriving):
                // close now. Else finish the reply, then close.
                if clock.busy.load(Ordering::SeqCst) == 0 {
                    return;
                }
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            // Dropping `conn` closes the socket.
            _ = clock.expired(limits) => return,
            _ = clock.evict.notified(), if !stopping => {
                // A request may have begun since this one was chosen: let
                // it finish (the newcomer then waits, and may get a 503).
                if clock.busy.load(Ordering::SeqCst) == 0 {
                    return;
                }
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The open connections' clocks, to choose one to close when at the cap.
#[derive(Default)]
struct Open {
    clocks: Mutex<(u64, HashMap<u64, Arc<Clock>>)>,
}

/// A connection's place in [`Open`], given up on drop.
struct OpenEntry {
    open: Arc<Open>,
    id: u64,
    clock: Arc<Clock>,
}

impl Drop for OpenEntry {
    fn drop(&mut self) {
        let mut m = self.open.clocks.lock().unwrap_or_else(|p| p.into_inner());
        m.1.remove(&self.id);
    }
}

impl Open {
    fn add(self: &Arc<Open>) -> OpenEntry {
        let clock = Arc::new(Clock::new());
        let mut m = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        m.0 += 1;
        let id = m.0;
        m.1.insert(id, clock.clone());
        OpenEntry {
            open: self.clone(),
            id,
            clock,
        }
    }

    /// Tells the connection with no request in flight whose deadline is
    /// nearest (the slowest header, the longest idle) to close; false if
    /// every connection has a request in flight.
    fn evict_one(&self, limits: ConnLimits) -> bool {
        let m = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        let victim =
            m.1.values()
                .filter(|c| !c.evicted.load(Ordering::SeqCst))
                .filter_map(|c| Some((c.deadline(limits)?, c)))
                .min_by_key(|(d, _)| *d);
        match victim {
            Some((_, c)) => {
                c.evicted.store(true, Ordering::SeqCst);
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// What a connection's deadlines are measured from, in milliseconds since
/// `t0`.
struct Clock {
    t0: Instant,
    /// Requests whose reply body is not yet written.
    busy: AtomicUsize,
    /// When the connection last became idle (accepted, or a reply ended).
    idle_since: AtomicU64,
    /// The first byte read since then; `NONE` if none.
    first_byte: AtomicU64,
    /// Replies written; before the first, the idle limit is the header one.
    served: AtomicU64,
    /// Set when chosen to make room for a new connection.
    evicted: AtomicBool,
    evict: Notify,
}

const NONE: u64 = u64::MAX;

impl Clock {
    fn new() -> Clock {
        Clock {
            t0: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NONE),
            served: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn read_some(&self) {
        if self.busy.load(Ordering::SeqCst) == 0 && self.first_byte.load(Ordering::SeqCst) == NONE {
            self.first_byte.store(self.now_ms(), Ordering::SeqCst);
        }
    }

    /// When the connection is to be closed; `None` while a request is in
    /// flight.
    fn deadline(&self, limits: ConnLimits) -> Option<Instant> {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let ms = |t: u64, d: Duration| self.t0 + Duration::from_millis(t) + d;
        let first = self.first_byte.load(Ordering::SeqCst);
        let idle_since = self.idle_since.load(Ordering::SeqCst);
        Some(if first != NONE {
            ms(first, limits.timeout_header)
        } else if self.served.load(Ordering::SeqCst) == 0 {
            ms(idle_since, limits.timeout_header)
        } else {
            ms(idle_since, limits.timeout_idle)
        })
    }

    async fn expired(&self, limits: ConnLimits) {
        loop {
            let now = Instant::now();
            let wake = match self.deadline(limits) {
                Some(d) if d <= now => return,
                Some(d) => d.min(now + TICK),
                None => now + TICK,
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// One request in flight, from its complete header until its reply body
/// is dropped (written, or abandoned with the connection).
struct Busy(Arc<Clock>);

impl Busy {
    fn new(clock: Arc<Clock>) -> Busy {
        clock.busy.fetch_add(1, Ordering::SeqCst);
        Busy(clock)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let c = &self.0;
        if c.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            c.idle_since.store(c.now_ms(), Ordering::SeqCst);
            c.first_byte.store(NONE, Ordering::SeqCst);
            c.served.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A reply body that keeps its request counted as in flight.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting when bytes arrive.
struct Watched {
    tcp: TcpStream,
    clock: Arc<Clock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.read_some();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnLimits {
        ConnLimits {
            max_connections: 1,
            timeout_header: Duration::from_secs(10),
            timeout_idle: Duration::from_secs(60),
        }
    }

    #[test]
    fn clock_deadlines_follow_the_request_cycle() {
        let c = Arc::new(Clock::new());
        let l = limits();
        // Fresh: the header limit from acceptance.
        assert_eq!(c.deadline(l), Some(c.t0 + l.timeout_header));
        // In flight: no deadline.
        let busy = Busy::new(c.clone());
        c.read_some();
        assert_eq!(c.first_byte.load(Ordering::SeqCst), NONE);
        assert_eq!(c.deadline(l), None);
        drop(busy);
        // Kept alive with nothing sent: the idle limit.
        let idle = c.idle_since.load(Ordering::SeqCst);
        assert_eq!(
            c.deadline(l),
            Some(c.t0 + Duration::from_millis(idle) + l.timeout_idle)
        );
        // A new request started: the header limit from its first byte.
        c.read_some();
        let first = c.first_byte.load(Ordering::SeqCst);
        assert_ne!(first, NONE);
        assert_eq!(
            c.deadline(l),
            Some(c.t0 + Duration::from_millis(first) + l.timeout_header)
        );
    }

    #[test]
    fn eviction_picks_the_nearest_deadline_without_a_request() {
        let open = Arc::new(Open::default());
        let l = limits();
        let a = open.add();
        let b = open.add();
        let c = open.add();
        // a: served once, now idle (60 s); b: a request in flight; c: fresh
        // (10 s for its header). c is nearest its deadline.
        drop(Busy::new(a.clock.clone()));
        let _in_flight = Busy::new(b.clock.clone());
        assert!(open.evict_one(l));
        assert!(c.clock.evicted.load(Ordering::SeqCst));
        assert!(open.evict_one(l));
        assert!(a.clock.evicted.load(Ordering::SeqCst));
        // Only b is left, and it is busy.
        assert!(!open.evict_one(l));
        assert!(!b.clock.evicted.load(Ordering::SeqCst));
        drop((a, c));
        assert_eq!(open.clocks.lock().unwrap().1.len(), 1);
    }

    #[test]
    fn busy_reply_is_one_http_response() {
        let r = busy_reply(7);
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        let j: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(j["error"]["code"], "too_many_connections");
        assert!(j["error"]["message"].as_str().unwrap().contains(" 7 "));
    }
}
