//! Requests and their answers: creating rows, checking statuses and problem
//! bodies, URL encoding, tokens minted as the stack's gateway would, metrics.

use super::clinic::Clinic;
use devstack::{Http, Reply, Stack};
use serde_json::Value;

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Asserts `r` is a `status` problem+json (RFC 9457: its `status`, a `type` and a
/// `title`) and returns the body.
pub fn problem(r: &Reply, status: u16) -> Value {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.text()
    );
    let p = r.json();
    assert_eq!(p["status"], status);
    assert!(p["type"].is_string() && p["title"].is_string());
    p
}

/// Asserts `r` has status `expected` (and is problem+json when it is an error),
/// and returns the body.
pub fn status(r: &Reply, expected: u16) -> Value {
    assert_eq!(r.status.as_u16(), expected, "{}", r.text());
    if expected >= 400 {
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
    r.json()
}

/// `POST path` with `body` as the clinic's admin.
pub async fn post(http: &Http, c: &Clinic, path: &str, body: Value) -> Reply {
    http.post(path, Some(&c.token), &body).await.unwrap()
}

/// `method path` with an optional JSON body as the clinic's admin.
pub async fn send(
    http: &Http,
    c: &Clinic,
    method: http::Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    http.json(method, path, Some(&c.token), body.as_ref())
        .await
        .unwrap()
}

/// Creates a row of `resource` as the clinic's admin (`201`); the row.
pub async fn create(http: &Http, c: &Clinic, resource: &str, body: Value) -> Value {
    status(
        &post(http, c, &format!("/api/v1/{resource}"), body).await,
        201,
    )
}

/// A row's `id`.
pub fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// An access token for the clinic's admin user with `role`, signed with `stack`'s
/// gateway key (token version 1).
pub fn token_as(stack: &Stack, c: &Clinic, role: common::token::Role) -> String {
    stack
        .tokens()
        .unwrap()
        .issue(c.user_id.parse().unwrap(), c.id.parse().unwrap(), role, 1)
        .unwrap()
        .0
}

/// The Prometheus text an admin listener serves at `/metrics` (`200`).
pub async fn metrics_at(admin: std::net::SocketAddr) -> String {
    let reply = Http::new(&format!("http://{admin}"))
        .get("/metrics", None)
        .await
        .expect("metrics");
    assert_eq!(reply.status, 200);
    reply.text()
}

/// The sum of the samples of metric lines starting with `name` and containing
/// `filter` (`""`: all of them).
pub fn metric_sum(metrics: &str, name: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
