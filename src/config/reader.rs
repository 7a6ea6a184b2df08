//! Typed reading of one YAML mapping, with the bookkeeping that makes the four field classes
//! of DESIGN.md work: every field read is marked consumed, `unsupported` and `ignored` mark
//! and report valid Istio fields, and `finish` reports what is left as `unknown field`.
//!
//! Owns field-name matching (camelCase and snake_case, as Istio's protobuf JSON mapping reads
//! them). It must not know any resource kind: the kind loaders say which fields exist; nor
//! type scalars itself (`scalar.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::context::Cx;
use super::model::{Span, Spanned};
use super::scalar::{node_bool, node_duration, node_int, node_string, node_string_map};
use super::yaml::{Node, NodeKind};

/// `sniHosts` -> `sni_hosts`: the protobuf field name behind a JSON (camelCase) name.
pub(crate) fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// True when `key` is one of `names` ("a|b" lists aliases) in camelCase or snake_case.
fn key_matches(key: &str, names: &str) -> bool {
    names.split('|').any(|n| key == n || key == snake_case(n))
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// One mapping being read. Fields are looked up by their Istio JSON (camelCase) name.
pub(crate) struct Obj<'a> {
    span: Span,
    entries: &'a [(Node, Node)],
    used: Vec<bool>,
    /// The resource kind, for `unknown field ... in <kind> <path>`.
    kind: &'static str,
    /// Where this mapping is in the document, e.g. `spec.http[0].match[1]`.
    path: String,
}

impl<'a> Obj<'a> {
    /// A mapping at `path`; null reads as an empty mapping. Anything else is an error.
    pub fn new(cx: &mut Cx, node: &'a Node, kind: &'static str, path: String) -> Option<Self> {
        let entries: &'a [(Node, Node)] = match &node.kind {
            NodeKind::Map(entries) => entries,
            NodeKind::Null => &[],
            _ => {
                let at = if path.is_empty() {
                    kind.to_string()
                } else {
                    path
                };
                cx.error(
                    &node.span,
                    format!("{at}: expected a mapping, found {}", node.describe()),
                );
                return None;
            }
        };
        for (k, _) in entries {
            if k.as_scalar().is_none() {
                cx.error(
                    &k.span,
                    format!("{kind} {path}: field names must be strings"),
                );
            }
        }
        Some(Obj {
            span: node.span.clone(),
            used: entries
                .iter()
                .map(|(k, _)| k.as_scalar().is_none())
                .collect(),
            entries,
            kind,
            path,
        })
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Names the resource kind once the document's `kind` is known.
    pub fn set_kind(&mut self, kind: &'static str) {
        self.kind = kind;
    }

    /// This mapping's own path (`spec.servers[0].tls`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The document path of a field of this mapping (`spec.http[0].rewrite`).
    pub fn path_of(&self, name: &str) -> String {
        join(&self.path, name)
    }

