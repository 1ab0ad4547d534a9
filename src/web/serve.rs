//! The HTTP server loop (instead of `axum::serve`, which sets no timer and so no timeouts): every
//! connection gets a deadline for its request head, the number of open connections is capped,
//! and a failed `accept` (out of file descriptors) never stops the loop.
//!
//! - A connection that sends nothing within `header_timeout` of opening or of its previous
//!   response (an idle keep-alive connection) is closed ([`IdleDeadline`]), and so is one whose
//!   request head is not complete within `header_timeout` of its first byte (hyper's header
//!   timer): slow-header ("slowloris") and idle connections cannot pile up.
//! - At most `max_connections` are served at once; a connection beyond that is accepted and
//!   closed at once, so the kernel's backlog never fills and the process keeps descriptors for
//!   its database, mailboxes and relay.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::domain::{IpNet, client_addr};

/// Connection limits (`SWARM_HTTP_HEADER_TIMEOUT_SECS`, `SWARM_HTTP_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for a request head, from the connection's start or its last response.
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// The address a request is from: the peer, or with `SWARM_TRUSTED_PROXIES` the client a
/// trusted proxy names in `X-Forwarded-For` (see [`crate::domain::client_addr`]). Rate limits
/// and request logs use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

/// Serves `router` on `listener` until `shutdown` resolves, then lets the open requests finish
/// (idle connections are closed at once). Each request carries its peer's address as
/// `ConnectInfo<SocketAddr>` and its client's as [`ClientAddr`], believing `X-Forwarded-For`
/// from `trusted` proxies only.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    trusted: Arc<[IpNet]>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    // No HTTP/2 keep-alive pings: they would keep an idle connection's deadline from running.
    builder.http2().timer(TokioTimer::new());
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: the open connections will close; try again soon.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection limit reached: closing a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let trusted = trusted.clone();
        let service = router.clone().map_request(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            let forwarded = request.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
            let client = ClientAddr(client_addr(peer.ip(), forwarded, &trusted));
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            request.extensions_mut().insert(client);
            request
        });
        let stream = IdleDeadline::new(stream, limits.header_timeout);
        let connection =
            builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// A connection that fails its reads once it has been silent for `idle` while a request is
/// awaited: from its start and from each write (a response going out) until the next byte
/// arrives. While a request is being handled (bytes read, no response written yet) it has no
/// deadline, so a slow handler is never cut off.
struct IdleDeadline {
    stream: TcpStream,
    idle: Duration,
    /// When the connection counts as idle, while a request is awaited; `None` while one is
    /// being handled. A plain instant, so a write costs no timer operation.
    due: Option<tokio::time::Instant>,
    /// The timer, set to `due` only when a read finds nothing to read.
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleDeadline {
    fn new(stream: TcpStream, idle: Duration) -> Self {
        Self { stream, idle, due: Some(tokio::time::Instant::now() + idle), timer: None }
    }

    fn wrote(&mut self, written: &Poll<io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(n)) if *n > 0) {
            self.due = Some(tokio::time::Instant::now() + self.idle);
        }
    }

    /// Whether `due` has passed; registers for a wake-up at `due` otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(due) = self.due else { return false };
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for IdleDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.due = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request within SWARM_HTTP_HEADER_TIMEOUT_SECS",
            ))),
            other => other,
        }
    }
}

impl AsyncWrite for IdleDeadline {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
