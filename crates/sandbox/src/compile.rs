//! Deploy-time compilation: JavaScript source to a program image of QuickJS bytecode.
//!
//! Compiling parses every module and resolves its imports (QuickJS loads a module's imports
//! while parsing it), so syntax errors and missing files are reported at deploy time. Nothing
//! the integration wrote runs here; errors that need evaluation, such as importing a name a
//! module does not export, show up at the first invocation.

use rquickjs::{Context, Runtime};

use crate::api::{CompileError, Files};
use crate::image::{self, ENTRY};
use crate::modules::CompileModules;

/// Parser stack budget; deeply nested source fails with an error instead of overflowing.
const COMPILE_STACK_BYTES: usize = 512 << 10;

/// Compiles every `.js` file of a deploy into one program image.
///
/// `integration.js` is the entry point; other files are importable from it by relative
/// specifiers such as `./util.js`. Files with other extensions are ignored. This is CPU work:
/// call it from a blocking context (e.g. `spawn_blocking`) for large deploys.
pub fn compile(files: &Files) -> Result<Vec<u8>, CompileError> {
    if !files.contains_key(ENTRY) {
        return Err(file_error(ENTRY, "missing entry module integration.js"));
    }
    if let Some(name) = files.keys().find(|name| !is_valid_name(name)) {
        return Err(file_error(
            name,
            "file names must be relative paths like lib/util.js",
        ));
    }

    let modules = CompileModules::new(files);
    let runtime = Runtime::new().map_err(|e| engine_error(&e))?;
    runtime.set_max_stack_size(COMPILE_STACK_BYTES);
    runtime.set_loader(modules.clone(), modules.clone());
    let context = Context::full(&runtime).map_err(|e| engine_error(&e))?;

    // The entry first, so its imports are compiled through the loader; then whatever it does
    // not import (still deployable, e.g. for dynamic `import()`).
    let names = std::iter::once(ENTRY).chain(files.keys().map(String::as_str));
    let result = context.with(|ctx| {
        for name in names.filter(|n| n.ends_with(".js")) {
            if modules.is_compiled(name) {
                continue;
            }
            let source = files.get(name).map_or("", String::as_str);
            if let Err(error) = modules.compile(&ctx, name, source) {
                ctx.catch();
                return Err(modules
                    .take_error()
                    .unwrap_or_else(|| file_error(name, &error.to_string())));
            }
        }
        Ok(())
    });
    result?;

    image::pack(&modules.into_modules()).map_err(|message| file_error(ENTRY, &message))
}

/// Module names are relative paths inside the deploy, so they resolve the same everywhere.
fn is_valid_name(name: &str) -> bool {
    !name.starts_with('/')
        && !name.contains('\\')
        && !name.contains('\0')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

fn file_error(file: &str, message: &str) -> CompileError {
    CompileError {
        file: file.to_owned(),
        line: 1,
        column: 1,
        message: message.to_owned(),
    }
}

fn engine_error(error: &rquickjs::Error) -> CompileError {
    file_error(ENTRY, &format!("javascript engine unavailable: {error}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::image::ProgramImage;

    fn files(entries: &[(&str, &str)]) -> Files {
        entries
            .iter()
            .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
            .collect()
    }

    #[test]
    fn compiles_all_js_files_into_one_image() {
        let files = files(&[
            (
                "integration.js",
                "import { x } from './lib/util.js';\nexport default x;",
            ),
            (
                "lib/util.js",
                "import { y } from '../other';\nexport const x = y;",
            ),
            (
                "other.js",
                "import { Integration } from 'splice';\nexport const y = 1;",
            ),
            ("unused.js", "export const z = 1;"),
            ("README.md", "not javascript {"),
        ]);

        let bytes = compile(&files).expect("compiles");
        let image = ProgramImage::parse(Arc::new(bytes)).expect("valid image");

        for name in ["integration.js", "lib/util.js", "other.js", "unused.js"] {
            assert!(image.contains(name), "{name} missing");
        }
        assert!(!image.contains("README.md"));
        assert!(!image.contains("splice"));
    }

    #[test]
    fn syntax_error_reports_file_line_and_column() {
        let files = files(&[
            ("integration.js", "export default 1;\n"),
            ("util.js", "const a = 1;\nconst b = ;\n"),
        ]);

        let err = compile(&files).expect_err("syntax error");

        assert_eq!(err.file, "util.js");
        assert_eq!((err.line, err.column), (2, 11));
        assert!(err.message.starts_with("SyntaxError"), "{}", err.message);
    }

    #[test]
    fn syntax_error_in_an_imported_file_names_that_file() {
        let files = files(&[
            (
                "integration.js",
                "import './lib/broken.js';\nexport default 1;\n",
            ),
            ("lib/broken.js", "\n\n  let = ;\n"),
        ]);

        let err = compile(&files).expect_err("syntax error");

        assert_eq!(err.file, "lib/broken.js");
        assert_eq!(err.line, 3);
        assert!(err.column >= 3, "column {}", err.column);
    }

    #[test]
    fn error_column_counts_from_one_after_indentation() {
        let files = files(&[("integration.js", "function f() {\n    return )\n}\n")]);

        let err = compile(&files).expect_err("syntax error");

        assert_eq!(err.file, "integration.js");
        assert_eq!((err.line, err.column), (2, 12));
    }

    #[test]
    fn unresolvable_import_points_at_the_import() {
        let files = files(&[("integration.js", "// hi\nimport x from './nope.js';\n")]);

        let err = compile(&files).expect_err("missing module");

        assert_eq!(err.file, "integration.js");
        assert_eq!((err.line, err.column), (2, 15));
        assert!(err.message.contains("./nope.js"), "{}", err.message);
    }

    #[test]
    fn bare_package_imports_are_rejected() {
        let files = files(&[("integration.js", "import _ from 'lodash';\n")]);

        let err = compile(&files).expect_err("bare import");

        assert!(err.message.contains("lodash"), "{}", err.message);
    }

    #[test]
    fn missing_entry_is_an_error() {
        let err = compile(&files(&[("util.js", "export const x = 1;")])).expect_err("no entry");

        assert_eq!(err.file, "integration.js");
        assert!(err.message.contains("missing"), "{}", err.message);
    }

    #[test]
    fn rejects_paths_that_escape_the_deploy() {
        let files = files(&[("integration.js", ""), ("../evil.js", "")]);

        let err = compile(&files).expect_err("bad name");

        assert_eq!(err.file, "../evil.js");
    }
}
