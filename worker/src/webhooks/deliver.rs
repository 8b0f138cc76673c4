//! The deliverer: one task per worker sends the pending deliveries of its
//! region's clinics.
//!
//! - Which clinics: those in the central `webhook_clinics` of this region
//!   (loaded at start and every `WEBHOOK_SWEEP_SECS`; each one passed over once
//!   when first seen), woken at once after a write in them ([`super::wake`]),
//!   and again when a retry falls due.
//! - A pass over a clinic leases each subscription with deliveries pending (two
//!   workers never deliver one subscription at once) and sends its deliveries in
//!   event order. A delivery is `POST`ed with the event, signed with the
//!   subscription's secret (`webhook-id` is the event's id, the same on every
//!   retry); a `2xx` within `WEBHOOK_TIMEOUT_SECS` delivers it, anything else
//!   schedules a retry after `WEBHOOK_RETRY_BASE_MS` × 4^(attempts − 1), at most
//!   `WEBHOOK_RETRY_MAX_SECS`, and holds back the subscription's later events (in
//!   order, at least once). A subscription failing for longer than
//!   `WEBHOOK_DISABLE_AFTER_SECS` is disabled with the reason on it.
//! - The object in a delivery is read when it is sent, through the data layer
//!   as the subscription's role sees it (restricted fields left out for staff),
//!   and that read is audited under the subscription's id; an erased patient's
//!   event carries no object.
//! - At most `WEBHOOK_CONCURRENCY` clinics are passed over at once; events older
//!   than `WEBHOOK_RETENTION_DAYS` are pruned (a replay reaches back that far).

use super::api::SECRET_COLUMN;
use super::target;
use super::wake::Hooks;
use crate::budget::Conn;
use crate::config::WebhookSettings as Settings;
use crate::data::{self, Action, Actor, Audit};
use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use crate::registry::Registry;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use common::crypto::{sealed_key_id, FieldContext};
use common::metric_names as m;
use common::resource::{self, Resource, WEBHOOK_SUBSCRIPTIONS};
use common::token::Role;
use common::ClinicId;
use http_body_util::Full;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Deliveries sent per subscription in one pass before others get a turn.
const BATCH: usize = 50;
/// A pass over one clinic sends no more after this long (the others get a turn).
const PASS_BUDGET: Duration = Duration::from_secs(60);
/// A clinic's old events are pruned at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

type Client = httpkit::Client<Full<Bytes>>;

/// What a pass over one clinic needs.
struct Pass {
    registry: Arc<Registry>,
    client: Client,
    settings: Settings,
    /// This deliverer's id, on the leases it holds.
    owner: Uuid,
}

