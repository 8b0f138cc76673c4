//! Request observation, written once for both services: [`Observed`] wraps a
//! service (an axum `Router`, a route) and, for every request,
//!
//! 1. takes its request id by the service's rule ([`Observer::request_id`]: the
//!    gateway sanitises the client's or makes one, the worker trusts the gateway's),
//! 2. opens the `request` span (`request_id`, `method`, `route` class, and `clinic`
//!    and `user` left empty for the service to record once a token names them) at
//!    error level, so that it is on whenever any line of the request is logged —
//!    never the query string, a header value or a body,
//! 3. runs the inner service under a panic guard: a bug costs one request the
//!    service's own `500` problem+json ([`Observer::panicked`]), never the
//!    connection or the process,
//! 4. puts the request id back on the answer as `x-request-id` where the service
//!    wants it ([`Observer::ECHO_REQUEST_ID`]),
//! 5. records the time to the answer head in `medicalpro_http_request_duration_seconds`
//!    with the labels `component`, `route` (class), `status` (class) and, for services
//!    that label it, `endpoint` ([`Observer::endpoint`]), and logs one `request` line
//!    with the status and duration ([`Observer::finished`], written with
//!    [`request_line!`](crate::request_line) in the service's own crate so that the
//!    line keeps the service's log target).
//!
//! Nothing is boxed and response bodies are not wrapped: the answer's body streams
//! as the inner service produced it, and [`ObserveFuture`] is a plain state machine.

use common::metric_names as m;
use common::RequestId;
use futures_util::future::CatchUnwind;
use futures_util::FutureExt;
use http::header::HeaderValue;
use http::{Request, Response};
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service};
use tracing::instrument::Instrumented;
use tracing::{Instrument, Span};

/// What one service says about its requests; the rest of the observation is shared.
pub trait Observer {
    /// The `component` label (`gateway`, `worker`).
    const COMPONENT: &'static str;
    /// Whether answers carry the request id back as `x-request-id`.
    const ECHO_REQUEST_ID: bool = false;
    /// The body of the observed service's answers.
    type Body;

    /// The request's id by the service's rule; `None` when there is none to trust.
    fn request_id<B>(&self, req: &Request<B>) -> Option<RequestId>;

    /// The route class of a request: the `route` label of the metric and the span
    /// (a fixed, small set of values).
    fn route<B>(&self, req: &Request<B>) -> &'static str;

    /// Called once the span is open, just before the inner service: hands the
    /// request id on (the gateway puts it in the request's context). By default the
    /// id is dropped.
    fn admit<B>(&self, req: &mut Request<B>, request_id: Option<RequestId>) {
        let _ = (req, request_id);
    }

    /// The `endpoint` label of an answer; `None` (the default) leaves the label out
    /// of the service's series altogether.
    fn endpoint(response: &Response<Self::Body>) -> Option<&'static str> {
        let _ = response;
        None
    }

    /// The answer to a request whose handler panicked, made inside its span: the
    /// service's `500` problem+json, rendered as its other errors are.
    fn panicked() -> Response<Self::Body>;

    /// Logs the request's last line, inside its span: implemented in the service's
    /// own crate with [`request_line!`](crate::request_line), so that the line has
    /// the service's log target (`RUST_LOG=gateway=…` and log queries select by it).
    fn finished(status: http::StatusCode, elapsed: Duration);
}

/// The one `request` line of a finished request (`status`, `duration_ms`), logged
/// at info level with the log target of the module it is written in: the body of
/// every [`Observer::finished`].
#[macro_export]
macro_rules! request_line {
    ($status:expr, $elapsed:expr) => {
        $crate::__tracing::info!(
            status = $status.as_u16(),
            duration_ms = $elapsed.as_secs_f64() * 1000.0,
            "request"
        )
    };
}

/// Wraps every service of a router in [`Observed`] (`Router::layer`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ObserveLayer<O> {
    observer: O,
}

impl<O> ObserveLayer<O> {
    pub fn new(observer: O) -> Self {
        Self { observer }
    }
}

impl<S, O: Clone> Layer<S> for ObserveLayer<O> {
    type Service = Observed<S, O>;

