//! Host names as Istio resources write them: normalization (lower case, no trailing dot, no
//! `ns/` prefix where Istio allows one), the wildcard rules, and wildcard matching.
//!
//! Owns the syntax of names only; which resource allows which form is said by the caller
//! (`HostForm`). It must not decide whether a host is declared: that is `validate.rs`.

use super::context::Cx;
use super::model::Spanned;
use super::reader::Obj;

/// Which forms a host field accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostForm {
    /// Exact or `*.suffix` (ServiceEntry hosts, SNI hosts, destinations).
    Name,
    /// Exact, `*.suffix` or `*` alone (Gateway server hosts, VirtualService hosts).
    NameOrStar,
    /// As `NameOrStar`, after dropping a `namespace/` prefix (`./`, `*/` too): Gateway servers.
    NamespacedOrStar,
}

/// Lower-cases, strips the trailing dot (and the `ns/` prefix for `NamespacedOrStar`), and
/// checks the wildcard and label rules. Errors are reported at the host's position.
pub(crate) fn host(
    cx: &mut Cx,
    raw: Spanned<String>,
    form: HostForm,
    path: &str,
) -> Option<Spanned<String>> {
    let mut name = raw.value.trim().to_ascii_lowercase();
    if form == HostForm::NamespacedOrStar {
        name = strip_namespace(&name).to_string();
    }
    if name.len() > 1 && name.ends_with('.') {
        name.pop();
    }
    let star_ok = form != HostForm::Name;
    match check(&name, star_ok) {
        Ok(()) => Some(Spanned {
            value: name,
            span: raw.span,
        }),
        Err(why) => {
            cx.error(&raw.span, format!("{path}: {why}"));
            None
        }
    }
}

/// The required, non-empty `hosts` list of a resource or server, each host checked.
pub(crate) fn host_list(cx: &mut Cx, o: &mut Obj<'_>, form: HostForm) -> Vec<Spanned<String>> {
    if !o.require(cx, "hosts") {
        return Vec::new();
    }
    let path = o.path_of("hosts");
    let raws = o.strings(cx, "hosts");
    if raws.is_empty() {
        cx.error(o.span(), format!("{path}: at least one host is required"));
    }
    raws.into_iter()
        .filter_map(|raw| host(cx, raw, form, &path))
        .collect()
}

/// `istio-system/istio-egressgateway` -> `istio-egressgateway`; `./x` and `*/x` too.
pub(crate) fn strip_namespace(name: &str) -> &str {
    match name.rfind('/') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

fn check(name: &str, star_ok: bool) -> Result<(), String> {
    if name == "*" {
        return if star_ok {
            Ok(())
        } else {
            Err("invalid host '*': a bare '*' is not allowed here, use '*.domain'".into())
        };
    }
    let rest = name.strip_prefix("*.").unwrap_or(name);
    if rest.contains('*') {
        return Err(format!(
            "bad wildcard '{name}': only a leading '*.' followed by a name is allowed"
        ));
    }
    check_name(rest).map_err(|why| format!("invalid host '{name}': {why}"))
}

/// DNS-1123 names: labels of 1..63 letters, digits and inner hyphens, 253 characters at most.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label '{label}' longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!("invalid character '{c}'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label '{label}' starts or ends with '-'"));
        }
    }
    Ok(())
}

/// Whether `pattern` (exact, `*.suffix` or `*`) covers `name`, which may itself be a
/// wildcard: `*.example.com` covers `a.example.com` and `*.b.example.com`, never
/// `example.com` (Envoy's rule: the star stands for one or more labels).
pub fn host_matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" || pattern == name {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            let name = name.strip_prefix('*').unwrap_or(name);
            name.len() > suffix.len() && name.ends_with(suffix)
        }
        None => false,
    }
}

/// Whether two host sets share at least one name (one host of each covers the other).
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    host_matches(a, b) || host_matches(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::Span;
    use crate::config::LoadMode;
    use std::path::PathBuf;
    use std::sync::Arc;

    fn run(raw: &str, form: HostForm) -> Result<String, String> {
        let mut cx = Cx::new(PathBuf::from("."), LoadMode::Validate);
        let span = Span {
            file: Arc::new(PathBuf::from("t.yaml")),
            line: 1,
            col: 1,
        };
        let value = raw.to_string();
        match host(&mut cx, Spanned { value, span }, form, "hosts[0]") {
            Some(h) => Ok(h.value),
            None => Err(cx.diags[0].message.clone()),
        }
    }

    #[test]
    fn normalization() {
        assert_eq!(
            run("Edition.CNN.com.", HostForm::Name),
            Ok("edition.cnn.com".into())
        );
        assert_eq!(
            run("*.Example.com", HostForm::Name),
            Ok("*.example.com".into())
        );
        assert_eq!(
            run("istio-system/edition.cnn.com", HostForm::NamespacedOrStar),
            Ok("edition.cnn.com".into())
        );
        assert_eq!(
            run("./a.com", HostForm::NamespacedOrStar),
            Ok("a.com".into())
        );
        assert_eq!(run("*/*", HostForm::NamespacedOrStar), Ok("*".into()));
        assert_eq!(run("*", HostForm::NameOrStar), Ok("*".into()));
    }

    #[test]
    fn refusals() {
        assert!(run("foo.*.com", HostForm::Name)
            .unwrap_err()
            .contains("bad wildcard"));
        assert!(run("*foo.com", HostForm::NameOrStar)
            .unwrap_err()
            .contains("bad wildcard"));
        assert!(run("*", HostForm::Name)
            .unwrap_err()
            .contains("invalid host"));
        assert!(run("a..b", HostForm::Name)
            .unwrap_err()
            .contains("invalid host"));
        assert!(run("a_b.com", HostForm::Name)
            .unwrap_err()
            .contains("invalid character '_'"));
        assert!(run("-a.com", HostForm::Name)
            .unwrap_err()
            .contains("invalid host"));
        assert!(run("ns/a.com", HostForm::Name)
            .unwrap_err()
            .contains("invalid character '/'"));
    }

    #[test]
    fn wildcard_matching_follows_envoy() {
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(host_matches("*.example.com", "*.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "badexample.com"));
        assert!(host_matches("*", "anything.io"));
        assert!(host_matches("a.com", "a.com"));
        assert!(!host_matches("a.com", "*.com"));
        assert!(hosts_overlap("a.com", "*.com"));
    }
}
