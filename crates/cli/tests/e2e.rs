//! End-to-end tests: the real `splice` binary, a real OpenID Connect provider (oidc-provider on
//! Node.js), GitHub's and Stripe's own webhook signing libraries and a scripted browser, all on
//! loopback.
//!
//! One test binary holds every case so that each fixture's npm install happens once; each test
//! starts its own Splice with its own data folder. Needs `node` and `npm` on the PATH.

mod support;

mod e2e {
    mod api;
    pub mod cluster;
    mod connect;
    mod durability;
    mod fixture;
    mod outbound;
    mod providers;
    mod sandbox;
    pub mod schedules;
    mod shutdown;
    mod signers;
    mod tasks;
    mod webhooks;
}
