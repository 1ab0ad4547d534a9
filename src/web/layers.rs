//! The tower layers every route runs under: a request id (`x-request-id`, kept when the client
//! sent one, else a random one; echoed on the response, in the trace span and in every error
//! body), a trace span per request, and panics answered with a 500 instead of a dropped
//! connection. Pages and the API (not the intake endpoints, which time their own body reads)
//! also get an overall deadline.

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use super::ApiError;

/// Longest time a page or API request may take before it is answered 503.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

tokio::task_local! {
    /// The id of the request being handled, for the error bodies built while handling it.
    static REQUEST_ID: String;
}

/// The id of the request this task is handling, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// A random 128-bit request id in hex.
#[derive(Debug, Clone, Copy, Default)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let id: u128 = rand::random();
        HeaderValue::from_str(&format!("{id:032x}")).ok().map(RequestId::new)
    }
}

/// Makes the request id readable by [`current_request_id`] while the handler runs.
async fn scope_request_id(request: Request, next: Next) -> Response {
    let id =
        request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    REQUEST_ID.scope(id, next.run(request)).await
}

/// A handler that panicked: logged, answered 500 with the usual error body.
fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("a request handler panicked").into_response()
}

/// `routes` (pages and API) under the page deadline.
pub fn with_deadline<S: Clone + Send + Sync + 'static>(routes: Router<S>) -> Router<S> {
    routes.layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, PAGE_TIMEOUT))
}

/// `router` under the request id, trace and panic layers (outermost first: set the id, echo it,
/// trace, expose the id to the handler and the panic answer, catch panics).
pub fn around(router: Router) -> Router {
    router
        .layer(CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn(scope_request_id))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
            // Debug level: at the default `info` a span per request costs about a sixth of the
            // throughput of a trivial route; error logs name the request id themselves.
            tracing::debug_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(RandomRequestId))
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
        assert_eq!(body, serde_json::json!({"error": "no such thing", "request_id": id}));
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
