//! Incoming provider webhooks: verify, answer handshakes, describe.
//!
//! This crate owns the provider-specific knowledge needed to accept a webhook safely: how each
//! provider signs its deliveries ([`Scheme`], checked by [`verify`] over the raw body in
//! constant time), which endpoint challenges it sends ([`handshake`]), and where its delivery
//! id, event type and account ids live ([`describe`]). It is pure: no I/O, no HTTP server, no
//! storage, no clock of its own. Queueing, deduplication and routing to installs belong to the
//! server.
//!
//! A server handles a delivery in this order:
//!
//! 1. If [`ProviderKind::handshake_order`] is `BeforeVerification` (Microsoft Graph, Asana) and
//!    [`handshake`] returns a reply, send it and stop. Asana's reply carries a secret to store.
//! 2. [`verify`] the raw body with the stored secret; refuse on error (401, with the code).
//! 3. If the order is `AfterVerification` (Slack, Zoom, Discord) and [`handshake`] returns a
//!    reply, send it and stop.
//! 4. [`describe`] the event, deduplicate on [`EventInfo::dedupe_key`], route by
//!    [`EventInfo::account_ids`], queue, and answer 2xx at once.

mod describe;
mod handshake;
mod provider;
mod request;
mod scheme;
mod verify;

pub use describe::{EventInfo, UNKNOWN_EVENT, describe};
pub use handshake::{HandshakeReply, handshake};
pub use provider::{HandshakeOrder, ProviderKind, UnknownProvider};
pub use request::WebhookRequest;
pub use scheme::{
    Algorithm, DEFAULT_TOLERANCE_SECS, Encoding, HmacConfig, LINEAR_TOLERANCE_SECS, Scheme,
    TimestampUnit,
};
pub use verify::{VerifyError, verify};
