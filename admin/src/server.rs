//! The server: an accept loop and a task per connection, on the admin thread.

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_executor::LocalExecutor;
use async_io::{Async, Timer};
use async_lock::{Semaphore, SemaphoreGuardArc};
use bytes::Bytes;
use futures_lite::future;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use smol_hyper::rt::{FuturesIo, SmolTimer};

use crate::routes::Routes;

/// hyper's read buffer per connection, in bytes, and so the longest request head: the
/// smallest hyper accepts. A probe's or a scrape's head is a few hundred bytes; a longer
/// one is answered `431 Request Header Fields Too Large`.
const MAX_BUF: usize = 8 * 1024;

/// How the server bounds its clients.
#[derive(Clone, Debug)]
pub struct Config {
    /// Name of the server's thread.
    pub thread_name: String,
    /// Time a client has to send its request head, from the moment it is accepted.
    pub header_read_timeout: Duration,
    /// Time a connection may last, from its acceptance to the end of the response.
    pub request_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Config {
    /// Two seconds for the head, five for the whole exchange, 64 connections.
    ///
    /// A client on the cluster network sends its head in one packet, within
    /// milliseconds; two seconds leave a wide margin and still free a slot quickly. The
    /// largest reply, a metrics page, is tens of KiB: five seconds write it to any
    /// client that reads, and are within Prometheus's default scrape timeout (10 s).
    /// The clients are the kubelet's probes, one or two Prometheus servers, the
    /// operator's scrapes and a person with curl: 64 connections leave ample room and
    /// bound the server's memory (64 read buffers of 8 KiB) and file descriptors.
    fn default() -> Self {
        Self {
            thread_name: "admin".to_owned(),
            header_read_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_connections: 64,
        }
    }
}

/// A running admin server. Dropping it stops the server: it stops accepting, cuts the
/// connections it is serving, and its thread ends.
pub struct Server {
    addr: SocketAddr,
    /// Closed on drop, which tells the accept loop to stop.
    stop: Option<async_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and serves `routes` from a thread of its own.
    pub fn start(addr: SocketAddr, routes: Routes, config: Config) -> io::Result<Self> {
        assert!(config.max_connections > 0, "an admin server needs at least one connection");
        let listener = Async::new(TcpListener::bind(addr)?)?;
        let addr = listener.get_ref().local_addr()?;
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let thread =
            std::thread::Builder::new().name(config.thread_name.clone()).spawn(move || {
                // Declared before the executor, so that they outlive its tasks.
                let (routes, config) = (routes, config);
                let executor = LocalExecutor::new();
                async_io::block_on(
                    executor.run(accept(&executor, &listener, &routes, &config, &stopped)),
                );
            })?;
        Ok(Self { addr, stop: Some(stop), thread: Some(thread) })
    }

    /// The address the server listens on (with the port the system chose, if `addr`
    /// asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the admin server's thread panicked");
        }
    }
}

/// Accepts connections while a slot is free, until `stopped` closes.
async fn accept<'a>(
    executor: &LocalExecutor<'a>,
    listener: &Async<TcpListener>,
    routes: &'a Routes,
    config: &'a Config,
    stopped: &async_channel::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    loop {
        // The slot is taken before the connection: while every slot is busy, the next
        // clients wait in the listen backlog rather than in the server's memory.
        let next = async {
            let slot = slots.acquire_arc().await;
            Some((slot, listener.accept().await))
        };
        let stop = async {
            let _ = stopped.recv().await;
            None
        };
        let Some((slot, accepted)) = future::or(stop, next).await else { return };
        match accepted {
            Ok((stream, peer)) => {
                executor.spawn(connection(stream, peer, routes, config, slot)).detach();
            }
            Err(error) => {
                tracing::warn!(%error, "admin server: accepting a connection failed");
                // Out of file descriptors, say: retry without spinning.
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one request on `stream`, within the configured bounds.
async fn connection(
    stream: Async<TcpStream>,
    peer: SocketAddr,
    routes: &Routes,
    config: &Config,
    _slot: SemaphoreGuardArc,
) {
    // A reply is written whole: send it without waiting for Nagle's algorithm.
    let _ = stream.get_ref().set_nodelay(true);
    let service = service_fn(|request: Request<Incoming>| {
        future::ready(Ok::<_, Infallible>(respond(routes, &request)))
    });
    let served = http1::Builder::new()
        .timer(SmolTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(false)
        .max_buf_size(MAX_BUF)
        .serve_connection(FuturesIo::new(stream), service);
    let deadline = async {
        Timer::after(config.request_timeout).await;
        None
    };
    // Dropping the connection at the deadline closes its socket.
    match future::or(async { Some(served.await) }, deadline).await {
        Some(Ok(())) => {}
        Some(Err(error)) => tracing::debug!(%peer, %error, "admin connection failed"),
        None => tracing::debug!(
            %peer,
            limit = ?config.request_timeout,
            "admin connection cut off at its time limit"
        ),
    }
}

fn respond(routes: &Routes, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = routes.answer(request.method(), request.uri().path());
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    if reply.status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}
