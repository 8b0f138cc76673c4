//! A bare reverse proxy: hyper 1 in, the same hyper client as the load generator
//! out (kept-alive, mutual TLS when the workers want it), every request forwarded
//! to one worker with the gateway's signed internal headers added and the answer
//! streamed back. No token check, no placement lookup, no header policing, no
//! metrics: what forwarding alone costs, to compare the gateway with.

use crate::load::Signer;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

type Upstream = httpkit::Client<Incoming>;
type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Hop-by-hop headers, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

struct Proxy {
    /// The worker's base URL, without a trailing slash.
    worker: String,
    client: Upstream,
    signer: Arc<Signer>,
}

/// A running bare proxy (it lives as long as the runtime it was started on).
pub struct BareProxy {
    pub addr: SocketAddr,
}

impl BareProxy {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves on a free loopback port, forwarding to `worker_url`. Call on the
/// runtime that should run the proxy.
pub async fn start(
    worker_url: &str,
    tls: Arc<rustls::ClientConfig>,
    signer: Arc<Signer>,
) -> anyhow::Result<BareProxy> {
    let settings = httpkit::ClientSettings {
        pool_idle_timeout: Some(Duration::from_secs(90)),
        pool_max_idle_per_host: Some(1024),
        public_only: false,
        ..httpkit::ClientSettings::default()
    };
    let client = httpkit::client(&settings, Some(tls));
    let proxy = Arc::new(Proxy {
        worker: worker_url.trim_end_matches('/').to_owned(),
        client,
        signer,
    });
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| forward(proxy.clone(), peer.ip(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(BareProxy { addr })
}

fn bad_gateway(message: &str) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(format!("{{\"error\":{message:?}}}")))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn forward(
    proxy: Arc<Proxy>,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = match format!("{}{path}", proxy.worker).parse() {
        Ok(uri) => uri,
        Err(e) => return Ok(bad_gateway(&e.to_string())),
    };
    parts.uri = uri;
    parts.headers.remove(HOST);
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    let mut upstream = Request::from_parts(parts, body);
    if let Err(e) = proxy.signer.sign(&mut upstream, Some(peer)) {
        return Ok(bad_gateway(&e.to_string()));
    }
    Ok(match proxy.client.request(upstream).await {
        Ok(resp) => resp.map(BodyExt::boxed),
        Err(e) => bad_gateway(&e.to_string()),
    })
}
