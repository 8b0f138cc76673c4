//! The worker's public listener under mutual TLS: a connection becomes a request
//! stream only once its handshake completed with a client certificate chaining to
//! `WORKER_TLS_CLIENT_CA_FILE` (the gateways' CA); anything else is refused at the
//! handshake. Handshakes run concurrently, so a slow or silent peer holds up no one.
//! The gateway's signed credential is still checked on every request on top.

use common::metric_names as m;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The settings naming the worker's certificate chain, its key, and the CA that
/// gateway client certificates must chain to.
pub const SETTINGS: [&str; 3] = [
    "WORKER_TLS_CERT_FILE",
    "WORKER_TLS_KEY_FILE",
    "WORKER_TLS_CLIENT_CA_FILE",
];

/// How long a peer may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once; past this, new connections wait in the backlog.
const MAX_HANDSHAKES: usize = 1024;

type Handshake = Option<(TlsStream<TcpStream>, SocketAddr)>;

/// A TCP listener whose accepted connections come out as completed TLS sessions.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    /// Handshakes in progress; dropped (and so aborted) with the listener.
    handshakes: JoinSet<Handshake>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

async fn handshake(acceptor: TlsAcceptor, stream: TcpStream, peer: SocketAddr) -> Handshake {
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some((tls, peer)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake refused");
            metrics::counter!(m::TLS_HANDSHAKE_FAILURES, "reason" => "refused").increment(1);
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            metrics::counter!(m::TLS_HANDSHAKE_FAILURES, "reason" => "timeout").increment(1);
            None
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    // Cancel-safe, as `axum::serve` needs: an accepted connection is handed to the
    // handshake set at once, and a finished handshake is taken only when returned.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((stream, peer)) => {
                        self.handshakes
                            .spawn(handshake(self.acceptor.clone(), stream, peer));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
