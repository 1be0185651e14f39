//! The HTTP server loop: axum's router on hyper, with what `axum::serve` leaves unset — the
//! peer address (`ConnectInfo`) the write rate limit keys on, and deadlines on connections:
//! a client must send its first request's headers within `--header-timeout` (HTTP/1 and h2c
//! alike: hyper's own header timer covers HTTP/1 only, and not the protocol sniffing before
//! it), and a connection with nothing in flight (a stream is in flight while it lasts) and
//! nothing written for `--idle-timeout` is closed. Bytes a client trickles in do not count as activity (slowloris); requests and
//! the bytes taskd writes (a stream's events and heartbeats) do.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The connection deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Until the first request's headers have arrived.
    pub header: Duration,
    /// Between requests, with nothing in flight and nothing written.
    pub idle: Duration,
}

/// Serves `router` on `listener` until `stop`, then lets open connections finish their
/// requests and returns once they have all closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    deadlines: Deadlines,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors, a reset before accept: wait a little.
                    tracing::debug!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            deadlines,
            stop.clone(),
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// What a connection has done lately, shared by its IO, its service and its watchdog.
struct Activity {
    opened: Instant,
    /// Milliseconds since `opened` of the last request start or end, or written bytes.
    last: AtomicU64,
    /// Requests whose response is not completely sent yet.
    in_flight: AtomicUsize,
    /// Requests seen on this connection.
    requests: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the connection has outlived its deadline at `now` (since `opened`).
    fn expired(&self, deadlines: Deadlines, now: Duration) -> bool {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        let quiet = now.saturating_sub(last);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // A response in flight that has written nothing for this long has a client that
            // stopped reading (streams write a heartbeat every 15 s or less; handlers answer
            // within the request timeout): its buffers are not held for ever.
            return quiet > deadlines.idle * 2;
        }
        if self.requests.load(Ordering::Acquire) == 0 {
            return now > deadlines.header;
        }
        quiet > deadlines.idle
    }
}

