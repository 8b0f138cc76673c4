//! The one hyper client builder: [`client`] gives a kept-alive, pooled
//! `hyper_util` client whose connections set `TCP_NODELAY`, speaking plain HTTP to
//! `http` URLs and, when given a rustls configuration, TLS (through hyper-rustls)
//! to `https` ones. Without a configuration an `https` URL is refused before any
//! connection is made. Pool and socket settings are the caller's
//! ([`ClientSettings`]); what is not set keeps hyper's default.

use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client every crate builds here: bodies of type `B` sent, `Incoming` read.
pub type Client<B> = hyper_util::client::legacy::Client<Connector, B>;

/// Pool and socket settings of a [`client`]; `None` keeps hyper's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientSettings {
    /// How long a TCP connect may take.
    pub connect_timeout: Option<Duration>,
    /// TCP keep-alive probes' idle time.
    pub tcp_keepalive: Option<Duration>,
    /// How long an idle pooled connection is kept (hyper: 90 s).
    pub pool_idle_timeout: Option<Duration>,
    /// How many idle connections are kept per host (hyper: no limit).
    pub pool_max_idle_per_host: Option<usize>,
}

/// A kept-alive client: `http` URLs in plain HTTP, `https` ones under `tls` (its
/// roots, its client certificate if any); without `tls`, `https` URLs are refused.
pub fn client<B>(settings: &ClientSettings, tls: Option<Arc<rustls::ClientConfig>>) -> Client<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(settings.connect_timeout);
    http.set_keepalive(settings.tcp_keepalive);
    let connector = match tls {
        Some(tls) => {
            http.enforce_http(false);
            Connector(Inner::Tls(HttpsConnector::from((http, tls))))
        }
        None => Connector(Inner::Plain(http)),
    };
    let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    if let Some(idle) = settings.pool_idle_timeout {
        builder.pool_idle_timeout(idle);
    }
    if let Some(n) = settings.pool_max_idle_per_host {
        builder.pool_max_idle_per_host(n);
    }
    builder.build(connector)
}

/// The connector of a [`client`]: plain TCP, or TLS for `https` URLs when the
/// client was given a rustls configuration. Called for new connections only.
#[derive(Clone, Debug)]
pub struct Connector(Inner);

#[derive(Clone, Debug)]
enum Inner {
    Plain(HttpConnector),
    Tls(HttpsConnector<HttpConnector>),
}

type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

impl tower::Service<http::Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.0 {
            Inner::Plain(c) => c.poll_ready(cx).map_err(Into::into),
            Inner::Tls(c) => c.poll_ready(cx),
        }
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        match &mut self.0 {
            Inner::Plain(c) => {
                // Refuses `https` URLs itself (`enforce_http`).
                let connecting = c.call(uri);
                Box::pin(async move { Ok(MaybeHttpsStream::Http(connecting.await?)) })
            }
            Inner::Tls(c) => c.call(uri),
        }
    }
}
