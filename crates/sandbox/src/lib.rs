//! The integration runtime: JavaScript modules compiled once to QuickJS bytecode and run in
//! warm, per-integration runtimes with memory, CPU and wall-time limits.
//!
//! [`compile`] turns a deploy's source files into a program image at deploy time; an
//! [`Engine`] runs requests through programs on its worker threads. The sandbox knows nothing
//! about storage or HTTP serving; it reaches the outside world only through [`Host`].

mod api;
mod bindings;
mod compile;
mod engine;
mod image;
mod isolate;
mod meter;
mod modules;
mod prelude;

pub use api::*;
pub use compile::compile;
pub use engine::{Engine, EngineConfig};
