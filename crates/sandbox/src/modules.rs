//! How `import` specifiers resolve, at compile time (from source) and at run time (from the
//! program image's bytecode).
//!
//! Integration code may import the built-in `splice` module and its own files by relative
//! specifiers (`./util.js`, `../lib/x.js`; the `.js` may be left out). Nothing else is
//! importable: no file system, no packages. This module also holds the crate's one use of
//! `Module::load`, which is only ever given bytecode that [`crate::compile`] wrote.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use rquickjs::loader::{ImportAttributes, Loader, Resolver};
use rquickjs::module::{Declared, WriteOptions};
use rquickjs::{Ctx, Error, Module};

use crate::api::{CompileError, Files};
use crate::image::ProgramImage;
use crate::prelude;

/// The name of the built-in module.
pub(crate) const SPLICE: &str = "splice";

/// Resolves `name` imported from module `base` (`""` for the host's own imports).
pub(crate) fn resolve_specifier(
    base: &str,
    name: &str,
    exists: impl Fn(&str) -> bool,
) -> Result<String, String> {
    if name == SPLICE {
        return Ok(SPLICE.to_owned());
    }

    let candidate = if name.starts_with("./") || name.starts_with("../") {
        join_relative(base, name).ok_or_else(|| format!("import '{name}' leaves the deploy"))?
    } else if base.is_empty() {
        name.to_owned()
    } else {
        return Err(format!(
            "cannot import '{name}': only 'splice' and relative paths like './util.js' are importable"
        ));
    };

    if exists(&candidate) {
        return Ok(candidate);
    }
    let with_ext = format!("{candidate}.js");
    if exists(&with_ext) {
        return Ok(with_ext);
    }
    Err(format!(
        "module '{name}' imported from '{base}' does not exist"
    ))
}

/// Joins a relative specifier to the directory of `base`, normalising `.` and `..`.
fn join_relative(base: &str, name: &str) -> Option<String> {
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();

    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// Compile-time resolution and loading: dependencies are parsed from source on demand and
/// their bytecode recorded, together with the first error met.
#[derive(Clone)]
pub(crate) struct CompileModules {
    inner: Rc<RefCell<CompileState>>,
}

struct CompileState {
    files: Files,
    compiled: BTreeMap<String, Vec<u8>>,
    error: Option<CompileError>,
}

impl CompileModules {
    pub(crate) fn new(files: &Files) -> Self {
        let state = CompileState {
            files: files.clone(),
            compiled: BTreeMap::new(),
            error: None,
        };
        Self {
            inner: Rc::new(RefCell::new(state)),
        }
    }

    pub(crate) fn is_compiled(&self, name: &str) -> bool {
        self.inner.borrow().compiled.contains_key(name)
    }

    /// Parses one module (and, through the loader, what it imports) and records its bytecode.
    pub(crate) fn compile<'js>(
        &self,
        ctx: &Ctx<'js>,
        name: &str,
        source: &str,
    ) -> Result<(), Error> {
        let module = match Module::declare(ctx.clone(), name, source) {
            Ok(module) => module,
            Err(error) => {
                self.record_error(|| located_error(ctx, name, &error));
                return Err(error);
            }
        };

        let options = WriteOptions {
            strip_source: true,
            ..WriteOptions::default()
        };
        let bytecode = module.write(options)?;
        self.inner
            .borrow_mut()
            .compiled
            .insert(name.to_owned(), bytecode);
        Ok(())
    }

    /// The first error recorded while compiling, if any.
    pub(crate) fn take_error(&self) -> Option<CompileError> {
        self.inner.borrow_mut().error.take()
    }

    pub(crate) fn into_modules(self) -> Vec<(String, Vec<u8>)> {
        let compiled = std::mem::take(&mut self.inner.borrow_mut().compiled);
        compiled.into_iter().collect()
    }

    fn record_error(&self, make: impl FnOnce() -> CompileError) {
        let mut state = self.inner.borrow_mut();
        if state.error.is_none() {
            state.error = Some(make());
        }
    }

    fn source_of(&self, name: &str) -> Option<String> {
        self.inner.borrow().files.get(name).cloned()
    }
}

