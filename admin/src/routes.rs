//! Paths and their handlers, and the replies they give.

use http::{Method, StatusCode};

/// Content type of plain-text replies.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Content type of JSON replies.
pub const JSON: &str = "application/json";

/// What a handler answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Reply {
    /// A plain-text reply.
    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Self { status, content_type: TEXT, body: body.into() }
    }

    /// A `200 OK` metrics page in the Prometheus text format.
    pub fn metrics(body: String) -> Self {
        Self { status: StatusCode::OK, content_type: PROMETHEUS_TEXT, body }
    }

    /// A `200 OK` JSON document.
    pub fn json(body: String) -> Self {
        Self { status: StatusCode::OK, content_type: JSON, body }
    }
}

type Handler = Box<dyn Fn() -> Reply + Send>;

/// The paths a server answers, each with its handler. Only `GET` and `HEAD` are served
/// (`HEAD` gets the `GET` reply's head); the query string is ignored.
#[derive(Default)]
pub struct Routes {
    routes: Vec<(&'static str, Handler)>,
}

impl Routes {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers `GET path` with `handler`. Handlers run on the admin thread and must be
    /// quick (see the crate's documentation).
    ///
    /// # Panics
    /// If `path` does not start with `/` or already has a handler.
    #[must_use]
    pub fn get(mut self, path: &'static str, handler: impl Fn() -> Reply + Send + 'static) -> Self {
        assert!(path.starts_with('/'), "route {path:?} does not start with /");
        assert!(self.routes.iter().all(|(p, _)| *p != path), "route {path} is given twice");
        self.routes.push((path, Box::new(handler)));
        self
    }

    /// The reply to `method` on `path` (without its query string).
    pub(crate) fn answer(&self, method: &Method, path: &str) -> Reply {
        let Some((_, handler)) = self.routes.iter().find(|(p, _)| *p == path) else {
            let known: Vec<&str> = self.routes.iter().map(|(p, _)| *p).collect();
            return Reply::text(
                StatusCode::NOT_FOUND,
                format!("not found; try {}\n", known.join(", ")),
            );
        };
        if method != Method::GET && method != Method::HEAD {
            return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD are served\n");
        }
        handler()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Routes {
        Routes::new()
            .get("/healthz", || Reply::text(StatusCode::OK, "ok\n"))
            .get("/metrics", || Reply::metrics("m 1\n".into()))
    }

    #[test]
    fn a_known_path_gets_its_handlers_reply_on_get_and_head() {
        let r = routes();
        assert_eq!(r.answer(&Method::GET, "/healthz"), Reply::text(StatusCode::OK, "ok\n"));
        assert_eq!(r.answer(&Method::HEAD, "/metrics").content_type, PROMETHEUS_TEXT);
    }

    #[test]
    fn an_unknown_path_is_not_found_and_lists_the_known_ones() {
        let reply = routes().answer(&Method::GET, "/nope");
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.body, "not found; try /healthz, /metrics\n");
    }

    #[test]
    fn other_methods_are_not_allowed() {
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let reply = routes().answer(&method, "/healthz");
            assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        }
    }

    #[test]
    #[should_panic(expected = "given twice")]
    fn a_path_cannot_have_two_handlers() {
        let _ = routes().get("/healthz", || Reply::text(StatusCode::OK, ""));
    }
}
