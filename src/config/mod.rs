//! Configuration: the typed model, loading with file:line:column diagnostics, validation.
//!
//! `load` reads one multi-document YAML file (DESIGN.md "Configuration contract") into a
//! `model::Config`, or answers with every error found, sorted by position. Module map:
//! `yaml` (text -> positioned tree), `reader` (typed field access, the four field classes),
//! `document` (apiVersion/kind/metadata), one module per kind, `validate` (cross-resource
//! rules), `diag` (what is printed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

mod bootstrap;
mod context;
mod destination_rule;
pub mod diag;
mod document;
pub mod duration;
mod gateway;
pub mod hosts;
mod http_route;
pub mod model;
mod reader;
mod scalar;
mod service_entry;
pub mod tls_params;
mod validate;
mod virtual_service;
mod yaml;

pub use diag::{Diagnostic, Severity};
pub use service_entry::protocol_name;

/// What the file is loaded for. Referenced files (certificates, keys) that do not exist are
/// warnings in `Validate` (the guide's `/etc/certs` paths must validate anywhere) and errors
/// in `Run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMode {
    Validate,
    Run,
}

/// A configuration that loaded, with the warnings to print.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: model::Config,
    /// Sorted by position.
    pub warnings: Vec<Diagnostic>,
}

/// Reads and validates `path`. On failure, every error found (warnings included, so the
/// caller can print the whole picture), sorted by position.
pub fn load(path: &Path, mode: LoadMode) -> Result<Loaded, Vec<Diagnostic>> {
    match std::fs::read_to_string(path) {
        Ok(text) => load_str(&text, path, mode),
        Err(e) => {
            let span = model::Span {
                file: Arc::new(path.to_path_buf()),
                line: 1,
                col: 1,
            };
            Err(vec![Diagnostic::error(
                span,
                format!("cannot read configuration: {e}"),
            )])
        }
    }
}

/// As `load`, for text already in memory; `file` names it in diagnostics and its directory
/// anchors relative paths.
pub fn load_str(text: &str, file: &Path, mode: LoadMode) -> Result<Loaded, Vec<Diagnostic>> {
    let file_arc = Arc::new(file.to_path_buf());
    let base = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut cx = context::Cx::new(std::path::absolute(&base).unwrap_or(base), mode);
    let docs = yaml::parse(text, &file_arc).map_err(|d| vec![d])?;
    let mut config = document::load_documents(&mut cx, &docs, file.to_path_buf());
    validate::validate(&mut cx, &mut config);
    let mut diags = cx.diags;
    diag::sort(&mut diags);
    if diags.iter().any(Diagnostic::is_error) {
        Err(diags)
    } else {
        Ok(Loaded {
            config,
            warnings: diags,
        })
    }
}
