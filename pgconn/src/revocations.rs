//! Reading users' token versions from the central database into a
//! [`Revocations`] state, and keeping it current through `medicalpro_users`
//! notifications (see [`crate::notify`]).

use common::token::Revocations;
use common::UserId;
use std::sync::Arc;
use tokio_postgres::Client;

/// The channel announcing `<user id>:<version>` when a user's tokens are revoked.
pub const CHANNEL: &str = "medicalpro_users";

/// Replaces `state` with every user (and API client: the subject of its tokens)
/// whose token version changed within the last
/// `max_age_secs` (a token lifetime and some leeway: older tokens expired anyway).
pub async fn load(
    client: &Client,
    state: &Revocations,
    max_age_secs: i64,
) -> Result<(), tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, token_version FROM users \
             WHERE token_version > 1 AND token_version_at > now() - make_interval(secs => $1::float8) \
             UNION ALL \
             SELECT id, token_version FROM api_clients \
             WHERE token_version > 1 AND token_version_at > now() - make_interval(secs => $1::float8)",
            &[&(max_age_secs as f64)],
        )
        .await?;
    state.replace(
        rows.iter()
            .map(|r| (UserId::from_uuid(r.get(0)), r.get::<_, i64>(1))),
    );
    Ok(())
}

/// A [`crate::notify::Listener`] keeping `state` current.
pub struct Follow {
    pub state: Arc<Revocations>,
    /// See [`common::token::TokenVerifier::revocation_horizon_secs`].
    pub horizon_secs: i64,
}

impl Follow {
    /// Reads the state afresh (a first connection or a reconnect).
    pub async fn reload(&self, client: &Client) -> Result<(), tokio_postgres::Error> {
        load(client, &self.state, self.horizon_secs).await
    }

    /// Applies a `medicalpro_users` payload.
    pub fn apply(&self, payload: &str) {
        if !self.state.apply(payload) {
            tracing::warn!("malformed token revocation notification");
        }
    }
}

impl crate::notify::Listener for Follow {
    fn channels(&self) -> &'static [&'static str] {
        &[CHANNEL]
    }

    async fn resync(&self, client: &Client, _first: bool) -> Result<(), tokio_postgres::Error> {
        self.reload(client).await
    }

    fn notified(&self, _channel: &str, payload: &str) {
        self.apply(payload);
    }
}