/// Ends a request's in-flight count when its response body has been sent or dropped (a
/// stream counts as in flight while it lasts).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// A response body that holds its request's [`InFlight`] until it is done.
struct Counted {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The TCP stream, noting when taskd writes to it.
struct Tracked {
    inner: tokio::net::TcpStream,
    activity: Arc<Activity>,
    /// A rewritten error answer still to be sent, and the length of the original.
    rewrite: Option<(Vec<u8>, usize)>,
}

/// hyper answers a request it cannot parse (a malformed head, a URI or headers past its
/// limits) itself, before any handler, with an empty body. This turns exactly such an answer
/// (`connection: close`, `content-length: 0`, `date`, nothing else) into the API's JSON
/// error with the same status; any other bytes pass untouched.
fn json_for_bare_error(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let text = text.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line.strip_prefix("HTTP/1.1 ")?;
    let (code, _reason) = rest.split_once(' ')?;
    let status: u16 = code.parse().ok()?;
    let mut names: Vec<&str> = Vec::new();
    let mut date = "";
    for line in lines {
        let (name, value) = line.split_once(": ")?;
        if name == "content-length" && value != "0" {
            return None;
        }
        if name == "date" {
            date = value;
        }
        names.push(name);
    }
    names.sort_unstable();
    if names != ["connection", "content-length", "date"] || !(400..600).contains(&status) {
        return None;
    }
    let (error_code, message) = match status {
        414 => ("uri_too_long", "the request's URI is too long"),
        431 => (
            "headers_too_large",
            "the request's headers are too many or too large",
        ),
        505 => ("http_version", "this HTTP version is not supported"),
        _ => ("bad_request", "the request is not valid HTTP"),
    };
    let body = serde_json::json!({"error": {"code": error_code, "message": message}}).to_string();
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\ndate: {date}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        // Only with nothing in flight: every answer of the router holds its request in
        // flight until its body is out, so only hyper's own answers can match.
        if self.rewrite.is_none()
            && self.activity.in_flight.load(Ordering::Acquire) == 0
            && buf.starts_with(b"HTTP/1.1 ")
            && let Some(answer) = json_for_bare_error(buf)
        {
            self.rewrite = Some((answer, buf.len()));
        }
        if let Some((mut pending, original)) = self.rewrite.take() {
            // Report the original as written only once all of its replacement is out.
            while !pending.is_empty() {
                match Pin::new(&mut self.inner).poll_write(cx, &pending) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                    Poll::Ready(Ok(n)) => {
                        pending.drain(..n);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.rewrite = Some((pending, original));
                        return Poll::Pending;
                    }
                }
            }
            self.activity.touch();
            return Poll::Ready(Ok(original));
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        // hyper's own error answer is a head alone, in one buffer: `poll_write` handles it
        // (and any rewrite still being sent).
        let single = bufs.iter().filter(|b| !b.is_empty()).count() <= 1;
        if self.rewrite.is_some() || single {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return self.poll_write(cx, first);
        }
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    deadlines: Deadlines,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        last: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
    });
    let seen = activity.clone();
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            seen.in_flight.fetch_add(1, Ordering::AcqRel);
            seen.requests.fetch_add(1, Ordering::AcqRel);
            seen.touch();
            let in_flight = InFlight(seen.clone());
            let mut router = router.clone();
            // A Router is always ready; it answers every request (errors are responses).
            async move {
                let response = tower_service::Service::call(&mut router, request).await;
                response.map(|response| {
                    response.map(|body| {
                        axum::body::Body::new(Counted {
                            body,
                            _in_flight: in_flight,
                        })
                    })
                })
            }
        });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.header);
    let io = Tracked {
        inner: stream,
        activity: activity.clone(),
        rewrite: None,
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let check_every = (deadlines.header.min(deadlines.idle) / 4).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // On shutdown whatever is in flight gets time to finish; an idle connection has nothing
    // in flight, and a peer that does not take the hint (h2's GOAWAY) is simply dropped.
    let linger = loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::trace!(%error, %peer, "connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled() => break Duration::from_secs(30),
            _ = tick.tick() => {
                if activity.expired(deadlines, activity.opened.elapsed()) {
                    tracing::debug!(%peer, "closing an idle connection");
                    break Duration::from_secs(1);
                }
            }
        }
    };
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(linger, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity() -> Activity {
        Activity {
            opened: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        }
    }

    const DEADLINES: Deadlines = Deadlines {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn only_hypers_bare_errors_get_a_json_body() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 20:27:30 GMT\r\n\r\n";
        let answer =
            String::from_utf8(json_for_bare_error(bare).expect("rewritten")).expect("utf-8");
        let (head, body) = answer.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["error"]["code"], "headers_too_large");
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 12\r\ndate: x\r\n\r\n";
        assert!(json_for_bare_error(ours).is_none());
        let ok = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert!(json_for_bare_error(ok).is_none());
    }

    #[test]
    fn a_silent_connection_gets_the_header_deadline() {
        let a = activity();
        assert!(!a.expired(DEADLINES, Duration::from_secs(9)));
        assert!(a.expired(DEADLINES, Duration::from_secs(11)));
    }

    #[test]
    fn after_a_request_the_idle_deadline_counts_from_the_last_activity() {
        let a = activity();
        a.requests.store(1, Ordering::Relaxed);
        a.last.store(50_000, Ordering::Relaxed);
        assert!(!a.expired(DEADLINES, Duration::from_secs(100)));
        assert!(a.expired(DEADLINES, Duration::from_secs(111)));
        a.in_flight.store(1, Ordering::Relaxed);
        assert!(
            !a.expired(DEADLINES, Duration::from_secs(150)),
            "a request in flight is not idle"
        );
        assert!(
            a.expired(DEADLINES, Duration::from_secs(171)),
            "a response that writes nothing for twice the idle time has a stalled client"
        );
    }
}
