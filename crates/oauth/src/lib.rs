//! OAuth 2.0 for connectors: building authorization requests, exchanging codes, refreshing
//! tokens, and keeping every identity's access token fresh.
//!
//! [`response`] is the tolerant reader of what token endpoints really send; [`client`] speaks
//! to the provider; [`lifecycle`] decides when to refresh, makes refreshes single-flight, and
//! records what a failure means for the identity. Webhooks and provider catalogs live
//! elsewhere.

pub mod client;
pub mod lifecycle;
pub mod response;

pub use client::{AuthorizeRequest, OAuthClient, ProviderAuthorize, ProviderRequest};
pub use lifecycle::{
    Endpoints, GenericEndpoints, Lifecycle, SweepReport, TokenEndpoint, TokenFailure, TokenManager,
};
pub use response::{TokenError, TokenResponse};