/// The earliest of two optional instants.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Runs until `shutdown`: see the module docs.
pub async fn run(
    registry: Arc<Registry>,
    hooks: Arc<Hooks>,
    settings: Settings,
    mut wake: mpsc::UnboundedReceiver<ClinicId>,
    shutdown: CancellationToken,
) {
    let tls = match common::tls::public_web_client() {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!(error = %e, "webhook deliveries are off: no TLS client");
            return;
        }
    };
    let client_settings = httpkit::ClientSettings {
        connect_timeout: Some(settings.timeout),
        tcp_keepalive: None,
        pool_idle_timeout: Some(Duration::from_secs(30)),
        pool_max_idle_per_host: Some(2),
        public_only: !settings.allow_private,
    };
    let pass = Arc::new(Pass {
        registry: registry.clone(),
        client: httpkit::client(&client_settings, Some(tls)),
        settings,
        owner: Uuid::new_v4(),
    });
    let mut due: HashMap<ClinicId, Instant> = HashMap::new();
    let mut seen: HashSet<ClinicId> = HashSet::new();
    let mut running: HashSet<ClinicId> = HashSet::new();
    let mut again: HashSet<ClinicId> = HashSet::new();
    let mut pruned: HashMap<ClinicId, Instant> = HashMap::new();
    let mut tasks: JoinSet<(ClinicId, Result<Option<Instant>, WorkerError>)> = JoinSet::new();
    let mut sweep_at = Instant::now();
    loop {
        let now = Instant::now();
        let ready: Vec<ClinicId> = due
            .iter()
            .filter(|(c, at)| **at <= now && !running.contains(c))
            .map(|(c, _)| *c)
            .take(settings.concurrency.saturating_sub(running.len()))
            .collect();
        for clinic in ready {
            due.remove(&clinic);
            running.insert(clinic);
            let prune = pruned
                .get(&clinic)
                .is_none_or(|at| now.duration_since(*at) >= PRUNE_EVERY);
            if prune {
                pruned.insert(clinic, now);
            }
            let pass = pass.clone();
            tasks.spawn(async move { (clinic, pass.clinic(clinic, prune).await) });
        }
        let next_due = due
            .iter()
            .filter(|(c, _)| !running.contains(c))
            .map(|(_, at)| *at)
            .min();
        let timer = next_due.map_or(sweep_at, |at| at.min(sweep_at));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            woken = wake.recv() => {
                let Some(clinic) = woken else { break };
                if running.contains(&clinic) {
                    again.insert(clinic);
                } else {
                    due.insert(clinic, Instant::now());
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok((clinic, outcome)) = done else { continue };
                running.remove(&clinic);
                let next = match outcome {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(%clinic, error = %e, "webhook deliveries failed; trying again later");
                        Some(Instant::now() + settings.sweep)
                    }
                };
                let next = if again.remove(&clinic) { Some(Instant::now()) } else { next };
                if let Some(at) = earliest(next, due.get(&clinic).copied()) {
                    due.insert(clinic, at);
                }
            }
            _ = tokio::time::sleep_until(timer) => {
                if Instant::now() >= sweep_at {
                    sweep_at = Instant::now() + settings.sweep;
                    match subscribed_clinics(&registry).await {
                        Ok(clinics) => {
                            for clinic in &clinics {
                                if seen.insert(*clinic) {
                                    due.entry(*clinic).or_insert_with(Instant::now);
                                }
                            }
                            seen.retain(|c| clinics.contains(c));
                            due.retain(|c, _| clinics.contains(c));
                            hooks.replace(clinics);
                        }
                        Err(e) => tracing::warn!(error = %e, "could not list the clinics with webhooks"),
                    }
                }
            }
        }
    }
    tasks.shutdown().await;
}

/// This region's clinics with webhook subscriptions.
async fn subscribed_clinics(registry: &Registry) -> Result<HashSet<ClinicId>, WorkerError> {
    let central = registry.central().get().await?;
    let rows = central
        .query(
            "SELECT w.clinic_id FROM webhook_clinics w JOIN companies c ON c.id = w.clinic_id \
             WHERE c.region = $1 AND c.status IN ('active', 'relocating')",
            &[&registry.region()],
        )
        .await
        .map_err(WorkerError::from_db)?;
    Ok(rows.iter().map(|r| ClinicId::from_uuid(r.get(0))).collect())
}

/// A subscription leased for a pass.
struct Subscription {
    id: Uuid,
    url: String,
    role: Role,
    secret: Vec<u8>,
}

/// The head of a subscription's queue.
struct Head {
    seq: i64,
    attempts: i32,
    wait_secs: f64,
    event_id: Uuid,
    kind: String,
    table: String,
    row: Uuid,
    occurred_at: DateTime<Utc>,
}

/// Why a delivery did not succeed.
struct Failure {
    status: Option<u16>,
    error: String,
}

fn db(e: tokio_postgres::Error) -> WorkerError {
    WorkerError::from_db(e)
}

