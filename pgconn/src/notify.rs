//! Fleet-wide invalidation over the central database's LISTEN/NOTIFY: one kept
//! connection per process listens on the channels its [`Listener`] names, hands
//! every notification to it, and after any reconnect asks it to read its state
//! again (notifications sent while the connection was down are lost). While the
//! central database is unreachable the listener keeps its last known state.

use common::config::DbSettings;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, Client};
use tokio_util::sync::CancellationToken;

/// What a process keeps in step with the central database.
pub trait Listener: Send + Sync + 'static {
    /// The channels to LISTEN on.
    fn channels(&self) -> &'static [&'static str];
    /// Reads the state afresh, once LISTEN is in place: at the first connection
    /// (`first`) and after every reconnect.
    fn resync(
        &self,
        client: &Client,
        first: bool,
    ) -> impl Future<Output = Result<(), tokio_postgres::Error>> + Send;
    /// One notification.
    fn notified(&self, channel: &str, payload: &str);
}

type Notifications = tokio::sync::mpsc::UnboundedReceiver<Option<(String, String)>>;

/// Connects, LISTENs and resyncs once; the first state is in place when this
/// returns. Then [`run`] keeps it up to date.
pub async fn start<L: Listener>(
    settings: &DbSettings,
    application: &str,
    listener: &L,
) -> Result<Connected, tokio_postgres::Error> {
    connect(settings, application, listener, true).await
}

/// A listening connection.
pub struct Connected {
    client: Client,
    rx: Notifications,
    driver: tokio::task::JoinHandle<()>,
}

async fn connect<L: Listener>(
    settings: &DbSettings,
    application: &str,
    listener: &L,
    first: bool,
) -> Result<Connected, tokio_postgres::Error> {
    let (client, mut connection) = crate::config(settings, application)
        .connect(crate::tls_connector(settings))
        .await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let message = (n.channel().to_owned(), n.payload().to_owned());
                    if tx.send(Some(message)).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    let _ = tx.send(None);
                    return;
                }
            }
        }
    });
    let listen: Vec<String> = listener
        .channels()
        .iter()
        .map(|c| format!("LISTEN {c};"))
        .collect();
    let ready = async {
        client.batch_execute(&listen.concat()).await?;
        listener.resync(&client, first).await
    }
    .await;
    match ready {
        Ok(()) => Ok(Connected { client, rx, driver }),
        Err(e) => {
            driver.abort();
            Err(e)
        }
    }
}

/// Delivers notifications until `shutdown`, reconnecting with backoff (and
/// resyncing) whenever the connection is lost.
pub async fn run<L: Listener>(
    mut connected: Connected,
    settings: DbSettings,
    application: String,
    listener: Arc<L>,
    shutdown: CancellationToken,
) {
    loop {
        let lost = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break false,
                msg = connected.rx.recv() => match msg {
                    Some(Some((channel, payload))) => listener.notified(&channel, &payload),
                    _ => break true,
                },
            }
        };
        connected.driver.abort();
        drop(connected.client);
        if !lost {
            return;
        }
        tracing::warn!("central notifications lost; reconnecting");
        let mut backoff = Duration::from_millis(200);
        connected = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            match connect(&settings, &application, listener.as_ref(), false).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "central notifications: reconnect failed");
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
    }
}