impl Resolver for CompileModules {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        let resolved = {
            let state = self.inner.borrow();
            let exists = |n: &str| n.ends_with(".js") && state.files.contains_key(n);
            resolve_specifier(base, name, exists)
        };

        resolved.map_err(|message| {
            let source = self.source_of(base).unwrap_or_default();
            let (line, column) = find_specifier(&source, name);
            let file = base.to_owned();
            let error = CompileError {
                file,
                line,
                column,
                message: message.clone(),
            };
            self.record_error(|| error);
            Error::new_resolving_message(base, name, message)
        })
    }
}

impl Loader for CompileModules {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        if name == SPLICE {
            return Module::declare(ctx.clone(), SPLICE, prelude::SOURCE);
        }

        let source = self
            .source_of(name)
            .ok_or_else(|| Error::new_loading(name))?;
        match Module::declare(ctx.clone(), name, source.as_str()) {
            Ok(module) => {
                let options = WriteOptions {
                    strip_source: true,
                    ..WriteOptions::default()
                };
                let bytecode = module.write(options)?;
                self.inner
                    .borrow_mut()
                    .compiled
                    .insert(name.to_owned(), bytecode);
                Ok(module)
            }
            Err(error) => {
                self.record_error(|| located_error(ctx, name, &error));
                Err(error)
            }
        }
    }
}

/// Turns the exception pending after a failed parse into a located compile error.
///
/// The exception is left pending (re-thrown) so QuickJS unwinds the importing module too.
fn located_error(ctx: &Ctx<'_>, file: &str, error: &Error) -> CompileError {
    let mut located = CompileError {
        file: file.to_owned(),
        line: 1,
        column: 1,
        message: error.to_string(),
    };
    if !error.is_exception() {
        return located;
    }

    let thrown = ctx.catch();
    if let Some(object) = thrown.as_object() {
        let name: Option<String> = object.get("name").ok().flatten();
        let message: Option<String> = object.get("message").ok().flatten();
        let stack: Option<String> = object.get("stack").ok().flatten();

        located.message = match (name, message) {
            (Some(name), Some(message)) => format!("{name}: {message}"),
            (_, Some(message)) => message,
            (Some(name), None) => name,
            (None, None) => "syntax error".to_owned(),
        };
        if let Some((line, column)) = stack.as_deref().and_then(|s| location_in_stack(s, file)) {
            located.line = line;
            located.column = column;
        }
    }
    ctx.throw(thrown);
    located
}

/// Finds `file:line:column` in the first stack frame that names exactly `file`.
pub(crate) fn location_in_stack(stack: &str, file: &str) -> Option<(u32, u32)> {
    stack.lines().find_map(|frame| {
        let frame = frame.trim_start().strip_prefix("at ")?;
        let frame = frame.rsplit(" (").next()?.trim_end_matches(')');
        let mut parts = frame.rsplitn(3, ':');
        let column = parts.next()?.parse().ok()?;
        let line = parts.next()?.parse().ok()?;
        (parts.next()? == file).then_some((line, column))
    })
}

/// 1-based line and column of the first quoted occurrence of `specifier` in `source`.
fn find_specifier(source: &str, specifier: &str) -> (u32, u32) {
    let found = ['"', '\'']
        .iter()
        .filter_map(|quote| source.find(&format!("{quote}{specifier}{quote}")))
        .min();
    let Some(offset) = found else {
        return (1, 1);
    };

    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// Run-time resolution and loading from a verified program image. Until an image is set,
/// only the built-in module loads.
#[derive(Clone)]
pub(crate) struct ImageModules {
    image: Rc<RefCell<Option<ProgramImage>>>,
    failure: Rc<RefCell<Option<String>>>,
}

impl ImageModules {
    /// Builds the loader; resolution failures are reported through `failure`.
    pub(crate) fn new(failure: Rc<RefCell<Option<String>>>) -> Self {
        Self {
            image: Rc::default(),
            failure,
        }
    }

    /// The program whose modules this loader serves, from now on.
    pub(crate) fn set_image(&self, image: ProgramImage) {
        *self.image.borrow_mut() = Some(image);
    }

    fn fail(&self, message: String) {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(message);
        }
    }
}

