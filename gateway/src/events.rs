//! What the gateway keeps in step with the central database through LISTEN/NOTIFY
//! ([`pgconn::notify`]): placement changes drop cache entries (`*`: every entry,
//! a region's worker moved), and users' token versions revoke their older access
//! tokens at once. After a lost connection, the placement cache is dropped and the
//! revocations are read again; while the central database is unreachable, both
//! keep their last known state.

use crate::placement::{CentralPlacements, PlacementCache, PlacementSource, CHANNEL as PLACEMENT};
use common::ClinicId;
use pgconn::revocations::Follow;
use std::sync::Arc;
use tokio_postgres::Client;

pub struct CentralEvents<S = CentralPlacements> {
    pub cache: Arc<PlacementCache<S>>,
    pub revocations: Follow,
}

impl<S: PlacementSource> pgconn::notify::Listener for CentralEvents<S> {
    fn channels(&self) -> &'static [&'static str] {
        &[PLACEMENT, pgconn::revocations::CHANNEL]
    }

    async fn resync(&self, client: &Client, first: bool) -> Result<(), tokio_postgres::Error> {
        if !first {
            self.cache.clear();
        }
        self.revocations.reload(client).await
    }

    fn notified(&self, channel: &str, payload: &str) {
        if channel == pgconn::revocations::CHANNEL {
            self.revocations.apply(payload);
        } else if payload == "*" {
            // A region's worker moved: every entry may be stale.
            self.cache.clear();
        } else if let Ok(clinic) = payload.parse::<ClinicId>() {
            self.cache.invalidate(clinic);
        }
    }
}