    fn layer(&self, inner: S) -> Self::Service {
        Observed::new(inner, self.observer.clone())
    }
}

/// A service whose every request is observed (see the [module](self)).
#[derive(Clone, Copy, Debug)]
pub struct Observed<S, O> {
    inner: S,
    observer: O,
}

impl<S, O> Observed<S, O> {
    pub fn new(inner: S, observer: O) -> Self {
        Self { inner, observer }
    }
}

impl<S, O, B> Service<Request<B>> for Observed<S, O>
where
    S: Service<Request<B>, Response = Response<O::Body>>,
    O: Observer,
{
    type Response = Response<O::Body>;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future, O>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let request_id = self.observer.request_id(&req);
        let echo = if O::ECHO_REQUEST_ID {
            request_id
                .as_ref()
                .and_then(|id| HeaderValue::from_str(id.as_str()).ok())
        } else {
            None
        };
        let route = self.observer.route(&req);
        let span = tracing::error_span!(
            "request",
            request_id = request_id.as_ref().map(RequestId::as_str),
            method = %req.method(),
            route,
            clinic = tracing::field::Empty,
            user = tracing::field::Empty,
        );
        self.observer.admit(&mut req, request_id);
        let inner = &mut self.inner;
        // A panic before the future exists (in the service's `call`) is caught too.
        let state = match std::panic::catch_unwind(AssertUnwindSafe(move || inner.call(req))) {
            Ok(future) => State::Running {
                future: AssertUnwindSafe(future)
                    .catch_unwind()
                    .instrument(span.clone()),
            },
            Err(_) => State::Panicked,
        };
        ObserveFuture {
            state,
            span,
            started,
            route,
            echo,
            observer: PhantomData,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of an [`Observed`] request: the inner future under the panic
    /// guard and in the span, then the answer finished and measured.
    pub struct ObserveFuture<F, O> {
        #[pin]
        state: State<F>,
        span: Span,
        started: Instant,
        route: &'static str,
        echo: Option<HeaderValue>,
        observer: PhantomData<fn() -> O>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] future: Instrumented<CatchUnwind<AssertUnwindSafe<F>>> },
        Panicked,
    }
}

