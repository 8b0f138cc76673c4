//! A small JSON-over-HTTP client for the demo, the tests and the bench: kept-alive
//! connections (plain, or mutual TLS to reach a worker as a gateway would), any
//! method and headers, the whole reply read at once.

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::sync::Arc;

/// A client bound to one base URL (`http://host:port`, or `https://` with TLS).
#[derive(Clone)]
pub struct Http {
    base: String,
    client: httpkit::Client<Full<Bytes>>,
}

/// A whole reply.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The pool of every `Http`: room for many idle connections to one base.
const SETTINGS: httpkit::ClientSettings = httpkit::ClientSettings {
    connect_timeout: None,
    tcp_keepalive: None,
    pool_idle_timeout: None,
    pool_max_idle_per_host: Some(256),
    public_only: false,
};

impl Http {
    /// A plain HTTP client (`https` bases are refused).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client: httpkit::client(&SETTINGS, None),
        }
    }

    /// A client that speaks TLS with `tls` to `https` bases (and plain HTTP to others).
    pub fn with_tls(base: &str, tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            client: httpkit::client(&SETTINGS, Some(tls)),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; `body` is sent as-is with `content-type: application/json`
    /// unless `headers` name another.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> anyhow::Result<Reply> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        let typed = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !typed {
            builder = builder.header("content-type", "application/json");
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let req = builder.body(Full::new(body.unwrap_or_default()))?;
        let resp = self.client.request(req).await.context("sending request")?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.context("reading reply")?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends JSON with an optional bearer token.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let body = body.map(|b| Bytes::from(serde_json::to_vec(b).unwrap_or_default()));
        self.send(method, path, &headers, body).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<Reply> {
        self.json(Method::GET, path, token, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<Reply> {
        self.json(Method::POST, path, token, Some(body)).await
    }
}
