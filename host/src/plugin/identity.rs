//! Which contract a guest component was built for, read from its bytes.
//!
//! The WIT package version is part of every interface name a component
//! imports or exports (`fshost:plugin/filesystem@0.1.0`). Reading those
//! names from the component's top-level import and export sections takes a
//! fraction of a millisecond and needs no compilation, so the host refuses a
//! guest built for another contract before compiling or instantiating it,
//! with a message that names both versions, and `fshost plugins` can show
//! each guest's version without loading it. Linking would refuse such a
//! guest too, but with a message about a missing import or export.
//!
//! Compatibility follows semver as Cargo reads it: the same major version
//! (for 0.x: the same minor; for 0.0.x: the same patch).

use std::fmt;

use wasmparser::{Encoding, Parser, Payload};

/// The contract package every guest implements.
pub const PACKAGE: &str = "fshost:plugin";

/// The interface a guest must export.
pub const EXPORT: &str = "fshost:plugin/filesystem";

/// The WIT package version this host implements (wit/fshost.wit).
pub const CONTRACT_VERSION: &str = "0.2.0";

/// Why a file is not a guest this host can run.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Not a WebAssembly binary at all, or a malformed one.
    #[error("is not a WebAssembly component: {0}")]
    Malformed(String),
    /// A core module: it needs to be turned into a component first.
    #[error(
        "is a core WebAssembly module, not a component (build for wasm32-wasip2, or run `wasm-tools component new`)"
    )]
    CoreModule,
    /// A component without the filesystem export.
    #[error("is not an fshost guest: it does not export {EXPORT} (its exports: {})", list(.exports))]
    NotAGuest { exports: Vec<String> },
    /// A guest built for a contract version this host does not speak.
    #[error("was built for {}; this fshost speaks {}", built_for(.found), speaks())]
    Incompatible { found: String },
}

fn built_for(version: &str) -> String {
    if version.is_empty() { format!("an unversioned {PACKAGE}") } else { format!("{PACKAGE}@{version}") }
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "none".to_string() } else { names.join(", ") }
}

/// The versions this host accepts, as people write them: "0.1.x", "1.x".
pub fn speaks() -> String {
    match parse_version(CONTRACT_VERSION) {
        Some((0, 0, patch)) => format!("0.0.{patch}"),
        Some((0, minor, _)) => format!("0.{minor}.x"),
        Some((major, _, _)) => format!("{major}.x"),
        None => CONTRACT_VERSION.to_string(),
    }
}

/// The names a component imports and exports at its top level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "imports [{}], exports [{}]", self.imports.join(", "), self.exports.join(", "))
    }
}

impl Identity {
    /// Read the top-level import and export names of the component `wasm`.
    /// Nested modules and components are walked over, not read.
    pub fn read(wasm: &[u8]) -> Result<Identity, IdentityError> {
        let mut id = Identity::default();
        // parse_all yields the payloads of nested modules and components
        // inline, each between its own Version and End.
        let mut depth = 0u32;
        for payload in Parser::new(0).parse_all(wasm) {
            let payload = payload.map_err(|e| IdentityError::Malformed(e.to_string()))?;
            match payload {
                Payload::Version { encoding, .. } => {
                    if depth == 0 && encoding != Encoding::Component {
                        return Err(IdentityError::CoreModule);
                    }
                    depth += 1;
                }
                Payload::End(_) => depth = depth.saturating_sub(1),
                Payload::ComponentImportSection(reader) if depth == 1 => {
                    for import in reader {
                        let import = import.map_err(|e| IdentityError::Malformed(e.to_string()))?;
                        id.imports.push(import.name.name.to_string());
                    }
                }
                Payload::ComponentExportSection(reader) if depth == 1 => {
                    for export in reader {
                        let export = export.map_err(|e| IdentityError::Malformed(e.to_string()))?;
                        id.exports.push(export.name.name.to_string());
                    }
                }
                _ => {}
            }
        }
        Ok(id)
    }

    /// The version of the filesystem export ("0.1.0"), if there is one.
    /// An unversioned export reads as "" (never compatible).
    pub fn contract_version(&self) -> Option<&str> {
        self.exports.iter().find_map(|name| match name.strip_prefix(EXPORT)? {
            "" => Some(""),
            rest => rest.strip_prefix('@'),
        })
    }

