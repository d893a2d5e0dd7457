//! The built-in `splice` module (`js/splice.js`) and its lazily loaded web APIs
//! (`js/web.js`), compiled to bytecode once per process.
//!
//! Every context evaluates the core before the integration's own modules: it defines the
//! `Integration` class, router, console and timers on top of the native functions in
//! [`crate::bindings`]. The web module is evaluated only when code first touches `fetch`,
//! `URL` and friends, which keeps fresh contexts cheap.

use std::sync::OnceLock;

use rquickjs::module::WriteOptions;
use rquickjs::{Context, Module, Runtime};

use crate::modules::SPLICE;

/// The core module's JavaScript source.
pub(crate) const SOURCE: &str = include_str!("js/splice.js");

/// The web module's JavaScript source.
const WEB_SOURCE: &str = include_str!("js/web.js");

/// The name the web module's stack frames show.
const WEB_NAME: &str = "splice:web";

struct Compiled {
    core: Vec<u8>,
    web: Vec<u8>,
}

static COMPILED: OnceLock<Result<Compiled, String>> = OnceLock::new();

/// The core module's bytecode, compiled on first use.
pub(crate) fn bytecode() -> Result<&'static [u8], String> {
    compiled().map(|c| c.core.as_slice())
}

/// The web module's bytecode, compiled on first use.
pub(crate) fn web_bytecode() -> Result<&'static [u8], String> {
    compiled().map(|c| c.web.as_slice())
}

fn compiled() -> Result<&'static Compiled, String> {
    COMPILED.get_or_init(compile).as_ref().map_err(Clone::clone)
}

/// Compiles both modules in a runtime without a module loader: QuickJS resolves imports while
/// parsing, so a static import in either file fails here. The web module relies on that,
/// because it is evaluated without resolution.
fn compile() -> Result<Compiled, String> {
    let runtime = Runtime::new().map_err(|e| e.to_string())?;
    let context = Context::full(&runtime).map_err(|e| e.to_string())?;

    context.with(|ctx| {
        let write = |name: &str, source: &str| {
            let module = Module::declare(ctx.clone(), name, source).map_err(|e| {
                let thrown = ctx.catch();
                format!("built-in module {name} does not compile: {e}: {thrown:?}")
            })?;
            let options = WriteOptions {
                strip_source: true,
                ..WriteOptions::default()
            };
            module.write(options).map_err(|e| e.to_string())
        };
        Ok(Compiled {
            core: write(SPLICE, SOURCE)?,
            web: write(WEB_NAME, WEB_SOURCE)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_modules_compile() {
        let core = bytecode().expect("core compiles");
        let web = web_bytecode().expect("web compiles");

        assert!(
            core.len() > 1_000 && web.len() > 1_000,
            "{} / {}",
            core.len(),
            web.len()
        );
    }
}
