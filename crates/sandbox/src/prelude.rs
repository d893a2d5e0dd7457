//! The built-in `splice` module (see `js/splice.js`), compiled to bytecode once per process.
//!
//! Every context loads it before the integration's own modules: it defines the `Integration`
//! class and router, and installs the web APIs (`fetch`, `console`, timers, `URL`, ...) as
//! globals on top of the native functions in [`crate::bindings`].

use std::sync::OnceLock;

use rquickjs::module::WriteOptions;
use rquickjs::{Context, Module, Runtime};

use crate::modules::SPLICE;

/// The prelude's JavaScript source.
pub(crate) const SOURCE: &str = include_str!("js/splice.js");

static BYTECODE: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();

/// The prelude's bytecode, compiled on first use.
pub(crate) fn bytecode() -> Result<&'static [u8], String> {
    BYTECODE.get_or_init(compile).as_deref().map_err(Clone::clone)
}

fn compile() -> Result<Vec<u8>, String> {
    let runtime = Runtime::new().map_err(|e| e.to_string())?;
    let context = Context::full(&runtime).map_err(|e| e.to_string())?;

    context.with(|ctx| {
        let module = Module::declare(ctx.clone(), SPLICE, SOURCE).map_err(|e| {
            let thrown = ctx.catch();
            format!("prelude does not compile: {e}: {thrown:?}")
        })?;
        let options = WriteOptions { strip_source: true, ..WriteOptions::default() };
        module.write(options).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prelude_compiles() {
        let bytes = bytecode().expect("prelude compiles");
        assert!(bytes.len() > 100);
    }
}