impl<F, O, E> Future for ObserveFuture<F, O>
where
    F: Future<Output = Result<Response<O::Body>, E>>,
    O: Observer,
{
    type Output = Result<Response<O::Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.state.project() {
            StateProj::Running { future } => match ready!(future.poll(cx)) {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_) => this.span.in_scope(O::panicked),
            },
            StateProj::Panicked => this.span.in_scope(O::panicked),
        };
        if let Some(id) = this.echo.take() {
            response
                .headers_mut()
                .insert(common::internal::HEADER_REQUEST_ID, id);
        }
        let elapsed = this.started.elapsed();
        let status = m::status_class(response.status().as_u16());
        let route = *this.route;
        let histogram = match O::endpoint(&response) {
            Some(endpoint) => metrics::histogram!(
                m::HTTP_REQUEST_DURATION,
                "component" => O::COMPONENT,
                "route" => route,
                "status" => status,
                "endpoint" => endpoint
            ),
            None => metrics::histogram!(
                m::HTTP_REQUEST_DURATION,
                "component" => O::COMPONENT,
                "route" => route,
                "status" => status
            ),
        };
        histogram.record(elapsed.as_secs_f64());
        this.span
            .in_scope(|| O::finished(response.status(), elapsed));
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::problem::Problem;
    use metrics::{
        Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString,
        Unit,
    };
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};
    use tower::{service_fn, ServiceExt};

    /// The request id as the observer admitted it, seen by the inner service.
    #[derive(Clone, Debug, PartialEq)]
    struct Admitted(Option<RequestId>);

    /// The label an inner service puts on its answer for `endpoint`.
    #[derive(Clone, Copy)]
    struct Endpoint(&'static str);

    /// A gateway-like observer: the client's id when sane, else a new one, echoed.
    #[derive(Clone)]
    struct Edge;

    impl Observer for Edge {
        const COMPONENT: &'static str = "edge";
        const ECHO_REQUEST_ID: bool = true;
        type Body = String;

        fn request_id<B>(&self, req: &Request<B>) -> Option<RequestId> {
            Some(
                req.headers()
                    .get(common::internal::HEADER_REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .and_then(RequestId::parse)
                    .unwrap_or_else(RequestId::generate),
            )
        }

        fn route<B>(&self, req: &Request<B>) -> &'static str {
            if req.uri().path().starts_with("/api/") {
                "api"
            } else {
                "other"
            }
        }

        fn admit<B>(&self, req: &mut Request<B>, request_id: Option<RequestId>) {
            req.extensions_mut().insert(Admitted(request_id));
        }

        fn endpoint(response: &Response<String>) -> Option<&'static str> {
            Some(response.extensions().get::<Endpoint>().map_or("", |e| e.0))
        }

        fn panicked() -> Response<String> {
            let problem = Problem::internal();
            let mut r = Response::new(String::from_utf8_lossy(&problem.to_json()).into_owned());
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(common::problem::CONTENT_TYPE),
            );
            r
        }

        fn finished(status: http::StatusCode, elapsed: Duration) {
            crate::request_line!(status, elapsed);
        }
    }

    /// A worker-like observer: the id only when sent, no echo, no `endpoint`.
    #[derive(Clone)]
    struct Inner;

    impl Observer for Inner {
        const COMPONENT: &'static str = "inner";
        type Body = String;

        fn request_id<B>(&self, req: &Request<B>) -> Option<RequestId> {
            req.headers()
                .get(common::internal::HEADER_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .and_then(RequestId::parse)
        }

        fn route<B>(&self, _: &Request<B>) -> &'static str {
            "read"
        }

        fn admit<B>(&self, req: &mut Request<B>, request_id: Option<RequestId>) {
            req.extensions_mut().insert(Admitted(request_id));
        }

        fn panicked() -> Response<String> {
            Edge::panicked()
        }

        fn finished(status: http::StatusCode, elapsed: Duration) {
            crate::request_line!(status, elapsed);
        }
    }

    type Recorded = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

    /// Histograms recorded, by name and labels.
    #[derive(Default)]
    struct Capture(Recorded);

    struct Record(Key, Recorded);

    impl HistogramFn for Record {
        fn record(&self, _: f64) {
            let labels = self
                .0
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            if let Ok(mut seen) = self.1.lock() {
                seen.push((self.0.name().to_owned(), labels));
            }
        }
    }

    impl Recorder for Capture {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(Arc::new(Record(key.clone(), self.0.clone())))
        }
    }

    /// Runs `f` to completion on this thread with `recorder` as the metrics
    /// recorder.
    fn run<T>(recorder: &Capture, f: impl Future<Output = T>) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        metrics::with_local_recorder(recorder, || rt.block_on(f))
    }

    fn request(path: &str, id: Option<&str>) -> Request<()> {
        let mut b = Request::get(path);
        if let Some(id) = id {
            b = b.header(common::internal::HEADER_REQUEST_ID, id);
        }
        b.body(()).unwrap()
    }

    /// Answers with the admitted request id in its body.
    async fn echo_admitted(req: Request<()>) -> Result<Response<String>, Infallible> {
        let admitted = req.extensions().get::<Admitted>().cloned();
        let body = match admitted {
            Some(Admitted(Some(id))) => id.as_str().to_owned(),
            Some(Admitted(None)) => "none".to_owned(),
            None => "not admitted".to_owned(),
        };
        let mut r = Response::new(body);
        r.extensions_mut().insert(Endpoint("/api/x"));
        Ok(r)
    }

    #[test]
    fn request_id_reaches_the_service_and_the_answer() {
        let rec = Capture::default();
        let sane = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
        let response = run(
            &rec,
            Observed::new(service_fn(echo_admitted), Edge).oneshot(request("/api/x", Some(sane))),
        )
        .unwrap();
        assert_eq!(response.body(), sane);
        assert_eq!(response.headers()["x-request-id"], sane);

        // A header that is not a sane id is replaced by a fresh one, used throughout.
        let response = run(
            &rec,
            Observed::new(service_fn(echo_admitted), Edge)
                .oneshot(request("/api/x", Some("bad id; \"quoted\""))),
        )
        .unwrap();
        let made = response.headers()["x-request-id"].to_str().unwrap();
        assert!(RequestId::parse(made).is_some(), "{made}");
        assert_eq!(response.body(), made);
    }

    #[test]
    fn the_worker_rule_trusts_only_a_sent_id_and_echoes_nothing() {
        let rec = Capture::default();
        let sane = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
        let response = run(
            &rec,
            Observed::new(service_fn(echo_admitted), Inner).oneshot(request("/x", Some(sane))),
        )
        .unwrap();
        assert_eq!(response.body(), sane);
        assert!(response.headers().get("x-request-id").is_none());
        let response = run(
            &rec,
            Observed::new(service_fn(echo_admitted), Inner).oneshot(request("/x", None)),
        )
        .unwrap();
        assert_eq!(response.body(), "none");
    }

    fn assert_internal_problem(response: &Response<String>) {
        assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[http::header::CONTENT_TYPE],
            common::problem::CONTENT_TYPE
        );
        assert_eq!(response.body().as_bytes(), Problem::internal().to_json());
    }

    #[test]
    fn a_panic_is_the_services_500_problem() {
        let rec = Capture::default();
        let sane = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
        // In the handler's future.
        let panics_later = service_fn(|_: Request<()>| async {
            if true {
                panic!("a bug");
            }
            Ok::<_, Infallible>(Response::new(String::new()))
        });
        let response = run(
            &rec,
            Observed::new(panics_later, Edge).oneshot(request("/api/x", Some(sane))),
        )
        .unwrap();
        assert_internal_problem(&response);
        assert_eq!(response.headers()["x-request-id"], sane);

        // In the service's `call`, before any future exists.
        let panics_now = service_fn(
            |_: Request<()>| -> std::future::Ready<Result<Response<String>, Infallible>> {
                panic!("a bug")
            },
        );
        let response = run(
            &rec,
            Observed::new(panics_now, Inner).oneshot(request("/x", None)),
        )
        .unwrap();
        assert_internal_problem(&response);

        let seen = rec.0.lock().unwrap().clone();
        let statuses: Vec<_> = seen
            .iter()
            .map(|(_, labels)| labels.iter().find(|(k, _)| k == "status").cloned())
            .collect();
        assert_eq!(
            statuses,
            vec![Some(("status".into(), "5xx".into())); 2],
            "both panics counted as 5xx"
        );
    }

    #[test]
    fn the_duration_is_recorded_with_the_services_labels() {
        let rec = Capture::default();
        run(
            &rec,
            Observed::new(service_fn(echo_admitted), Edge).oneshot(request("/api/x", None)),
        )
        .unwrap();
        run(
            &rec,
            Observed::new(service_fn(echo_admitted), Inner).oneshot(request("/x", None)),
        )
        .unwrap();
        let not_found = service_fn(|_: Request<()>| async {
            let mut r = Response::new(String::new());
            *r.status_mut() = http::StatusCode::NOT_FOUND;
            Ok::<_, Infallible>(r)
        });
        run(
            &rec,
            Observed::new(not_found, Edge).oneshot(request("/", None)),
        )
        .unwrap();

        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let seen = rec.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (
                    m::HTTP_REQUEST_DURATION.to_owned(),
                    pairs(&[
                        ("component", "edge"),
                        ("route", "api"),
                        ("status", "2xx"),
                        ("endpoint", "/api/x")
                    ])
                ),
                (
                    m::HTTP_REQUEST_DURATION.to_owned(),
                    pairs(&[("component", "inner"), ("route", "read"), ("status", "2xx")])
                ),
                (
                    m::HTTP_REQUEST_DURATION.to_owned(),
                    pairs(&[
                        ("component", "edge"),
                        ("route", "other"),
                        ("status", "4xx"),
                        ("endpoint", "")
                    ])
                ),
            ]
        );
    }

    /// The layer form wraps a service the same way.
    #[test]
    fn the_layer_wraps_a_service() {
        let rec = Capture::default();
        let svc = ObserveLayer::new(Edge).layer(service_fn(echo_admitted));
        let response = run(&rec, svc.oneshot(request("/api/x", None))).unwrap();
        assert!(response.headers().get("x-request-id").is_some());
        assert_eq!(rec.0.lock().unwrap().len(), 1);
    }
}
