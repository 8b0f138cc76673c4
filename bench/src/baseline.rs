//! The baseline: a bare in-process server — hyper 1 over HTTP/1.1 and a few
//! pipelining tokio-postgres connections picked round-robin — serving
//! `GET /patients/{id}` from the same clinic database the product reads, with one
//! prepared statement and a JSON answer. No auth, no audit, no proxy hop: it is the
//! lower bound of what such a read costs on this machine.

use anyhow::Context;
use bytes::Bytes;
use chrono::NaiveDate;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_postgres::{Client, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

pub const SELECT_PATIENT: &str = "SELECT id, first_name, last_name, email, phone, birth_date \
                              FROM patients WHERE id = $1 AND deleted_at IS NULL";

/// One connection and its prepared statement.
struct Conn {
    client: Client,
    select: Statement,
}

/// A fixed set of connections used round-robin; tokio-postgres pipelines the
/// queries of concurrent requests on each.
struct Db {
    conns: Vec<Conn>,
    next: AtomicUsize,
}

impl Db {
    async fn connect(
        config: &tokio_postgres::Config,
        tls: MakeRustlsConnect,
        n: usize,
    ) -> anyhow::Result<Self> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let (client, connection) = config
                .connect(tls.clone())
                .await
                .context("connecting the baseline to the clinic database")?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            let select = client.prepare(SELECT_PATIENT).await?;
            conns.push(Conn { client, select });
        }
        Ok(Self {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    fn pick(&self) -> Option<&Conn> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns.get(i % self.conns.len().max(1))
    }
}

/// A running baseline server (it lives as long as the runtime it was started on).
pub struct Baseline {
    pub addr: SocketAddr,
}

impl Baseline {
    pub fn url(&self, patient: Uuid) -> String {
        format!("http://{}/patients/{patient}", self.addr)
    }
}

/// Connects `conns` connections with `config` and serves on a free loopback port.
/// Call on the runtime that should run the server.
pub async fn start(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    conns: usize,
) -> anyhow::Result<Baseline> {
    let db = Arc::new(Db::connect(&config, tls, conns).await?);
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let db = db.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(db.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Baseline { addr })
}

async fn handle(db: Arc<Db>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = answer(&db, &req).await;
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

fn error(status: StatusCode, message: &str) -> (StatusCode, Bytes) {
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    (status, Bytes::from(body))
}

async fn answer(db: &Db, req: &Request<Incoming>) -> (StatusCode, Bytes) {
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let Some(id) = req
        .uri()
        .path()
        .strip_prefix("/patients/")
        .and_then(|raw| Uuid::parse_str(raw).ok())
    else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    let Some(conn) = db.pick() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no connection");
    };
    match conn.client.query_opt(&conn.select, &[&id]).await {
        Ok(Some(row)) => match patient_json(&row) {
            Ok(body) => (StatusCode::OK, body),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        Ok(None) => error(StatusCode::NOT_FOUND, "not found"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

pub fn patient_json(row: &Row) -> anyhow::Result<Bytes> {
    let id: Uuid = row.try_get(0)?;
    let first_name: String = row.try_get(1)?;
    let last_name: String = row.try_get(2)?;
    let email: Option<String> = row.try_get(3)?;
    let phone: Option<String> = row.try_get(4)?;
    let birth_date: Option<NaiveDate> = row.try_get(5)?;
    let value = json!({
        "id": id,
        "first_name": first_name,
        "last_name": last_name,
        "email": email,
        "phone": phone,
        "birth_date": birth_date.map(|d| d.format("%Y-%m-%d").to_string()),
    });
    Ok(Bytes::from(serde_json::to_vec(&value)?))
}
