//! The bound on streamed clinic exports: at most `EXPORTS_PER_CLINIC` of one clinic
//! and `EXPORTS_MAX` in all run at once (each holds a connection and a snapshot for
//! as long as it runs); past either, `429` with `retry-after`.

use crate::config::ExportLimits;
use crate::error::WorkerError;
use common::metric_names as m;
use common::ClinicId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Exports running, per clinic and in all.
pub struct ExportGate {
    limits: ExportLimits,
    running: Mutex<(usize, HashMap<ClinicId, usize>)>,
}

/// One running export's place; given back when dropped.
pub struct ExportPermit {
    gate: Arc<ExportGate>,
    clinic: ClinicId,
}

impl ExportGate {
    pub fn new(limits: ExportLimits) -> Self {
        Self {
            limits,
            running: Mutex::new((0, HashMap::new())),
        }
    }

    /// How long an export may wait on a client that reads nothing.
    pub fn idle(&self) -> std::time::Duration {
        self.limits.idle
    }

    /// A place for one more export of `clinic`, or `TooManyExports`.
    pub fn try_enter(self: &Arc<Self>, clinic: ClinicId) -> Result<ExportPermit, WorkerError> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, per_clinic) = &mut *running;
        let mine = per_clinic.get(&clinic).copied().unwrap_or(0);
        let refusal = if mine >= self.limits.per_clinic {
            Some("Your clinic's previous export is still running; wait for it to finish.")
        } else if *total >= self.limits.total {
            Some("Too many exports are running on this server; retry in a little while.")
        } else {
            None
        };
        if let Some(detail) = refusal {
            metrics::counter!(m::CLIENTS_CUT_OFF, "component" => "worker", "reason" => "export_cap")
                .increment(1);
            return Err(WorkerError::TooManyExports(detail));
        }
        *total += 1;
        per_clinic.insert(clinic, mine + 1);
        Ok(ExportPermit {
            gate: self.clone(),
            clinic,
        })
    }
}

impl Drop for ExportPermit {
    fn drop(&mut self) {
        let mut running = self
            .gate
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, per_clinic) = &mut *running;
        *total = total.saturating_sub(1);
        if let Some(n) = per_clinic.get_mut(&self.clinic) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_clinic.remove(&self.clinic);
            }
        }
    }
}
