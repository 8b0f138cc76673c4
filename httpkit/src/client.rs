//! The one hyper client builder: [`client`] gives a kept-alive, pooled
//! `hyper_util` client whose connections set `TCP_NODELAY`, speaking plain HTTP to
//! `http` URLs and, when given a rustls configuration, TLS (through hyper-rustls)
//! to `https` ones. Without a configuration an `https` URL is refused before any
//! connection is made. Pool and socket settings are the caller's
//! ([`ClientSettings`]); what is not set keeps hyper's default.
//!
//! A client for addresses users give (webhook receivers) sets
//! [`ClientSettings::public_only`]: host names are resolved by [`Resolver`], which
//! drops every address that is not public (loopback, private, link-local, …), at
//! connection time, so a name that resolves to an internal address later (DNS
//! rebinding) is refused too. IP literals skip resolution: check them with
//! [`is_public`] before sending.

use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
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
    /// Connect only to public addresses (see the module docs).
    pub public_only: bool,
}

/// Whether `ip` is a public unicast address: not loopback, private, shared
/// (100.64/10), link-local, unique-local, multicast, broadcast, unspecified,
/// documentation, benchmarking or reserved; an IPv4-mapped IPv6 address is
/// judged as its IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 192 && b == 88 && c == 99))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let first = segments[0];
            // ::/96 (IPv4-compatible) and ::ffff:0:0:0/96 (IPv4-translated).
            let embeds_v4 = (segments[..5] == [0; 5] && segments[5] == 0)
                || (segments[..4] == [0; 4] && segments[4] == 0xffff && segments[5] == 0);
            !(v6.is_loopback()
                || embeds_v4
                || (first & 0xffc0) == 0xfec0
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                || first == 0x0064)
        }
    }
}

/// Resolves host names for a [`client`] with the system resolver, keeping only
/// public addresses when asked to ([`ClientSettings::public_only`]).
#[derive(Clone, Copy, Debug)]
pub struct Resolver {
    public_only: bool,
}

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let public_only = self.public_only;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| !public_only || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{name} resolves to no public address"),
                ));
            }
            Ok(found.into_iter())
        })
    }
}

/// A kept-alive client: `http` URLs in plain HTTP, `https` ones under `tls` (its
/// roots, its client certificate if any); without `tls`, `https` URLs are refused.
pub fn client<B>(settings: &ClientSettings, tls: Option<Arc<rustls::ClientConfig>>) -> Client<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new_with_resolver(Resolver {
        public_only: settings.public_only,
    });
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
    Plain(HttpConnector<Resolver>),
    Tls(HttpsConnector<HttpConnector<Resolver>>),
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

#[cfg(test)]
mod tests {
    use super::is_public;

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
            "fec0::1",
            "::7f00:1",
            "::ffff:0:7f00:1",
            "192.88.99.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "193.51.24.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
