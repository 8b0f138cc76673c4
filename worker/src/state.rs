//! What every handler can reach: the shared state of the public router. Handlers
//! depend on it; it depends on no handler.

use crate::config::WebhookSettings;
use crate::export_gate::ExportGate;
use crate::provision::Provisioner;
use crate::registry::Registry;
use crate::webhooks::wake::Hooks;
use common::crypto::KeyRing;
use common::internal::InternalKey;
use common::token::TokenVerifier;
use common::ClinicId;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The state of the public router.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub provisioner: Arc<Provisioner>,
    pub tokens: Arc<TokenVerifier>,
    pub internal: InternalKey,
    pub keys: Arc<KeyRing>,
    pub max_body_bytes: usize,
    /// A patient import's body and row limits.
    pub max_import_bytes: usize,
    pub max_import_rows: usize,
    /// The largest file uploaded onto a patient.
    pub max_attachment_bytes: usize,
    /// Streamed exports running, bounded per clinic and per worker.
    pub exports: Arc<ExportGate>,
    /// Tells the audit shipper which clinic has new outbox rows.
    pub audit_wake: mpsc::UnboundedSender<ClinicId>,
    /// The clinics with webhook subscriptions, and their deliveries' wake-up.
    pub hooks: Arc<Hooks>,
    pub webhooks: WebhookSettings,
}

impl AppState {
    /// Tells the audit shipper a clinic has new outbox rows.
    pub fn wake_shipper(&self, clinic: ClinicId) {
        let _ = self.audit_wake.send(clinic);
    }
}
