//! Host names as routing sees them: normalisation of a request's Host/SNI and the patterns
//! (`exact`, `*.suffix`, `*`) that Istio resources write. Pure functions, no allocation on
//! the match path.

use std::borrow::Cow;

/// A host pattern from a Gateway server, a VirtualService or a ServiceEntry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: every name.
    Any,
    /// `*.example.com`, stored as `.example.com`: one or more labels before it, never the
    /// bare `example.com` (Envoy's rule).
    Suffix(String),
    Exact(String),
}

impl HostPattern {
    /// Parses an already lower-cased pattern.
    pub fn parse(pattern: &str) -> Self {
        if pattern == "*" {
            HostPattern::Any
        } else if let Some(rest) = pattern.strip_prefix('*') {
            HostPattern::Suffix(rest.to_string())
        } else {
            HostPattern::Exact(pattern.to_string())
        }
    }

    /// `host` must already be normalised (see `normalize_host`).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            HostPattern::Exact(name) => name == host,
        }
    }

    /// Higher is more specific: exact names before the longest wildcard, `*` last; the
    /// order Envoy uses to pick a virtual host.
    pub fn specificity(&self) -> usize {
        match self {
            HostPattern::Any => 0,
            HostPattern::Suffix(suffix) => 1 + suffix.len(),
            HostPattern::Exact(_) => usize::MAX,
        }
    }

    /// True when some name could match both patterns (used to bind a VirtualService's hosts
    /// to a server's hosts).
    pub fn overlaps(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Any, _) | (_, HostPattern::Any) => true,
            (HostPattern::Exact(a), p) | (p, HostPattern::Exact(a)) => p.matches(a),
            (HostPattern::Suffix(a), HostPattern::Suffix(b)) => {
                a.ends_with(b.as_str()) || b.ends_with(a.as_str())
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Suffix(s) => write!(f, "*{s}"),
            HostPattern::Exact(s) => f.write_str(s),
        }
    }
}

/// Normalises a Host header or `:authority` for matching: strips the port (also from
/// `[v6]:port`), lower-cases, removes one trailing dot. Returns None for an empty or
/// syntactically impossible host; the caller answers 400.
pub fn normalize_host(authority: &str) -> Option<Cow<'_, str>> {
    if authority.starts_with('[') {
        return normalize_ip_literal(authority);
    }
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if valid_port(port) => h,
        Some(_) => return None,
        None => authority,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    // One pass, as every request's Host goes through here: the bytes allowed in a name
    // (colons and brackets belong only inside an IP literal, so `::0` is not a host), no
    // empty label (`.`, `a..b`, `.a` name nothing in DNS and could dodge exact rules), and
    // whether a copy is needed to lower-case it.
    let mut after_dot = true;
    let mut upper = false;
    for b in host.bytes() {
        match b {
            b'.' if after_dot => return None,
            b'.' => after_dot = true,
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => after_dot = false,
            b'A'..=b'Z' => (upper, after_dot) = (true, false),
            _ => return None,
        }
    }
    // Still after a dot: the name is empty or ends in an empty label.
    if after_dot {
        return None;
    }
    Some(lowercase(host, upper))
}

/// `[v6]` or `[v6]:port`, kept with its brackets.
fn normalize_ip_literal(authority: &str) -> Option<Cow<'_, str>> {
    let rest = &authority[1..];
    let end = rest.find(']')?;
    let after = &rest[end + 1..];
    if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
        return None;
    }
    let host = &authority[..end + 2];
    if !host.bytes().all(host_byte) {
        return None;
    }
    Some(lowercase(
        host,
        host.bytes().any(|b| b.is_ascii_uppercase()),
    ))
}

/// Most clients send lowercase names: those are borrowed rather than copied.
fn lowercase(host: &str, has_upper: bool) -> Cow<'_, str> {
    if has_upper {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The port written in an authority, if any.
pub fn authority_port(authority: &str) -> Option<u16> {
    let tail = match authority.rfind(']') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    tail.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// Bytes allowed in a reg-name or IP literal (RFC 3986, without percent-encoding, which no
/// DNS name needs).
fn host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_port_and_trailing_dot() {
        assert_eq!(
            normalize_host("Edition.CNN.com.:80").as_deref(),
            Some("edition.cnn.com")
        );
        assert_eq!(normalize_host("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("a b"), None);
        assert_eq!(normalize_host("host:port"), None);
        assert_eq!(normalize_host("::0"), None);
        assert_eq!(normalize_host(".."), None);
        assert_eq!(normalize_host("a..example.com"), None);
        assert_eq!(normalize_host("a:b:80"), None);
        assert_eq!(normalize_host(""), None);
        assert_eq!(authority_port("x.com:8080"), Some(8080));
        assert_eq!(authority_port("[::1]"), None);
    }

    #[test]
    fn wildcard_needs_at_least_one_label() {
        let p = HostPattern::parse("*.example.com");
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
        assert!(HostPattern::Any.matches("anything"));
    }

    #[test]
    fn specificity_orders_exact_then_longest_suffix() {
        let exact = HostPattern::parse("a.example.com");
        let long = HostPattern::parse("*.example.com");
        let short = HostPattern::parse("*.com");
        assert!(exact.specificity() > long.specificity());
        assert!(long.specificity() > short.specificity());
        assert!(short.specificity() > HostPattern::Any.specificity());
        assert!(long.overlaps(&short));
        assert!(long.overlaps(&exact));
        assert!(!exact.overlaps(&HostPattern::parse("b.example.com")));
    }
}