    /// Check that this is an fshost guest for a contract version this host
    /// speaks. Every `fshost:plugin/...` import must match too.
    pub fn check(&self) -> Result<(), IdentityError> {
        let Some(version) = self.contract_version() else {
            return Err(IdentityError::NotAGuest { exports: self.exports.clone() });
        };
        if !compatible(version) {
            return Err(IdentityError::Incompatible { found: version.to_string() });
        }
        let prefix = format!("{PACKAGE}/");
        for name in self.imports.iter().filter(|n| n.starts_with(&prefix)) {
            let version = name.split_once('@').map_or("", |(_, v)| v);
            if !compatible(version) {
                return Err(IdentityError::Incompatible { found: version.to_string() });
            }
        }
        Ok(())
    }
}

/// Major, minor and patch of a semver version ("1.2.3", "0.1.0-rc.1+b5");
/// `None` when it is not one.
fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let mut next = || -> Option<u64> {
        let p = parts.next()?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0')) {
            return None;
        }
        p.parse().ok()
    };
    let version = (next()?, next()?, next()?);
    parts.next().is_none().then_some(version)
}

/// Whether a guest built for `version` links with this host: the same
/// major version, or for 0.x the same minor, or for 0.0.x the same patch.
pub fn compatible(version: &str) -> bool {
    compatible_with(CONTRACT_VERSION, version)
}

/// Whether `theirs` links with a host speaking `ours`, by the rule of
/// [`compatible`] (also used for the volume contract, `plugin::volume`).
pub fn compatible_with(ours: &str, theirs: &str) -> bool {
    let (Some(ours), Some(theirs)) = (parse_version(ours), parse_version(theirs)) else {
        return false;
    };
    match ours {
        (0, 0, patch) => theirs == (0, 0, patch),
        (0, minor, _) => theirs.0 == 0 && theirs.1 == minor,
        (major, _, _) => theirs.0 == major,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_version_is_the_wit_package_version() {
        let wit = include_str!("../../../wit/fshost.wit");
        assert!(wit.lines().any(|l| l == format!("package {PACKAGE}@{CONTRACT_VERSION};")));
    }

    #[test]
    fn semver_rules_for_the_contract_version() {
        assert!(compatible("0.2.0"));
        assert!(compatible("0.2.7"));
        assert!(compatible("0.2.0-rc.1"));
        assert!(!compatible("0.3.0"));
        assert!(!compatible("0.1.0"));
        assert!(!compatible("1.0.0"));
        assert!(!compatible("0.0.1"));
        assert!(!compatible(""));
        assert!(!compatible("0.2"));
        assert!(!compatible("0.02.0"));
        assert!(!compatible("0.2.0.0"));
        assert_eq!(speaks(), "0.2.x");
    }

    #[test]
    fn names_of_an_empty_component_and_a_module() {
        // The smallest component and the smallest core module: magic,
        // version and layer, nothing else.
        let component = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        let id = Identity::read(&component).unwrap();
        assert_eq!(id, Identity::default());
        assert!(matches!(id.check(), Err(IdentityError::NotAGuest { .. })));
        let module = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
        assert!(matches!(Identity::read(&module), Err(IdentityError::CoreModule)));
        assert!(matches!(Identity::read(b"not wasm"), Err(IdentityError::Malformed(_))));
        assert!(matches!(Identity::read(&component[..6]), Err(IdentityError::Malformed(_))));
    }

    #[test]
    fn a_guest_is_judged_by_its_filesystem_export_and_its_imports() {
        let guest = |export: &str, import: &str| Identity {
            imports: vec!["wasi:io/error@0.2.6".into(), import.into()],
            exports: vec![export.into()],
        };
        assert!(guest("fshost:plugin/filesystem@0.2.0", "fshost:plugin/block-device@0.2.0").check().is_ok());
        let err = guest("fshost:plugin/filesystem@1.0.0", "fshost:plugin/block-device@1.0.0").check().unwrap_err();
        assert_eq!(err.to_string(), "was built for fshost:plugin@1.0.0; this fshost speaks 0.2.x");
        let err = guest("fshost:plugin/filesystem@0.2.0", "fshost:plugin/log@0.3.0").check().unwrap_err();
        assert!(matches!(err, IdentityError::Incompatible { found } if found == "0.3.0"));
        let err = guest("fshost:plugin/filesystem", "fshost:plugin/log@0.2.0").check().unwrap_err();
        assert!(matches!(err, IdentityError::Incompatible { found } if found.is_empty()));
        assert!(matches!(guest("fshost:plugin/filesystemx@0.2.0", "").check(), Err(IdentityError::NotAGuest { .. })));
    }
}
