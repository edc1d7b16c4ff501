//! Accepting connections within limits, for every listener: at most `max_connections` open at once (further ones
//! are closed on accept and counted), and a connection on which nothing moves for `idle_timeout` is closed.
//! HTTP/1 listeners also bound the wait for a request's headers. Without these, 1,100 slow or idle
//! connections took every file descriptor and no OTLP request or readiness probe got through (issue 10).

use crate::telemetry::Counters;
use crate::tls::ServerTls;
use ordertrail_core::config::ConnectionLimits;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// File descriptors kept free for everything that is not a client connection: the store, the exporter's
/// connections, the runtime's own.
const RESERVED_DESCRIPTORS: u64 = 128;

/// Raises the soft open-file limit to the hard one, as the Go runtime does for every Go program (the collector
/// among them); returns the limit now in force, if known.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(hard)) = (limit.current, limit.maximum) {
        if current < hard {
            limit.current = Some(hard);
            if let Err(e) = setrlimit(Resource::Nofile, limit) {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
            }
        }
    }
    getrlimit(Resource::Nofile).current
}

/// The connection caps of `listeners` listeners, each lowered so that together they stay below the open-file
/// limit: at the cap, new connections are closed on accept instead of failing with "too many open files",
/// which stops accepting altogether.
pub fn fit_to_open_files(configured: usize, listeners: usize, open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else { return configured };
    let available = open_files.saturating_sub(RESERVED_DESCRIPTORS) / (listeners.max(1) as u64);
    configured.min(usize::try_from(available).unwrap_or(usize::MAX)).max(1)
}

/// The address of the peer that sent a request, in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// An accepted connection: it holds its place under the listener's cap until dropped, and fails with `TimedOut`
/// when its first bytes do not arrive within `first_bytes`, or once nothing has been read or written for `idle`.
#[derive(Debug)]
pub struct Connection<T> {
    inner: T,
    /// The address of the peer.
    pub peer: SocketAddr,
    _place: Option<OwnedSemaphorePermit>,
    idle: Duration,
    first_bytes: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Whether the peer has sent anything yet; until it has, only its bytes (not the server's own greeting,
    /// such as HTTP/2's SETTINGS frame) move the deadline.
    heard: bool,
}

impl<T> Connection<T> {
    pub fn new(
        inner: T,
        peer: SocketAddr,
        place: Option<OwnedSemaphorePermit>,
        first_bytes: Duration,
        idle: Duration,
    ) -> Connection<T> {
        let deadline = Box::pin(tokio::time::sleep(first_bytes));
        Connection { inner, peer, _place: place, idle, first_bytes, deadline, heard: false }
    }

    /// Starts the first-bytes wait again, as if the connection were new: after a TLS handshake, the peer must
    /// still send its first request within that time, and the server's own greeting does not count (an HTTP/2
    /// SETTINGS frame would otherwise keep a silent peer's place for the whole idle time).
    fn await_first_bytes_again(&mut self) {
        self.heard = false;
        self.deadline.as_mut().reset(Instant::now() + self.first_bytes);
    }

