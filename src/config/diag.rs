//! Diagnostics: one finding about the configuration file, with the place it points at.
//!
//! Owns the `Diagnostic` type and its user-facing rendering (`file:line:column: message`,
//! `file:line:column: warning: message`), which `egressd validate` prints as is. It must not
//! decide what is an error: the loaders and `validate.rs` do.

use std::fmt;

use super::model::Span;

/// How bad a finding is: errors refuse the file, warnings are printed and the file is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about the configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            span,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    pub fn warning(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            span,
            severity: Severity::Warning,
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `line:column`, the part tests and editors match on.
    pub fn position(&self) -> (u32, u32) {
        (self.span.line, self.span.col)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.span, self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.span, self.message),
        }
    }
}

impl std::error::Error for Diagnostic {}

/// Sorts findings by position (then errors first), the order a reader of the file expects.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        (a.span.line, a.span.col, a.severity).cmp(&(b.span.line, b.span.col, b.severity))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn span(line: u32, col: u32) -> Span {
        Span {
            file: Arc::new(PathBuf::from("config/egressd.yaml")),
            line,
            col,
        }
    }

    #[test]
    fn errors_and_warnings_render_as_compilers_do() {
        let e = Diagnostic::error(span(3, 5), "unknown field 'hsots' in ServiceEntry spec");
        assert_eq!(
            e.to_string(),
            "config/egressd.yaml:3:5: unknown field 'hsots' in ServiceEntry spec"
        );
        let w = Diagnostic::warning(span(4, 1), "ignored by egressd: exportTo");
        assert_eq!(
            w.to_string(),
            "config/egressd.yaml:4:1: warning: ignored by egressd: exportTo"
        );
    }

    #[test]
    fn sorting_follows_the_file() {
        let mut v = vec![
            Diagnostic::warning(span(9, 1), "c"),
            Diagnostic::error(span(2, 7), "b"),
            Diagnostic::error(span(2, 3), "a"),
        ];
        sort(&mut v);
        let order: Vec<&str> = v.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"]);
    }
}
