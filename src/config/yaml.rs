//! YAML text -> a small positioned tree (`Node`), one per document.
//!
//! Owns the use of `saphyr`: its marked tree gives every node a start position; this module
//! turns it into a tree of our own (scalars keep the text as written, mappings keep their
//! order and duplicate keys) so that the rest of the loader never touches saphyr types. It must
//! not interpret any value: typing and field names belong to `reader.rs` and the kind loaders.

use std::path::PathBuf;
use std::sync::Arc;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use super::diag::Diagnostic;
use super::model::Span;

/// A YAML node with the place it starts.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: NodeKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    /// `~`, `null`, or nothing at all (`key:`).
    Null,
    /// Any other scalar. `text` is what the file says (quotes removed for quoted scalars);
    /// `int` is set when YAML itself reads a plain scalar as an integer (`0x50` included).
    Scalar {
        text: String,
        quoted: bool,
        int: Option<i64>,
    },
    Seq(Vec<Node>),
    /// Keys in file order; a key written twice appears twice (the reader reports it).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar's text, None for collections and null.
    pub fn as_scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, NodeKind::Null)
    }

    /// A word for error messages: what was found where something else was expected.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Null => "null",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

/// Parses every document of `text`. Empty documents (a trailing `---`, a file of comments)
/// come back as `Null` nodes; the caller skips them. A syntax error is one diagnostic: saphyr
/// stops at the first one, so there is nothing more to collect.
pub fn parse(text: &str, file: &Arc<PathBuf>) -> Result<Vec<Node>, Diagnostic> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        let m = e.marker();
        Diagnostic::error(
            make_span(file, m.line(), m.col()),
            format!("invalid YAML: {}", e.info()),
        )
    })?;
    // saphyr's markers index characters, not bytes: keep the char boundaries to slice raw text.
    let offsets: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let conv = Converter {
        text,
        offsets: &offsets,
        file,
    };
    Ok(docs.iter().map(|d| conv.node(d)).collect())
}

/// saphyr 0.0.6 reports 1-based lines and 0-based columns; we print 1-based columns as
/// compilers do (and as editors expect for `file:line:column`).
fn make_span(file: &Arc<PathBuf>, line: usize, col: usize) -> Span {
    Span {
        file: Arc::clone(file),
        line: u32::try_from(line).unwrap_or(u32::MAX),
        col: u32::try_from(col + 1).unwrap_or(u32::MAX),
    }
}

struct Converter<'a> {
    text: &'a str,
    offsets: &'a [usize],
    file: &'a Arc<PathBuf>,
}

impl Converter<'_> {
    fn node(&self, n: &MarkedYaml<'_>) -> Node {
        let span = make_span(self.file, n.span.start.line(), n.span.start.col());
        let kind = match &n.data {
            YamlData::Value(Scalar::Null) | YamlData::BadValue => NodeKind::Null,
            YamlData::Value(Scalar::String(s)) => NodeKind::Scalar {
                text: s.to_string(),
                quoted: self.is_quoted(n),
                int: None,
            },
            YamlData::Value(Scalar::Integer(i)) => NodeKind::Scalar {
                text: self.raw(n),
                quoted: false,
                int: Some(*i),
            },
            // Plain booleans and floats: keep what was written (`1.10` stays `1.10`).
            YamlData::Value(_) => NodeKind::Scalar {
                text: self.raw(n),
                quoted: false,
                int: None,
            },
            YamlData::Representation(s, _, _) => NodeKind::Scalar {
                text: s.to_string(),
                quoted: false,
                int: None,
            },
            YamlData::Sequence(items) => {
                NodeKind::Seq(items.iter().map(|i| self.node(i)).collect())
            }
            YamlData::Mapping(map) => NodeKind::Map(
                map.iter()
                    .map(|(k, v)| (self.node(k), self.node(v)))
                    .collect(),
            ),
            YamlData::Tagged(_, inner) => return self.node(inner),
            // saphyr resolves aliases to a copy of the anchored node; one left here was
            // unresolvable, which the reader will refuse as a null where a value is needed.
            YamlData::Alias(_) => NodeKind::Null,
        };
        Node { kind, span }
    }

    fn raw(&self, n: &MarkedYaml<'_>) -> String {
        let start = self.offsets.get(n.span.start.index()).copied();
        let end = self.offsets.get(n.span.end.index()).copied();
        match (start, end) {
            (Some(s), Some(e)) if s <= e => self.text[s..e].trim().to_string(),
            _ => String::new(),
        }
    }

    fn is_quoted(&self, n: &MarkedYaml<'_>) -> bool {
        let first = self.offsets.get(n.span.start.index()).copied();
        first
            .and_then(|s| self.text[s..].chars().next())
            .is_some_and(|c| c == '"' || c == '\'')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(text: &str) -> Vec<Node> {
        parse(text, &Arc::new(PathBuf::from("t.yaml"))).expect("valid YAML")
    }

    #[test]
    fn positions_are_one_based_and_scalars_keep_their_text() {
        let docs = parse_one("a: 1.10\nb:\n  - x: \"80\"\n    y: 0x50\n");
        let NodeKind::Map(top) = &docs[0].kind else {
            panic!("mapping expected")
        };
        assert_eq!((top[0].0.span.line, top[0].0.span.col), (1, 1));
        assert_eq!(top[0].1.as_scalar(), Some("1.10"));
        let NodeKind::Seq(items) = &top[1].1.kind else {
            panic!("list expected")
        };
        let NodeKind::Map(item) = &items[0].kind else {
            panic!("mapping expected")
        };
        assert_eq!((item[0].1.span.line, item[0].1.span.col), (3, 8));
        assert!(
            matches!(&item[0].1.kind, NodeKind::Scalar { text, quoted: true, .. } if text == "80")
        );
        assert!(matches!(
            &item[1].1.kind,
            NodeKind::Scalar { int: Some(80), .. }
        ));
    }

    #[test]
    fn empty_documents_are_null() {
        let docs = parse_one("a: 1\n---\n---\nb: 2\n---\n");
        let nulls = docs.iter().filter(|d| d.is_null()).count();
        assert_eq!(docs.len() - nulls, 2);
    }

    #[test]
    fn syntax_errors_point_into_the_file() {
        let err = parse("a: [1, 2\nb: 3\n", &Arc::new(PathBuf::from("t.yaml"))).unwrap_err();
        assert!(err.message.starts_with("invalid YAML"), "{err}");
        assert!(err.span.line >= 1);
    }
}
