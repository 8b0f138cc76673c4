//! The bare connect-per-request reference of the budget figure: what reading one
//! patient of a random clinic costs when nothing is pooled at all. For every
//! request it opens a new connection to that clinic's database as the clinic's
//! own role (TLS verified against the stack's CA, SCRAM-SHA-256, as the worker
//! connects), runs the baseline's SELECT, closes the connection and waits for it
//! to end, then answers. It is served over HTTP by hyper in the bench process,
//! like the baseline, so the load generator drives it like every other run: `GET
//! /clinics/{i}` reads clinic `i`'s patient.

use crate::baseline::SELECT_PATIENT;
use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

/// One clinic: how to connect as its role, and the patient to read.
pub struct Clinic {
    pub config: tokio_postgres::Config,
    pub patient: Uuid,
}

struct State {
    clinics: Vec<Clinic>,
    tls: MakeRustlsConnect,
}

/// Serves on a free loopback port; call on the runtime that should run it.
pub async fn start(clinics: Vec<Clinic>, tls: MakeRustlsConnect) -> anyhow::Result<SocketAddr> {
    let state = Arc::new(State { clinics, tls });
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
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(state.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match answer(&state, &req).await {
        Ok(Some(body)) => (StatusCode::OK, body),
        Ok(None) => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found")),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from(format!("{e:#}")),
        ),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    Ok(resp)
}

async fn answer(state: &State, req: &Request<Incoming>) -> anyhow::Result<Option<Bytes>> {
    let Some(clinic) = req
        .uri()
        .path()
        .strip_prefix("/clinics/")
        .and_then(|i| i.parse::<usize>().ok())
        .and_then(|i| state.clinics.get(i))
    else {
        return Ok(None);
    };
    let (client, connection) = clinic
        .config
        .connect(state.tls.clone())
        .await
        .context("connecting as the clinic's role")?;
    let connection = tokio::spawn(connection);
    let row = client
        .query_opt(SELECT_PATIENT, &[&clinic.patient])
        .await
        .context("reading the patient")?;
    let body = row
        .map(|row| crate::baseline::patient_json(&row))
        .transpose()?;
    // Closing: the client sends Terminate when dropped, and the connection task
    // ends once the server has closed the socket.
    drop(client);
    let _ = connection.await;
    Ok(body)
}
