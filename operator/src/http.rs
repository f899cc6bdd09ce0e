//! Plain-HTTP GETs from the operator to the data planes' admin servers (readiness in
//! local mode), on hyper's client.

use std::sync::OnceLock;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest body read, in bytes.
const MAX_BODY: usize = 8 * 1024 * 1024;

fn client() -> &'static Client<HttpConnector, Empty<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Empty<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

/// `GET url`: the status code and the body, within `timeout`.
pub async fn get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let fetch = async {
        let response = client().get(uri).await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        let text = String::from_utf8(body.to_vec()).map_err(|_| format!("{url}: not UTF-8"))?;
        Ok((status, text))
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("{url} did not answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_get_reads_status_and_body_and_a_closed_port_is_an_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            let body = "not ready";
            let response = format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
        });
        let url = format!("http://127.0.0.1:{port}/readyz");
        assert_eq!(get(&url, Duration::from_secs(5)).await, Ok((503, "not ready".into())));
        assert!(get(&url, Duration::from_secs(5)).await.is_err(), "nobody listens any more");
    }
}
