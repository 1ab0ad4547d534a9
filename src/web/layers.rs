//! The tower layers every route runs under: a request id (`x-request-id`, kept when the client
//! sent one, else a new one; echoed on the response, in the trace span and in every error
//! body), the security headers ([`SECURITY_HEADERS`]), a trace span per request, and panics
//! answered with a 500 instead of a dropped connection. Pages and the API (not the intake endpoints, which time their own body reads)
//! also get an overall deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::task::futures::TaskLocalFuture;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use super::ApiError;

/// Longest time a page or API request may take before it is answered 503.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

tokio::task_local! {
    /// The id of the request being handled, for the error bodies built while handling it.
    static REQUEST_ID: HeaderValue;
}

/// The id of the request this task is handling, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(|id| id.to_str().unwrap_or_default().to_owned()).ok()
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Put on every response that does not set them itself: only our own script file runs (no
/// inline script; the one inline `<style>` is allowed) and it may only open connections to this
/// origin (the status page's event stream), no page may be framed, no referrer leaves, no
/// content type is sniffed, and nothing (pages show mail content) is cached.
const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; \
         img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CACHE_CONTROL, "no-store"),
];

/// A new request id: 32 hex digits, a random prefix for this process and a counter, so ids are
/// unique across instances without a random draw per request.
fn next_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{prefix:016x}{n:016x}")).unwrap_or(HeaderValue::from_static("-"))
}

/// The request id layer (a tower service rather than `middleware::from_fn`, which boxes the
/// inner service and the future on every request: a tenth of `/health`'s throughput).
#[derive(Clone, Copy)]
struct RequestContextLayer;

impl<S> tower::Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;
    fn layer(&self, inner: S) -> RequestContext<S> {
        RequestContext { inner }
    }
}

/// Gives the request an id (the client's own `x-request-id` when it sent a usable one, at most
/// 128 visible characters), makes it readable by [`current_request_id`] while the request is
/// handled, and puts it on the response.
#[derive(Clone)]
struct RequestContext<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for RequestContext<S>
where
    S: tower::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = WithRequestId<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let id = match request.headers().get(&X_REQUEST_ID) {
            Some(v) if v.len() <= 128 && v.to_str().is_ok_and(|s| !s.is_empty()) => v.clone(),
            _ => {
                let id = next_request_id();
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        let route = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
        let timing = Timing { route, method: request.method().clone(), begun: std::time::Instant::now() };
        WithRequestId {
            inner: REQUEST_ID.scope(id.clone(), self.inner.call(request)),
            id: Some(id),
            timing: Some(timing),
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's future inside the request id's scope; puts the id on its response.
    struct WithRequestId<F> {
        #[pin]
        inner: TaskLocalFuture<HeaderValue, F>,
        id: Option<HeaderValue>,
        timing: Option<Timing>,
    }
}

/// What the HTTP metrics need of a request (see [`super::metrics::count_request`]).
struct Timing {
    route: String,
    method: axum::http::Method,
    begun: std::time::Instant,
}

impl<F, E> Future for WithRequestId<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(id)) = (&mut result, this.id.take()) {
            if let Some(t) = this.timing.take() {
                let seconds = t.begun.elapsed().as_secs_f64();
                super::metrics::count_request(&t.route, &t.method, response.status().as_u16(), seconds);
            }
            let headers = response.headers_mut();
            headers.insert(X_REQUEST_ID, id);
            for (name, value) in SECURITY_HEADERS {
                if !headers.contains_key(&name) {
                    headers.insert(name, HeaderValue::from_static(value));
                }
            }
        }
        Poll::Ready(result)
    }
}

/// A handler that panicked: logged, answered 500 with the usual error body.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a request handler panicked").into_response()
}

/// `routes` (pages and API) under the page deadline.
pub fn with_deadline<S: Clone + Send + Sync + 'static>(routes: Router<S>) -> Router<S> {
    routes.layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, PAGE_TIMEOUT))
}

/// `router` under the request id, trace and panic layers (outermost first: the request id and
/// its scope, the trace span, then panics caught inside the scope so their answer has the id).
pub fn around(router: Router) -> Router {
    router
        .layer(CatchPanicLayer::custom(panicked))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let id = request.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let client = request.extensions().get::<super::serve::ClientAddr>().map(|c| c.0.to_string());
            // Debug level: requests are not logged one by one at the default `info`; error logs
            // name the request id themselves.
            tracing::debug_span!("request", method = %request.method(), path = %request.uri().path(),
                request_id = %id, client = %client.unwrap_or_default())
        }))
        .layer(RequestContextLayer)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    fn app() -> Router {
        around(
            Router::new()
                .route("/boom", get(boom))
                .route("/missing", get(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such thing") })),
        )
    }

    async fn call(request: axum::http::Request<Body>) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = app().oneshot(request).await.expect("answered");
        let status = response.status();
        let id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
        (status, id, serde_json::from_slice(&bytes).expect("JSON body"))
    }

    #[tokio::test]
    async fn errors_carry_the_request_id_of_their_response() {
        let (status, id, body) =
            call(axum::http::Request::get("/missing").body(Body::empty()).expect("request")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let id = id.expect("x-request-id set");
        assert_eq!(id.len(), 32, "{id}");
        assert_eq!(
            body,
            serde_json::json!({"error": "no such thing", "code": "not_found", "request_id": id})
        );
    }

    #[tokio::test]
    async fn every_response_carries_the_security_headers() {
        let request = axum::http::Request::get("/missing").body(Body::empty()).expect("request");
        let response = app().oneshot(request).await.expect("answered");
        let h = response.headers();
        let csp = h.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        let script = csp.split(';').map(str::trim).find(|d| d.starts_with("script-src"));
        assert_eq!(script, Some("script-src 'self'"), "only our own script files, no inline script: {csp}");
        assert_eq!(h.get("x-content-type-options").map(|v| v.as_bytes()), Some(&b"nosniff"[..]));
        assert_eq!(h.get("referrer-policy").map(|v| v.as_bytes()), Some(&b"no-referrer"[..]));
        assert_eq!(h.get("cache-control").map(|v| v.as_bytes()), Some(&b"no-store"[..]));
    }

    #[tokio::test]
    async fn a_client_request_id_is_kept_and_echoed() {
        let request = axum::http::Request::get("/missing")
            .header("x-request-id", "abc-123")
            .body(Body::empty())
            .expect("request");
        let (_, id, body) = call(request).await;
        assert_eq!(id.as_deref(), Some("abc-123"));
        assert_eq!(body["request_id"], "abc-123");
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_with_its_request_id() {
        let (status, id, body) =
            call(axum::http::Request::get("/boom").body(Body::empty()).expect("request")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"], "internal error");
        assert_eq!(body["request_id"].as_str(), id.as_deref());
    }
}