    fn read_some(&mut self) {
        self.heard = true;
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    fn wrote_some(&mut self) {
        if self.heard {
            self.deadline.as_mut().reset(Instant::now() + self.idle);
        }
    }

    /// `Pending`, unless the connection has been idle too long.
    fn idle_check<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle too long"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Connection<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.read_some();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.idle_check(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Connection<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.wrote_some();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.idle_check(cx),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    this.wrote_some();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.idle_check(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A connection as a server reads it: plain, or TLS over the guarded connection (so that the idle and
/// first-bytes deadlines count the bytes on the wire, handshake included).
#[derive(Debug)]
pub enum Stream {
    Plain(Connection<TcpStream>),
    Tls(Box<tokio_rustls::server::TlsStream<Connection<TcpStream>>>),
}

impl Stream {
    pub fn peer(&self) -> SocketAddr {
        match self {
            Stream::Plain(connection) => connection.peer,
            Stream::Tls(tls) => tls.get_ref().0.peer,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(c) => Pin::new(c).poll_read(cx, buf),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(c) => Pin::new(c).poll_write(cx, data),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(c) => Pin::new(c).poll_flush(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(c) => Pin::new(c).poll_shutdown(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(c) => c.is_write_vectored(),
            Stream::Tls(t) => t.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Stream {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        Peer(self.peer())
    }
}

/// A listener that accepts within `limits`, over TLS when it has one.
#[derive(Debug)]
pub struct LimitedListener {
    listener: TcpListener,
    limits: ConnectionLimits,
    places: Arc<Semaphore>,
    counters: Arc<Counters>,
    tls: Option<Arc<ServerTls>>,
}

impl LimitedListener {
    pub fn new(listener: TcpListener, limits: ConnectionLimits, counters: Arc<Counters>) -> LimitedListener {
        let places = Arc::new(Semaphore::new(limits.max_connections));
        LimitedListener { listener, limits, places, counters, tls: None }
    }

    /// Serves every connection over TLS.
    pub fn with_tls(mut self, tls: Option<Arc<ServerTls>>) -> LimitedListener {
        self.tls = tls;
        self
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// The TLS handshake of an accepted connection, when the listener has TLS; it must end within the
    /// first-bytes time (`read_header_timeout`), and a failed one is counted and closes the connection.
    fn secure(&self, connection: Connection<TcpStream>) -> impl Future<Output = io::Result<Stream>> + Send + 'static {
        let acceptor = self.tls.as_ref().map(|tls| tls.acceptor());
        let (counters, timeout) = (self.counters.clone(), self.limits.read_header_timeout);
        async move {
            let Some(acceptor) = acceptor else { return Ok(Stream::Plain(connection)) };
            let peer = connection.peer;
            let result = match tokio::time::timeout(timeout, acceptor.accept(connection)).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
            };
            result
                .map(|mut tls| {
                    tls.get_mut().0.await_first_bytes_again();
                    Stream::Tls(Box::new(tls))
                })
                .inspect_err(|e| {
                    Counters::add(&counters.tls_handshakes_failed, 1);
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                })
        }
    }

    /// The next connection within the cap. Connections over it are closed at once and counted; accept errors
    /// (out of file descriptors, say) are logged and retried after a pause instead of ending the listener.
    pub async fn accept(&self) -> Connection<TcpStream> {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(place) = self.places.clone().try_acquire_owned() else {
                Counters::add(&self.counters.connections_refused, 1);
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let limits = self.limits;
            return Connection::new(stream, peer, Some(place), limits.read_header_timeout, limits.idle_timeout);
        }
    }

    /// The accepted connections as a stream, for tonic. TLS handshakes run each in a task of its own, so that a
    /// slow one does not hold up the connections behind it; a failed one never reaches the server.
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = io::Result<Stream>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                // When the server stops taking connections (shutdown), the listener closes at once rather than
                // on the next connection attempt.
                let accepted = tokio::select! {
                    accepted = self.accept() => accepted,
                    () = tx.closed() => break,
                };
                let handshake = self.secure(accepted);
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = handshake.await {
                        let _ = tx.send(Ok(stream)).await;
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// Serves an axum router over HTTP/1 on `listener` until `shutdown`, then lets open requests finish. Each
/// request carries its [`Peer`]; headers must arrive within `read_header_timeout`.
pub async fn serve_http(
    listener: LimitedListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower_service::Service;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(listener.limits().read_header_timeout);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let peer = Peer(accepted.peer);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(peer);
            // A router is always ready, so it is called without waiting for readiness.
            router.clone().call(request.map(axum::body::Body::new))
        });
        let handshake = listener.secure(accepted);
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            // A connection's errors (a failed handshake, a peer gone, a timeout) concern that connection only.
            let Ok(stream) = handshake.await else { return };
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let _ = watcher.watch(connection).await;
        });
    }
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_stay_below_the_open_file_limit() {
        assert_eq!(fit_to_open_files(1000, 4, None), 1000);
        assert_eq!(fit_to_open_files(1000, 4, Some(1024)), 224);
        assert_eq!(fit_to_open_files(1000, 2, Some(1_048_576)), 1000);
        assert_eq!(fit_to_open_files(1000, 4, Some(10)), 1);
    }

    #[tokio::test]
    async fn an_idle_connection_times_out_and_a_busy_one_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let server = listener.accept().await.unwrap();
        let (server, peer) = server;
        let mut guarded = Connection::new(server, peer, None, Duration::from_millis(300), Duration::from_millis(300));
        let mut buf = [0u8; 16];
        for _ in 0..4 {
            // Traffic every 150 ms keeps it open past the idle time.
            tokio::time::sleep(Duration::from_millis(150)).await;
            client.write_all(b"x").await.unwrap();
            assert_eq!(guarded.read(&mut buf).await.unwrap(), 1);
        }
        let started = std::time::Instant::now();
        let err = guarded.read(&mut buf).await.expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_peer_that_never_speaks_is_closed_after_the_first_bytes_time_whatever_the_server_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let server = listener.accept().await.unwrap();
        let (server, peer) = server;
        let mut guarded = Connection::new(server, peer, None, Duration::from_millis(200), Duration::from_secs(60));
        let started = std::time::Instant::now();
        // The server greets first, as HTTP/2 does with its SETTINGS frame.
        guarded.write_all(b"greeting").await.unwrap();
        let err = guarded.read(&mut [0u8; 8]).await.expect_err("silent peer");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
