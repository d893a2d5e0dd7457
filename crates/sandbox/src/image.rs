//! The program image: the byte blob [`crate::compile`] produces and runtimes load from.
//!
//! An image packs the QuickJS bytecode of every module of one deploy behind a small header:
//!
//! ```text
//! magic "SPLICEJS" | format u16 | engine tag (u8 len + bytes) | module count u32
//! per module: name (u32 len + UTF-8) | bytecode (u32 len + bytes)
//! FNV-1a 64 checksum of everything before it
//! ```
//!
//! All integers are little-endian. The checksum guards against truncated or corrupted blobs;
//! it is no defence against a forged one, which is why images must only ever come from
//! [`crate::compile`] and Splice's own storage. This module does not run anything.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"SPLICEJS";
const FORMAT: u16 = 1;

/// Names the engine that wrote the bytecode; QuickJS bytecode is only readable by the same
/// engine version. Bump together with the rquickjs dependency.
const ENGINE: &str = "rquickjs-0.14";

/// The module every deploy must contain.
pub(crate) const ENTRY: &str = "integration.js";

/// Serialises compiled modules into one image.
pub(crate) fn pack(modules: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(
        64 + modules
            .iter()
            .map(|(n, b)| n.len() + b.len())
            .sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.push(ENGINE.len() as u8);
    out.extend_from_slice(ENGINE.as_bytes());
    put_len(&mut out, modules.len())?;

    for (name, bytecode) in modules {
        put_len(&mut out, name.len())?;
        out.extend_from_slice(name.as_bytes());
        put_len(&mut out, bytecode.len())?;
        out.extend_from_slice(bytecode);
    }

    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), String> {
    let len = u32::try_from(len).map_err(|_| "program too large".to_owned())?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

/// A parsed, verified image: module names mapped to their bytecode.
#[derive(Debug)]
pub(crate) struct ProgramImage {
    bytes: Arc<Vec<u8>>,
    modules: HashMap<String, Range<usize>>,
}

impl ProgramImage {
    /// Checks the header and checksum and indexes the modules. Needs `integration.js`.
    pub(crate) fn parse(bytes: Arc<Vec<u8>>) -> Result<Self, String> {
        let body_len = bytes
            .len()
            .checked_sub(8)
            .ok_or_else(|| "program image is truncated".to_owned())?;
        let (body, sum) = bytes.split_at(body_len);
        if sum != fnv1a(body).to_le_bytes() {
            return Err("program image is corrupted (checksum mismatch)".to_owned());
        }

        let mut reader = Reader { bytes: body, at: 0 };
        if reader.take(MAGIC.len())? != MAGIC {
            return Err("not a program image".to_owned());
        }
        let format = u16::from_le_bytes([reader.byte()?, reader.byte()?]);
        let engine_len = usize::from(reader.byte()?);
        let engine = reader.take(engine_len)?;
        if format != FORMAT || engine != ENGINE.as_bytes() {
            return Err(
                "program image was built by another engine version; redeploy it".to_owned(),
            );
        }

        let count = reader.len()?;
        let mut modules = HashMap::with_capacity(count);
        for _ in 0..count {
            let name_len = reader.len()?;
            let name = std::str::from_utf8(reader.take(name_len)?)
                .map_err(|_| "program image has a non-UTF-8 module name".to_owned())?
                .to_owned();
            let code_len = reader.len()?;
            let start = reader.at;
            reader.take(code_len)?;
            modules.insert(name, start..reader.at);
        }

        if reader.at != body.len() {
            return Err("program image has trailing bytes".to_owned());
        }
        if !modules.contains_key(ENTRY) {
            return Err(format!("program image has no {ENTRY}"));
        }
        Ok(Self { bytes, modules })
    }

    /// The bytecode of one module, by its resolved name.
    pub(crate) fn module(&self, name: &str) -> Option<&[u8]> {
        let range = self.modules.get(name)?;
        self.bytes.get(range.clone())
    }

    /// Whether the image holds a module of that name.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(name)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| "program image is truncated".to_owned())?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn len(&mut self) -> Result<usize, String> {
        let raw = self.take(4)?;
        let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        usize::try_from(len).map_err(|_| "program image length overflows".to_owned())
    }
}

/// 64-bit FNV-1a: tiny and fast, enough to catch corruption.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let modules = vec![
            (ENTRY.to_owned(), vec![1, 2, 3]),
            ("lib/util.js".to_owned(), vec![4, 5]),
        ];
        pack(&modules).expect("pack")
    }

    #[test]
    fn round_trips_modules() {
        let image = ProgramImage::parse(Arc::new(sample())).expect("parse");

        assert_eq!(image.module(ENTRY), Some(&[1u8, 2, 3][..]));
        assert_eq!(image.module("lib/util.js"), Some(&[4u8, 5][..]));
        assert_eq!(image.module("missing.js"), None);
    }

    #[test]
    fn rejects_corruption_and_truncation() {
        let mut bytes = sample();
        bytes[12] ^= 0xff;
        let err = ProgramImage::parse(Arc::new(bytes)).expect_err("corrupted");
        assert!(err.contains("checksum"), "{err}");

        let bytes = sample()[..10].to_vec();
        assert!(ProgramImage::parse(Arc::new(bytes)).is_err());
        assert!(ProgramImage::parse(Arc::new(Vec::new())).is_err());
    }

    #[test]
    fn requires_the_entry_module() {
        let bytes = pack(&[("other.js".to_owned(), vec![1])]).expect("pack");
        let err = ProgramImage::parse(Arc::new(bytes)).expect_err("no entry");
        assert!(err.contains("integration.js"), "{err}");
    }
}