    /// The field names as written (for mappings keyed by data, such as header names).
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.entries.iter().filter_map(|(k, _)| k.as_scalar())
    }

    /// A file path field: resolved against the config's directory, existence checked later.
    pub fn file(&mut self, cx: &mut Cx, names: &str) -> Option<PathBuf> {
        let s = self.string(cx, names)?;
        Some(cx.file_ref(&s, self.path_of(names)))
    }

    /// Whether the field is present (null counts as absent), without consuming it.
    pub fn has(&self, names: &str) -> bool {
        self.entries
            .iter()
            .any(|(k, v)| k.as_scalar().is_some_and(|k| key_matches(k, names)) && !v.is_null())
    }

    /// The entry for a field, consumed. Writing one field twice (also as `sniHosts` and
    /// `sni_hosts`) is an error: YAML parsers disagree on which one wins.
    fn entry(&mut self, cx: &mut Cx, names: &str) -> Option<&'a (Node, Node)> {
        let mut found: Option<&'a (Node, Node)> = None;
        for (i, e) in self.entries.iter().enumerate() {
            let Some(key) = e.0.as_scalar() else { continue };
            if !key_matches(key, names) {
                continue;
            }
            self.used[i] = true;
            if found.is_some() {
                let msg = format!("duplicate field '{key}' in {}", self.context());
                cx.error(&e.0.span, msg);
            } else {
                found = Some(e);
            }
        }
        found
    }

    /// A field's value, consumed; null is absent.
    pub fn node(&mut self, cx: &mut Cx, names: &str) -> Option<&'a Node> {
        self.entry(cx, names).map(|e| &e.1).filter(|v| !v.is_null())
    }

    fn missing(&self, cx: &mut Cx, names: &str) {
        let name = names.split('|').next().unwrap_or(names);
        cx.error(
            &self.span,
            format!("missing field '{name}' in {}", self.context()),
        );
    }

    fn context(&self) -> String {
        if self.path.is_empty() {
            self.kind.to_string()
        } else {
            format!("{} {}", self.kind, self.path)
        }
    }

    pub fn string(&mut self, cx: &mut Cx, names: &str) -> Option<Spanned<String>> {
        let node = self.node(cx, names)?;
        node_string(cx, node, &self.path_of(names))
    }

    /// Reports `missing field` unless the field is present (null counts as missing).
    pub fn require(&mut self, cx: &mut Cx, names: &str) -> bool {
        if self.has(names) {
            return true;
        }
        self.entry(cx, names);
        self.missing(cx, names);
        false
    }

    pub fn req_string(&mut self, cx: &mut Cx, names: &str) -> Option<Spanned<String>> {
        if !self.require(cx, names) {
            return None;
        }
        self.string(cx, names)
    }

    pub fn int(&mut self, cx: &mut Cx, names: &str, min: i64, max: i64) -> Option<i64> {
        let node = self.node(cx, names)?;
        node_int(cx, node, &self.path_of(names), min, max)
    }

    pub fn u32(&mut self, cx: &mut Cx, names: &str) -> Option<u32> {
        self.int(cx, names, 0, i64::from(u32::MAX))
            .and_then(|v| u32::try_from(v).ok())
    }

    /// A port number, 1..65535.
    pub fn port(&mut self, cx: &mut Cx, names: &str) -> Option<u16> {
        self.int(cx, names, 1, 65535)
            .and_then(|v| u16::try_from(v).ok())
    }

    pub fn req_port(&mut self, cx: &mut Cx, names: &str) -> Option<u16> {
        if !self.require(cx, names) {
            return None;
        }
        self.port(cx, names)
    }

    pub fn bool(&mut self, cx: &mut Cx, names: &str) -> Option<bool> {
        let node = self.node(cx, names)?;
        node_bool(cx, node, &self.path_of(names))
    }

    pub fn duration(&mut self, cx: &mut Cx, names: &str) -> Option<Duration> {
        let node = self.node(cx, names)?;
        node_duration(cx, node, &self.path_of(names))
    }

    /// The items of a list field, each with its path (`spec.hosts[2]`).
    pub fn list(&mut self, cx: &mut Cx, names: &str) -> Vec<(String, &'a Node)> {
        let Some(node) = self.node(cx, names) else {
            return Vec::new();
        };
        let path = self.path_of(names);
        match &node.kind {
            NodeKind::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| (format!("{path}[{i}]"), n))
                .collect(),
            _ => {
                cx.error(
                    &node.span,
                    format!("{path}: expected a list, found {}", node.describe()),
                );
                Vec::new()
            }
        }
    }

    pub fn strings(&mut self, cx: &mut Cx, names: &str) -> Vec<Spanned<String>> {
        self.list(cx, names)
            .into_iter()
            .filter_map(|(path, n)| node_string(cx, n, &path))
            .collect()
    }

    /// A list of mappings, each read as an `Obj`.
    pub fn objs(&mut self, cx: &mut Cx, names: &str) -> Vec<Obj<'a>> {
        let kind = self.kind;
        self.list(cx, names)
            .into_iter()
            .filter_map(|(path, n)| Obj::new(cx, n, kind, path))
            .collect()
    }

    pub fn child(&mut self, cx: &mut Cx, names: &str) -> Option<Obj<'a>> {
        let node = self.node(cx, names)?;
        let path = self.path_of(names);
        Obj::new(cx, node, self.kind, path)
    }

    /// A mapping of strings to strings (labels, selectors). Plain scalars such as `1.10` or
    /// `true` keep the text written.
    pub fn string_map(&mut self, cx: &mut Cx, names: &str) -> BTreeMap<String, String> {
        match self.node(cx, names) {
            Some(node) => node_string_map(cx, node, &self.path_of(names)),
            None => BTreeMap::new(),
        }
    }

    /// An enum written as Istio writes it (case-sensitive). Valid Istio values that egressd
    /// does not implement are `unsupported`; anything else names the allowed values.
    pub fn enum_value<T: Copy>(
        &mut self,
        cx: &mut Cx,
        names: &str,
        allowed: &[(&str, T)],
        unsupported: &[&str],
    ) -> Option<T> {
        let s = self.string(cx, names)?;
        if let Some((_, v)) = allowed.iter().find(|(n, _)| *n == s.value) {
            return Some(*v);
        }
        let path = self.path_of(names);
        if unsupported.contains(&s.value.as_str()) {
            cx.error(
                &s.span,
                format!("unsupported by egressd: {path} {}", s.value),
            );
        } else {
            let list: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            let msg = format!(
                "{path}: invalid value '{}', expected one of {}",
                s.value,
                list.join(", ")
            );
            cx.error(&s.span, msg);
        }
        None
    }

    /// Valid Istio fields that egressd does not implement: an error each, if present.
    pub fn unsupported(&mut self, cx: &mut Cx, names: &[&str]) {
        for name in names {
            if let Some(e) = self.entry(cx, name) {
                // Named as written (`mirror_percent` stays snake_case) so it can be found.
                let written = e.0.as_scalar().unwrap_or(name);
                let msg = format!("unsupported by egressd: {}", self.path_of(written));
                cx.error(&e.0.span, msg);
            }
        }
    }

    /// Valid Istio fields meaningless on a file-configured gateway: a warning each, if present.
    pub fn ignored(&mut self, cx: &mut Cx, names: &[&str]) {
        for name in names {
            if let Some(e) = self.entry(cx, name) {
                let written = e.0.as_scalar().unwrap_or(name);
                let msg = format!(
                    "ignored by egressd: {} (meaningless on a file-configured gateway)",
                    self.path_of(written)
                );
                cx.warn(&e.0.span, msg);
            }
        }
    }

    /// Reports every field nobody read: typos and fields Istio does not have.
    pub fn finish(self, cx: &mut Cx) {
        let context = self.context();
        for ((k, _), used) in self.entries.iter().zip(&self.used) {
            if !used {
                let key = k.as_scalar().unwrap_or("?");
                cx.error(&k.span, format!("unknown field '{key}' in {context}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{yaml, LoadMode};
    use std::sync::Arc;

    fn cx() -> Cx {
        Cx::new(PathBuf::from("/etc/egressd"), LoadMode::Validate)
    }

    #[test]
    fn snake_and_camel_names_are_the_same_field() {
        assert_eq!(snake_case("sniHosts"), "sni_hosts");
        assert_eq!(
            snake_case("http1MaxPendingRequests"),
            "http1_max_pending_requests"
        );
        let docs = yaml::parse(
            "sni_hosts: [a]\nmaxRetries: 3\nhsots: 1\n",
            &Arc::new("t.yaml".into()),
        )
        .unwrap();
        let mut cx = cx();
        let mut o = Obj::new(&mut cx, &docs[0], "VirtualService", "spec".into()).unwrap();
        assert_eq!(o.strings(&mut cx, "sniHosts").len(), 1);
        assert_eq!(o.u32(&mut cx, "maxRetries"), Some(3));
        o.finish(&mut cx);
        assert_eq!(cx.diags.len(), 1);
        assert_eq!(
            cx.diags[0].message,
            "unknown field 'hsots' in VirtualService spec"
        );
        assert_eq!(cx.diags[0].position(), (3, 1));
    }

    #[test]
    fn both_spellings_at_once_is_a_duplicate() {
        let docs = yaml::parse(
            "sni_hosts: [a]\nsniHosts: [b]\n",
            &Arc::new("t.yaml".into()),
        )
        .unwrap();
        let mut cx = cx();
        let mut o = Obj::new(&mut cx, &docs[0], "VirtualService", String::new()).unwrap();
        o.strings(&mut cx, "sniHosts");
        o.finish(&mut cx);
        assert_eq!(cx.diags.len(), 1);
        assert!(cx.diags[0].message.contains("duplicate field 'sniHosts'"));
    }
}
