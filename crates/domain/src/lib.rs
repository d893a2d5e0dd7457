//! Splice's domain types: validated ids and tags, and the entities the platform manages
//! (connectors, integrations, identities, installs, sessions).
//!
//! Nothing here does I/O. Storage rows and API bodies are separate types in their own crates;
//! these are what both convert to and from.

mod entity;
mod id;
mod secret;
mod tags;

pub use entity::*;
pub use id::*;
pub use secret::Secret;
pub use tags::{TagFilter, Tags};

/// A rejected value, with the reason in words a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidValue {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Milliseconds since the Unix epoch, the one time representation stored and compared.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as Millis
}

/// Formats [`Millis`] as RFC 3339 for API responses.
pub fn rfc3339(ms: Millis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
