//! Webhooks: a clinic's integrations are told of changes instead of polling.
//!
//! - Subscriptions (`/api/v1/webhook-subscriptions`, admins only, [`api`]): a
//!   URL, the event types wanted, the role whose view of the data deliveries
//!   carry, and a signing secret shown once and stored sealed with the clinic's
//!   data key.
//! - Events are written by triggers in the transaction of the change they
//!   announce (clinic migration 018), with one delivery row per subscription that
//!   wants them: a change that rolls back announces nothing, and a committed one
//!   is never lost.
//! - [`deliver`] sends them, signed as the Standard Webhooks specification says
//!   (`webhook-id`, `webhook-timestamp`, `webhook-signature`), at least once, in
//!   event order per subscription (a failing event holds back the later ones),
//!   retried with exponential backoff, and disables a subscription failing for
//!   longer than `WEBHOOK_DISABLE_AFTER_SECS`, with the reason on the
//!   subscription. Deliveries run on their own tasks: a write pays the trigger's
//!   insert and a wake-up ([`wake`]), never a receiver's time.
//! - Receivers are reached on public addresses only ([`target`]), unless the
//!   operator allows private ones (`WEBHOOK_ALLOW_PRIVATE_TARGETS`).

pub mod api;
pub mod deliver;
pub mod target;
pub mod wake;
