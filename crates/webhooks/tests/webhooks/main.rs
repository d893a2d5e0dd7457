//! Integration tests for `splice-webhooks`, compiled as one binary.
//!
//! `cases` holds the expected values of the shared real-world cases (published vectors where
//! providers publish them); `providers` holds hand-computed vectors for the other schemes;
//! `handshakes` and `describing` check replies and event descriptions byte for byte.

mod cases;
mod describing;
mod handshakes;
mod providers;
mod support;
