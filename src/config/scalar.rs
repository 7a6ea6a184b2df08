//! Scalars of the YAML tree read as typed values (integers with ranges, strings, booleans,
//! durations), each refusal reported at the scalar's position with the field's path.
//!
//! Owns scalar typing only; which field needs which type is the kind loaders' business.

use std::collections::BTreeMap;
use std::time::Duration;

use super::context::Cx;
use super::duration::parse_duration;
use super::model::Spanned;
use super::yaml::{Node, NodeKind};

/// Reads a scalar integer in `[min, max]`; YAML integers (`0x50`) and quoted digits both work.
pub(crate) fn node_int(cx: &mut Cx, node: &Node, path: &str, min: i64, max: i64) -> Option<i64> {
    let value = match &node.kind {
        NodeKind::Scalar { int: Some(i), .. } => Some(*i),
        NodeKind::Scalar { text, .. } => text.trim().parse::<i64>().ok(),
        _ => None,
    };
    match value {
        Some(v) if (min..=max).contains(&v) => Some(v),
        Some(v) => {
            cx.error(
                &node.span,
                format!("{path}: {v} is out of range {min}..{max}"),
            );
            None
        }
        None => {
            cx.error(
                &node.span,
                format!("{path}: expected an integer, found {}", shown(node)),
            );
            None
        }
    }
}

pub(crate) fn node_string(cx: &mut Cx, node: &Node, path: &str) -> Option<Spanned<String>> {
    match node.as_scalar() {
        Some(s) => Some(Spanned {
            value: s.to_string(),
            span: node.span.clone(),
        }),
        None => {
            cx.error(
                &node.span,
                format!("{path}: expected a string, found {}", node.describe()),
            );
            None
        }
    }
}

pub(crate) fn node_duration(cx: &mut Cx, node: &Node, path: &str) -> Option<Duration> {
    let s = node_string(cx, node, path)?;
    match parse_duration(&s.value) {
        Ok(d) => Some(d),
        Err(e) => {
            cx.error(
                &node.span,
                format!("{path}: invalid duration '{}': {e}", s.value),
            );
            None
        }
    }
}

pub(crate) fn shown(node: &Node) -> String {
    match node.as_scalar() {
        Some(s) => format!("'{s}'"),
        None => node.describe().to_string(),
    }
}

/// A mapping of strings to strings (labels, selectors). Plain scalars such as `1.10` or
/// `true` keep the text written.
pub(crate) fn node_string_map(cx: &mut Cx, node: &Node, path: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let NodeKind::Map(entries) = &node.kind else {
        let msg = format!("{path}: expected a mapping, found {}", node.describe());
        cx.error(&node.span, msg);
        return out;
    };
    for (k, v) in entries {
        let key = node_string(cx, k, path);
        let value = node_string(cx, v, &format!("{path}.{}", k.as_scalar().unwrap_or("?")));
        if let (Some(k), Some(v)) = (key, value) {
            out.insert(k.value, v.value);
        }
    }
    out
}

/// `true`/`false` as YAML 1.2 writes them; a quoted "true" is a string, as in JSON.
pub(crate) fn node_bool(cx: &mut Cx, node: &Node, path: &str) -> Option<bool> {
    let plain = match &node.kind {
        NodeKind::Scalar {
            text,
            quoted: false,
            ..
        } => Some(text.as_str()),
        _ => None,
    };
    match plain {
        Some("true" | "True" | "TRUE") => Some(true),
        Some("false" | "False" | "FALSE") => Some(false),
        _ => {
            let msg = format!("{path}: expected true or false, found {}", shown(node));
            cx.error(&node.span, msg);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{yaml, LoadMode};
    use std::path::PathBuf;
    use std::sync::Arc;

    fn scalars(text: &str) -> Vec<Node> {
        let docs = yaml::parse(text, &Arc::new(PathBuf::from("t.yaml"))).expect("valid YAML");
        match &docs[0].kind {
            NodeKind::Seq(items) => items.clone(),
            _ => panic!("list expected"),
        }
    }

    #[test]
    fn integers_have_ranges() {
        let mut cx = Cx::new(PathBuf::from("."), LoadMode::Validate);
        let n = scalars("[80, \"443\", 0x50, 70000, abc]");
        assert_eq!(node_int(&mut cx, &n[0], "p", 1, 65535), Some(80));
        assert_eq!(node_int(&mut cx, &n[1], "p", 1, 65535), Some(443));
        assert_eq!(node_int(&mut cx, &n[2], "p", 1, 65535), Some(80));
        assert!(cx.diags.is_empty());
        assert_eq!(node_int(&mut cx, &n[3], "p", 1, 65535), None);
        assert_eq!(node_int(&mut cx, &n[4], "p", 1, 65535), None);
        assert!(cx.diags[0]
            .message
            .contains("70000 is out of range 1..65535"));
        assert!(cx.diags[1]
            .message
            .contains("expected an integer, found 'abc'"));
        assert_eq!(cx.diags[1].position(), (1, 26));
    }

    #[test]
    fn booleans_and_durations() {
        let mut cx = Cx::new(PathBuf::from("."), LoadMode::Validate);
        let n = scalars("[true, \"true\", 1.5s, 10]");
        assert_eq!(node_bool(&mut cx, &n[0], "b"), Some(true));
        assert_eq!(node_bool(&mut cx, &n[1], "b"), None);
        assert_eq!(
            node_duration(&mut cx, &n[2], "d"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(node_duration(&mut cx, &n[3], "d"), None);
        assert_eq!(cx.diags.len(), 2);
        assert!(cx.diags[1].message.contains("d: invalid duration '10'"));
    }
}
