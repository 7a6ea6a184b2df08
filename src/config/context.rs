//! The state of one load: where diagnostics go, how relative paths in the file are read,
//! and which referenced files (certificates, keys) remain to be checked.
//!
//! Owns the `validate` vs `run` difference for missing files. It must not read YAML nor know
//! resource kinds beyond the (kind, name) owner tag it is given.

use std::path::{Path, PathBuf};

use super::diag::Diagnostic;
use super::model::{Span, Spanned};
use super::LoadMode;

/// The state of one load: where diagnostics go and how paths in the file are read.
pub(crate) struct Cx {
    /// The file's directory: relative paths inside the file are relative to it.
    pub base_dir: PathBuf,
    pub mode: LoadMode,
    pub diags: Vec<Diagnostic>,
    /// The resource being read (kind, name); None for the bootstrap, which always applies.
    pub owner: Option<(&'static str, String)>,
    /// Referenced files, checked once `validate.rs` knows which resources apply here: a
    /// sidecar-side DestinationRule's files are not ours to find.
    pending_files: Vec<PendingFile>,
}

struct PendingFile {
    owner: Option<(&'static str, String)>,
    path: PathBuf,
    span: Span,
    field: String,
}

impl Cx {
    pub fn new(base_dir: PathBuf, mode: LoadMode) -> Self {
        Cx {
            base_dir,
            mode,
            diags: Vec::new(),
            owner: None,
            pending_files: Vec::new(),
        }
    }

    pub fn error(&mut self, span: &Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(span.clone(), message));
    }

    pub fn warn(&mut self, span: &Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::warning(span.clone(), message));
    }

    /// A path from the file, made absolute against the file's directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Resolves a file the gateway will read (certificate, key) and remembers to check that
    /// it exists, at the place it is written, if its resource applies.
    pub fn file_ref(&mut self, s: &Spanned<String>, field: String) -> PathBuf {
        let path = self.resolve(&s.value);
        self.pending_files.push(PendingFile {
            owner: self.owner.clone(),
            path: path.clone(),
            span: s.span.clone(),
            field,
        });
        path
    }

    /// Checks the remembered files of the resources `applies` keeps. A missing file only
    /// warns in `validate` (the guide's `/etc/certs` paths must validate on a laptop) and
    /// refuses the file in `run`.
    pub fn check_files(&mut self, applies: impl Fn(&'static str, &str) -> bool) {
        for f in std::mem::take(&mut self.pending_files) {
            if let Some((kind, name)) = &f.owner {
                if !applies(kind, name) {
                    continue;
                }
            }
            if f.path.is_file() {
                continue;
            }
            let msg = format!("{}: file not found: {}", f.field, f.path.display());
            match self.mode {
                LoadMode::Validate => self.warn(&f.span, msg),
                LoadMode::Run => self.error(&f.span, msg),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn spanned(value: &str) -> Spanned<String> {
        let span = Span {
            file: Arc::new(PathBuf::from("t.yaml")),
            line: 3,
            col: 9,
        };
        Spanned {
            value: value.to_string(),
            span,
        }
    }

    #[test]
    fn missing_files_warn_in_validate_and_fail_in_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("present.pem"), "x").expect("write");
        for (mode, want_error) in [(LoadMode::Validate, false), (LoadMode::Run, true)] {
            let mut cx = Cx::new(dir.path().to_path_buf(), mode);
            let p = cx.file_ref(&spanned("present.pem"), "a".into());
            assert_eq!(p, dir.path().join("present.pem"));
            cx.file_ref(&spanned("absent.pem"), "b".into());
            cx.owner = Some(("DestinationRule", "sidecar".into()));
            cx.file_ref(&spanned("/nonexistent/ignored.pem"), "c".into());
            cx.check_files(|_, name| name != "sidecar");
            assert_eq!(cx.diags.len(), 1, "{:?}", cx.diags);
            assert_eq!(cx.diags[0].is_error(), want_error);
            assert!(cx.diags[0].message.starts_with("b: file not found: "));
        }
    }

    #[test]
    fn relative_paths_are_beside_the_file() {
        let cx = Cx::new(PathBuf::from("/etc/egressd"), LoadMode::Validate);
        assert_eq!(
            cx.resolve("certs/key.pem"),
            PathBuf::from("/etc/egressd/certs/key.pem")
        );
        assert_eq!(
            cx.resolve("/etc/certs/key.pem"),
            PathBuf::from("/etc/certs/key.pem")
        );
    }
}
