//! The admin server over real sockets: what it answers, and that no client can hold up
//! another or keep a connection past its bounds.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use gameshard_admin::{Config, Reply, Routes, Server, StatusCode, TEXT};

/// A server with `/healthz`, a `/count` that counts its calls and a 32 MiB `/big`.
fn server(config: Config) -> Server {
    let calls = Arc::new(AtomicU64::new(0));
    let routes = Routes::new()
        .get("/healthz", || Reply::text(StatusCode::OK, "ok\n"))
        .get("/count", move || {
            Reply::text(StatusCode::OK, format!("{}\n", calls.fetch_add(1, Relaxed) + 1))
        })
        .get("/big", || Reply::text(StatusCode::OK, "x".repeat(32 << 20)));
    Server::start("127.0.0.1:0".parse().unwrap(), routes, config).unwrap()
}

fn config(header_read_timeout: Duration, request_timeout: Duration) -> Config {
    Config {
        thread_name: "test-admin".into(),
        header_read_timeout,
        request_timeout,
        ..Config::default()
    }
}

/// The whole response to `request`, read until the server closes the connection.
fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
}

/// What arrives in answer to `request` before the server closes or resets the
/// connection.
fn whatever_arrives(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request.as_bytes());
    let mut response = Vec::new();
    let mut buf = [0; 4096];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        response.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&response).into_owned()
}

/// Status line, headers (lower-cased names) and body of `GET path`.
fn get(addr: SocketAddr, path: &str) -> (String, Vec<(String, String)>, String) {
    let response = exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"));
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP head");
    let mut lines = head.lines();
    let status = lines.next().unwrap().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Sends `GET /healthz` one byte every `pause`, never finishing the head; returns when
/// the server closes the connection, with the time it took, or after `give_up`.
fn trickle(addr: SocketAddr, pause: Duration, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(pause)).unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: ";
    let mut i = 0;
    while started.elapsed() < give_up {
        let byte = request.get(i).copied().unwrap_or(b'a');
        i += 1;
        if s.write_all(&[byte]).is_err() {
            return Some(started.elapsed());
        }
        match s.read(&mut [0; 1024]) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // The server answered (a timeout reply), closed or reset: it let go.
            _ => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn routes_answer_with_their_replies_and_unknown_paths_and_methods_are_refused() {
    let server = server(Config::default());
    let addr = server.addr();

    let (status, headers, body) = get(addr, "/healthz?verbose");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, "ok\n");
    assert_eq!(header(&headers, "content-type"), Some(TEXT));
    assert_eq!(header(&headers, "content-length"), Some("3"));
    assert_eq!(header(&headers, "connection"), Some("close"));

    // Each request runs its handler once, on a connection of its own.
    assert_eq!(get(addr, "/count").2, "1\n");
    assert_eq!(get(addr, "/count").2, "2\n");

    let (status, _, body) = get(addr, "/nope");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body, "not found; try /healthz, /count, /big\n");

    let response =
        exchange(addr, "POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{response}");
    assert!(response.to_ascii_lowercase().contains("\r\nallow: get, head\r\n"), "{response}");

    // HEAD gets the head of the GET reply and no body.
    let response = exchange(addr, "HEAD /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.to_ascii_lowercase().contains("\r\ncontent-length: 3\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\n"), "a body after the head: {response:?}");

    // A head longer than the read buffer is refused: answered 431, or reset as the
    // server closes with the rest of it unread, never served.
    let long =
        format!("GET /healthz HTTP/1.1\r\nHost: test\r\nX-Long: {}\r\n\r\n", "a".repeat(9000));
    let response = whatever_arrives(addr, &long);
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 431 "),
        "a 9 kB head was served: {response}"
    );
}

#[test]
fn a_trickling_client_does_not_delay_another_clients_healthz() {
    // Bounds far longer than the test, so that only concurrency can keep it fast.
    let server = server(config(Duration::from_secs(30), Duration::from_secs(30)));
    let addr = server.addr();
    let trickler =
        thread::spawn(move || trickle(addr, Duration::from_millis(50), Duration::from_secs(3)));
    let silent = TcpStream::connect(addr).unwrap();
    thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(get(addr, "/healthz").0, "HTTP/1.1 200 OK");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "/healthz took {took:?} beside a slow client");
        thread::sleep(Duration::from_millis(200));
    }
    // Both slow clients were still being served (not cut off) while /healthz answered.
    assert_eq!(trickler.join().unwrap(), None, "the trickling client was cut off early");
    drop(silent);
}

#[test]
fn the_header_read_timeout_cuts_off_a_trickling_client() {
    let server = server(config(Duration::from_millis(500), Duration::from_secs(30)));
    let cut = trickle(server.addr(), Duration::from_millis(20), Duration::from_secs(10))
        .expect("the trickling client was never cut off");
    assert!(cut >= Duration::from_millis(450), "cut off after {cut:?}, before the timeout");
    assert!(cut < Duration::from_secs(3), "cut off only after {cut:?}");
}

#[test]
fn the_header_read_timeout_cuts_off_a_silent_client() {
    let server = server(config(Duration::from_millis(500), Duration::from_secs(30)));
    let started = Instant::now();
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server closes (possibly after a timeout reply): the read ends.
    let _ = s.read_to_end(&mut Vec::new());
    let cut = started.elapsed();
    assert!(cut >= Duration::from_millis(450), "cut off after {cut:?}, before the timeout");
    assert!(cut < Duration::from_secs(3), "cut off only after {cut:?}");
}

#[test]
fn the_request_timeout_cuts_off_a_trickling_client_whatever_the_header_timeout() {
    let server = server(config(Duration::from_secs(30), Duration::from_millis(500)));
    let cut = trickle(server.addr(), Duration::from_millis(20), Duration::from_secs(10))
        .expect("the trickling client was never cut off");
    assert!(cut >= Duration::from_millis(450), "cut off after {cut:?}, before the timeout");
    assert!(cut < Duration::from_secs(3), "cut off only after {cut:?}");
}

#[test]
fn the_request_timeout_cuts_off_a_client_that_does_not_read_its_response() {
    let server = server(config(Duration::from_secs(30), Duration::from_millis(300)));
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    // 32 MiB do not fit in the sockets' buffers: the server's writes stall until it
    // gives up on the client.
    thread::sleep(Duration::from_secs(1));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut received = 0;
    let mut buf = vec![0; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert!(received < 32 << 20, "the whole response arrived ({received} bytes)");
    assert!(received > 0, "nothing arrived");
}

#[test]
fn past_the_connection_cap_clients_wait_for_a_slot() {
    let config =
        Config { max_connections: 2, ..config(Duration::from_secs(1), Duration::from_secs(30)) };
    let server = server(config);
    let addr = server.addr();
    let silent: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert_eq!(get(addr, "/healthz").0, "HTTP/1.1 200 OK");
    let waited = started.elapsed();
    // Both slots were held until the silent clients were cut off, a second after they
    // connected.
    assert!(waited >= Duration::from_millis(700), "served after {waited:?}, beside a full server");
    assert!(waited < Duration::from_secs(5), "served only after {waited:?}");
    drop(silent);
}

#[test]
fn dropping_the_server_stops_it_and_frees_its_port() {
    let server = server(Config::default());
    let addr = server.addr();
    let _idle = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(2), "stopping took {:?}", started.elapsed());
    assert!(TcpStream::connect(addr).is_err(), "the port still accepts connections");
}