impl Resolver for ImageModules {
    fn resolve<'js>(
        &mut self,
        _ctx: &Ctx<'js>,
        base: &str,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<String> {
        let resolved = {
            let image = self.image.borrow();
            resolve_specifier(base, name, |n| {
                image.as_ref().is_some_and(|i| i.contains(n))
            })
        };
        resolved.map_err(|message| {
            self.fail(message.clone());
            Error::new_resolving_message(base, name, message)
        })
    }
}

impl Loader for ImageModules {
    fn load<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        name: &str,
        _attributes: Option<ImportAttributes<'js>>,
    ) -> rquickjs::Result<Module<'js, Declared>> {
        if name == SPLICE {
            let bytecode = prelude::bytecode().map_err(|e| Error::new_loading_message(name, e))?;
            return load_bytecode(ctx, bytecode);
        }
        let image = self.image.borrow();
        let Some(bytecode) = image.as_ref().and_then(|image| image.module(name)) else {
            drop(image);
            self.fail(format!("module '{name}' is not part of the program"));
            return Err(Error::new_loading(name));
        };
        load_bytecode(ctx, bytecode)
    }
}

/// Reads module bytecode back into a context.
#[expect(
    unsafe_code,
    reason = "Module::load trusts its input to be well-formed bytecode"
)]
pub(crate) fn load_bytecode<'js>(
    ctx: &Ctx<'js>,
    bytecode: &[u8],
) -> rquickjs::Result<Module<'js, Declared>> {
    // SAFETY: the bytes come either from the prelude this process compiled itself or from a
    // program image written by `compile` with this engine version; `ProgramImage::parse`
    // checked the image's engine tag and checksum before any module is read. The bytes are
    // copied by QuickJS, so they need not outlive the module.
    unsafe { Module::load(ctx.clone(), bytecode) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exists(names: &'static [&'static str]) -> impl Fn(&str) -> bool {
        move |n| names.contains(&n)
    }

    #[test]
    fn resolves_relative_specifiers() {
        let files = exists(&["integration.js", "util.js", "lib/a.js", "lib/b.js"]);

        assert_eq!(
            resolve_specifier("integration.js", "./util.js", &files),
            Ok("util.js".into())
        );
        assert_eq!(
            resolve_specifier("integration.js", "./lib/a", &files),
            Ok("lib/a.js".into())
        );
        assert_eq!(
            resolve_specifier("lib/a.js", "./b.js", &files),
            Ok("lib/b.js".into())
        );
        assert_eq!(
            resolve_specifier("lib/a.js", "../util.js", &files),
            Ok("util.js".into())
        );
        assert_eq!(
            resolve_specifier("lib/a.js", "splice", &files),
            Ok("splice".into())
        );
        assert_eq!(
            resolve_specifier("", "integration.js", &files),
            Ok("integration.js".into())
        );
    }

    #[test]
    fn rejects_bare_missing_and_escaping_specifiers() {
        let files = exists(&["integration.js"]);

        assert!(resolve_specifier("integration.js", "lodash", &files).is_err());
        assert!(resolve_specifier("integration.js", "./missing.js", &files).is_err());
        assert!(resolve_specifier("integration.js", "../outside.js", &files).is_err());
    }

    #[test]
    fn finds_locations() {
        let stack = "    at foo (lib/util.js:9:9)\n    at util.js:12:4\n";

        assert_eq!(location_in_stack(stack, "util.js"), Some((12, 4)));
        assert_eq!(location_in_stack(stack, "lib/util.js"), Some((9, 9)));
        assert_eq!(location_in_stack(stack, "missing.js"), None);
        assert_eq!(find_specifier("let a;\n  import x from 'y';", "y"), (2, 17));
    }
}