/// Runs `text` in a transaction of its own that commits without waiting for the
/// disk: the lease's bookkeeping, which a crash may lose (a lost lease expires).
async fn lazily(
    conn: &mut Conn,
    text: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, WorkerError> {
    let tx = conn.transaction().await.map_err(db)?;
    tx.batch_execute("SET LOCAL synchronous_commit TO off")
        .await
        .map_err(db)?;
    let rows = tx.query(text, params).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(rows)
}

/// Disables a subscription, `reason` on it.
async fn disable(
    conn: &impl deadpool_postgres::GenericClient,
    id: Uuid,
    reason: &str,
) -> Result<(), WorkerError> {
    tracing::warn!(subscription = %id, reason, "webhook subscription disabled");
    metrics::counter!(m::WEBHOOK_DISABLED).increment(1);
    conn.execute(
        "UPDATE webhook_subscriptions SET enabled = false, disabled_at = now(), \
                disabled_reason = $2, updated_at = now() WHERE id = $1",
        &[&id, &reason],
    )
    .await
    .map_err(db)?;
    Ok(())
}

impl Pass {
    fn lease_secs(&self) -> f64 {
        self.settings.timeout.as_secs_f64() + 30.0
    }

    /// One pass over `clinic`: when to come back (`None`: nothing left).
    async fn clinic(&self, clinic: ClinicId, prune: bool) -> Result<Option<Instant>, WorkerError> {
        let (mut conn, keys) = self.registry.session(clinic).await?;
        if prune {
            conn.execute(
                "DELETE FROM webhook_events WHERE seq IN (SELECT seq FROM webhook_events \
                 WHERE occurred_at < now() - make_interval(secs => $1) ORDER BY seq LIMIT 10000)",
                &[&self.settings.retention.as_secs_f64()],
            )
            .await
            .map_err(db)?;
        }
        let waiting: Vec<Uuid> = conn
            .query(
                "SELECT s.id FROM webhook_subscriptions s \
                 WHERE enabled AND (leased_until IS NULL OR leased_until < now()) \
                   AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.subscription_id = s.id AND d.delivered_at IS NULL) \
                 ORDER BY s.created_at",
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let started = Instant::now();
        let mut next = None;
        for id in waiting {
            if started.elapsed() >= PASS_BUDGET {
                // Other clinics get their turn; this one comes back at once.
                return Ok(Some(Instant::now()));
            }
            // Leased one at a time, right before its deliveries, by this deliverer.
            let Some(row) = lazily(
                &mut conn,
                "UPDATE webhook_subscriptions SET leased_until = now() + make_interval(secs => $2), lease_owner = $3 \
                 WHERE id = $1 AND enabled AND (leased_until IS NULL OR leased_until < now()) \
                 RETURNING id, url, role, secret_enc, created_by",
                &[&id, &self.lease_secs(), &self.owner],
            )
            .await?
            .pop() else {
                continue;
            };
            let opened = match self.creator_is_admin(clinic, row.get(4)).await? {
                true => self.open(clinic, &keys, &row).await,
                false => Err("the admin who made it (or last enabled it) is no longer an active admin of the clinic; an admin may enable it again (PATCH `enabled: true`) to take it over".to_owned()),
            };
            let outcome = match opened {
                Ok(sub) => {
                    self.subscription(&mut conn, &keys, clinic, &sub, started)
                        .await
                }
                Err(reason) => disable(&*conn, id, &reason).await.map(|()| None),
            };
            lazily(
                &mut conn,
                "UPDATE webhook_subscriptions SET leased_until = NULL, lease_owner = NULL \
                 WHERE id = $1 AND lease_owner = $2",
                &[&id, &self.owner],
            )
            .await?;
            next = earliest(next, outcome?);
        }
        Ok(next)
    }

    /// Whether `user` (a subscription's maker) is still an active admin of `clinic`.
    async fn creator_is_admin(
        &self,
        clinic: ClinicId,
        user: Option<Uuid>,
    ) -> Result<bool, WorkerError> {
        let Some(user) = user else {
            return Ok(false);
        };
        let central = self.registry.central().get().await?;
        let row = central
            .query_opt(
                "SELECT role = 'admin' AND disabled_at IS NULL FROM users WHERE id = $1 AND company_id = $2",
                &[&user, clinic.as_uuid()],
            )
            .await
            .map_err(db)?;
        Ok(row.is_some_and(|r| r.get(0)))
    }

    /// The leased row as a subscription, its secret opened; or why it cannot be.
    async fn open(
        &self,
        clinic: ClinicId,
        keys: &ClinicKeyCache,
        row: &tokio_postgres::Row,
    ) -> Result<Subscription, String> {
        let id: Uuid = row.get(0);
        let sealed: Vec<u8> = row.get(3);
        let role = Role::parse(row.get(2)).ok_or("its role is unknown")?;
        let version = sealed_key_id(&sealed).map_err(|e| e.to_string())?;
        let keys = keys.covering([version]).await.map_err(|e| e.to_string())?;
        let secret = keys
            .open_field(
                &FieldContext {
                    clinic,
                    table: WEBHOOK_SUBSCRIPTIONS.table,
                    row: &id,
                    column: SECRET_COLUMN,
                },
                &sealed,
            )
            .map_err(|e| {
                format!("its signing secret cannot be opened ({e}); delete it and subscribe again")
            })?;
        Ok(Subscription {
            id,
            url: row.get(1),
            role,
            secret,
        })
    }

    /// Sends `sub`'s due deliveries in order: when to come back, if ever. Each
    /// delivery's outcome, the audit record of the read it disclosed and the
    /// lease's renewal are one commit.
    async fn subscription(
        &self,
        conn: &mut Conn,
        keys: &ClinicKeyCache,
        clinic: ClinicId,
        sub: &Subscription,
        started: Instant,
    ) -> Result<Option<Instant>, WorkerError> {
        let signer = standardwebhooks::Webhook::from_bytes(sub.secret.clone())
            .map_err(|e| WorkerError::Internal(e.to_string()))?;
        for _ in 0..BATCH {
            if started.elapsed() >= PASS_BUDGET {
                return Ok(Some(Instant::now()));
            }
            let Some(head) = self.head(conn, sub.id).await? else {
                return Ok(None);
            };
            if head.wait_secs > 0.0 {
                return Ok(Some(
                    Instant::now() + Duration::from_secs_f64(head.wait_secs),
                ));
            }
            let actor = Actor {
                clinic,
                user: sub.id,
                role: sub.role,
                client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                request_id: head.event_id.to_string(),
            };
            let (payload, read) = self.payload(conn, keys, &actor, &head).await?;
            // What leaves is recorded before it leaves.
            if let Some((r, row)) = read {
                data::record_access(
                    &**conn,
                    &actor,
                    r,
                    Action::Named("webhook"),
                    Some(row),
                    "success",
                )
                .await?;
            }
            let sent = self.send(sub, &signer, &head, &payload).await;
            let tx = conn.transaction().await.map_err(db)?;
            match sent {
                Ok(status) => {
                    metrics::counter!(m::WEBHOOK_DELIVERIES, "outcome" => "delivered").increment(1);
                    tx.execute(
                        "UPDATE webhook_deliveries SET delivered_at = now(), attempts = attempts + 1, \
                                last_status = $3, last_error = NULL \
                         WHERE subscription_id = $1 AND event_seq = $2",
                        &[&sub.id, &head.seq, &i32::from(status)],
                    )
                    .await
                    .map_err(db)?;
                    let still_ours = tx
                        .execute(
                            "UPDATE webhook_subscriptions SET failing_since = NULL, last_error = NULL, \
                                    last_success_at = now(), leased_until = now() + make_interval(secs => $2) \
                             WHERE id = $1 AND lease_owner = $3",
                            &[&sub.id, &self.lease_secs(), &self.owner],
                        )
                        .await
                        .map_err(db)?;
                    tx.commit().await.map_err(db)?;
                    if still_ours == 0 {
                        // The lease ran out and another deliverer took it: stop here.
                        return Ok(None);
                    }
                }
                Err(failure) => {
                    metrics::counter!(m::WEBHOOK_DELIVERIES, "outcome" => "failed").increment(1);
                    let next = self.failed(&tx, sub, &head, failure).await?;
                    tx.commit().await.map_err(db)?;
                    return Ok(next);
                }
            }
        }
        Ok(Some(Instant::now()))
    }

    async fn head(&self, conn: &Conn, subscription: Uuid) -> Result<Option<Head>, WorkerError> {
        let row = conn
            .query_opt(
                "SELECT d.event_seq, d.attempts, \
                        greatest(0, extract(epoch FROM d.next_attempt_at - now()))::float8, \
                        e.id, e.type, e.resource, e.resource_id, e.occurred_at \
                 FROM webhook_deliveries d JOIN webhook_events e ON e.seq = d.event_seq \
                 WHERE d.subscription_id = $1 AND d.delivered_at IS NULL \
                 ORDER BY d.event_seq LIMIT 1",
                &[&subscription],
            )
            .await
            .map_err(db)?;
        Ok(row.map(|r| Head {
            seq: r.get(0),
            attempts: r.get(1),
            wait_secs: r.get(2),
            event_id: r.get(3),
            kind: r.get(4),
            table: r.get(5),
            row: r.get(6),
            occurred_at: r.get(7),
        }))
    }

    /// The event as delivered: the object as the subscription's role sees it now
    /// (its read is recorded with the delivery's outcome), none for an erasure or a row gone.
    async fn payload(
        &self,
        conn: &Conn,
        keys: &ClinicKeyCache,
        actor: &Actor,
        head: &Head,
    ) -> Result<(Vec<u8>, Option<(&'static Resource, Uuid)>), WorkerError> {
        let r = resource::by_table(&head.table).ok_or_else(|| {
            WorkerError::Internal(format!("event on unknown table {}", head.table))
        })?;
        let object = if head.kind.ends_with(".erased") {
            Value::Null
        } else {
            match data::get(conn, keys, r, actor, head.row, Audit::Deferred).await {
                Ok(object) => object,
                Err(WorkerError::NotFound) => Value::Null,
                Err(e) => return Err(e),
            }
        };
        let read = (!object.is_null()).then_some((r, head.row));
        let body = json!({
            "type": head.kind,
            "timestamp": pgconn::rows::timestamp(head.occurred_at),
            "data": {
                "seq": head.seq,
                "resource": r.name,
                "id": head.row,
                "object": object,
            },
        });
        let bytes = serde_json::to_vec(&body).map_err(|e| WorkerError::Internal(e.to_string()))?;
        Ok((bytes, read))
    }

    /// `POST`s one delivery; its status when it was a `2xx`.
    async fn send(
        &self,
        sub: &Subscription,
        signer: &standardwebhooks::Webhook,
        head: &Head,
        payload: &[u8],
    ) -> Result<u16, Failure> {
        let fail = |error: String| Failure {
            status: None,
            error,
        };
        let uri = target::check(&sub.url, self.settings.allow_private).map_err(fail)?;
        let msg_id = head.event_id.to_string();
        let timestamp = Utc::now().timestamp();
        let signature = signer
            .sign(&msg_id, timestamp, payload)
            .map_err(|e| fail(e.to_string()))?;
        let request = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "MedicalPro-Webhooks/1")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &msg_id)
            .header(
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                timestamp.to_string(),
            )
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(Full::new(Bytes::copy_from_slice(payload)))
            .map_err(|e| fail(e.to_string()))?;
        let timeout = self.settings.timeout;
        match tokio::time::timeout(timeout, self.client.request(request)).await {
            Err(_) => Err(fail(format!(
                "no answer within {} s",
                timeout.as_secs_f64()
            ))),
            Ok(Err(e)) => {
                let mut error = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    error.push_str(": ");
                    error.push_str(&s.to_string());
                    source = s.source();
                }
                Err(fail(error))
            }
            Ok(Ok(response)) => {
                let status = response.status();
                if status.is_success() {
                    Ok(status.as_u16())
                } else {
                    Err(Failure {
                        status: Some(status.as_u16()),
                        error: format!("the receiver answered {status}"),
                    })
                }
            }
        }
    }

    /// Records a failed delivery: a retry later, or the subscription disabled
    /// once it has failed for too long.
    async fn failed(
        &self,
        conn: &deadpool_postgres::Transaction<'_>,
        sub: &Subscription,
        head: &Head,
        failure: Failure,
    ) -> Result<Option<Instant>, WorkerError> {
        let attempts = head.attempts.saturating_add(1);
        let factor = 4f64.powi(attempts.saturating_sub(1).min(20));
        let backoff = self
            .settings
            .retry_base
            .mul_f64(factor)
            .min(self.settings.retry_max);
        let error: String = failure.error.chars().take(500).collect();
        let status = failure.status.map(i32::from);
        conn.execute(
            "UPDATE webhook_deliveries SET attempts = $3, last_status = $4, last_error = $5, \
                    next_attempt_at = now() + make_interval(secs => $6) \
             WHERE subscription_id = $1 AND event_seq = $2",
            &[
                &sub.id,
                &head.seq,
                &attempts,
                &status,
                &error,
                &backoff.as_secs_f64(),
            ],
        )
        .await
        .map_err(db)?;
        let failing_for: f64 = conn
            .query_one(
                "UPDATE webhook_subscriptions SET failing_since = coalesce(failing_since, now()), last_error = $2 \
                 WHERE id = $1 RETURNING extract(epoch FROM now() - failing_since)::float8",
                &[&sub.id, &error],
            )
            .await
            .map_err(db)?
            .get(0);
        if failing_for >= self.settings.disable_after.as_secs_f64() {
            let reason = format!(
                "Deliveries failed for {} s (the limit is {} s); the last error: {error}. \
                 Fix the receiver, then PATCH `enabled: true`: delivery resumes at the first undelivered event.",
                failing_for.round(),
                self.settings.disable_after.as_secs()
            );
            disable(conn, sub.id, &reason).await?;
            return Ok(None);
        }
        Ok(Some(Instant::now() + backoff))
    }
}
