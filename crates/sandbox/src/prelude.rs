//! The built-in `splice` module (`js/splice.js`) and its two lazily loaded parts, the web APIs
//! (`js/web.js`) and the rarely used rest (`js/lazy.js`), compiled to bytecode once per process.
//!
//! Every context evaluates the core before the integration's own modules: it defines the
//! `Integration` class, router, console and timers on top of the native functions in
//! [`crate::bindings`]. The web part is evaluated only when code first touches `fetch`, `URL`
//! and friends, the rest when it first logs, opens a connector, starts a task or runs a
//! background job: a context that serves routes pays for neither, which keeps building
//! runtimes cheap.

use std::sync::OnceLock;

use rquickjs::module::WriteOptions;
use rquickjs::{Context, Module, Runtime};

use crate::modules::SPLICE;

/// The core module's JavaScript source.
pub(crate) const SOURCE: &str = include_str!("js/splice.js");

/// The parts of the core loaded on first use: the name the core asks for, the name their
/// stack frames show, and their source.
const PARTS: [(&str, &str, &str); 2] = [
    ("web", "splice:web", include_str!("js/web.js")),
    ("lazy", "splice:lazy", include_str!("js/lazy.js")),
];

struct Compiled {
    core: Vec<u8>,
    parts: Vec<(&'static str, Vec<u8>)>,
}

static COMPILED: OnceLock<Result<Compiled, String>> = OnceLock::new();

/// The core module's bytecode, compiled on first use.
pub(crate) fn bytecode() -> Result<&'static [u8], String> {
    compiled().map(|c| c.core.as_slice())
}

/// The bytecode of the part the core asks for by `name`, compiled on first use.
pub(crate) fn part_bytecode(name: &str) -> Result<&'static [u8], String> {
    compiled()?
        .parts
        .iter()
        .find(|(part, _)| *part == name)
        .map(|(_, bytecode)| bytecode.as_slice())
        .ok_or_else(|| format!("the splice module has no part named {name}"))
}

fn compiled() -> Result<&'static Compiled, String> {
    COMPILED.get_or_init(compile).as_ref().map_err(Clone::clone)
}

/// Compiles every module in a runtime without a module loader: QuickJS resolves imports while
/// parsing, so a static import in any file fails here. The parts rely on that, because they
/// are evaluated without resolution.
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
        let parts = PARTS
            .iter()
            .map(|(part, name, source)| Ok((*part, write(name, source)?)))
            .collect::<Result<_, String>>()?;
        Ok(Compiled {
            core: write(SPLICE, SOURCE)?,
            parts,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_compiles() {
        let core = bytecode().expect("core compiles");
        let web = part_bytecode("web").expect("web compiles");
        let lazy = part_bytecode("lazy").expect("lazy compiles");

        assert!(
            core.len() > 1_000 && web.len() > 1_000 && lazy.len() > 1_000,
            "{} / {} / {}",
            core.len(),
            web.len(),
            lazy.len()
        );
        assert!(part_bytecode("fs").is_err());
    }
}
