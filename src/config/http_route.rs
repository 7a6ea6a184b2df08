//! The `http` section of a VirtualService: routes, their match conditions (uri, authority,
//! headers, method, port, gateways), timeouts and retries.
//!
//! Owns reading one HTTP route and the Istio fields egressd refuses there (`rewrite`,
//! `redirect`, `mirror`, `fault`, header operations...). It must not decide which server a
//! route binds to (route tables) nor whether its destination is declared (`validate.rs`).

use std::collections::BTreeMap;

use super::context::Cx;
use super::model::{HttpMatch, HttpRoute, Retries, RetryOn, StringMatch};
use super::reader::Obj;
use super::virtual_service::{gateway_names, weighted_destinations};

/// HTTP route fields that are valid Istio but not implemented by egressd.
const UNSUPPORTED_ROUTE_FIELDS: &[&str] = &[
    "redirect",
    "directResponse",
    "delegate",
    "rewrite",
    "mirror",
    "mirrors",
    "mirrorPercentage",
    "mirrorPercent",
    "fault",
    "corsPolicy",
    "headers",
];

const UNSUPPORTED_MATCH_FIELDS: &[&str] = &[
    "scheme",
    "queryParams",
    "sourceLabels",
    "sourceNamespace",
    "ignoreUriCase",
    "withoutHeaders",
    "statPrefix",
];

const RETRY_ON: &[(&str, RetryOn)] = &[
    ("connect-failure", RetryOn::ConnectFailure),
    ("refused-stream", RetryOn::RefusedStream),
    ("reset", RetryOn::Reset),
    ("5xx", RetryOn::Status5xx),
    ("503", RetryOn::Status503),
];

/// Envoy retry conditions Istio passes through that egressd does not implement.
const UNSUPPORTED_RETRY_ON: &[&str] = &[
    "gateway-error",
    "retriable-4xx",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "reset-before-request",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

pub(crate) fn http_route(cx: &mut Cx, r: &mut Obj<'_>) -> Option<HttpRoute> {
    r.unsupported(cx, UNSUPPORTED_ROUTE_FIELDS);
    let name = r.string(cx, "name").map(|n| n.value);
    let mut matches = Vec::new();
    for mut m in r.objs(cx, "match") {
        if let Some(hm) = http_match(cx, &mut m) {
            matches.push(hm);
        }
        m.finish(cx);
    }
    let route = weighted_destinations(cx, r);
    let timeout = r.duration(cx, "timeout");
    let retries = match r.child(cx, "retries") {
        Some(mut o) => {
            let retries = retries(cx, &mut o);
            o.finish(cx);
            retries
        }
        None => None,
    };
    Some(HttpRoute {
        name,
        matches,
        route,
        timeout,
        retries,
        span: r.span().clone(),
    })
}

fn http_match(cx: &mut Cx, m: &mut Obj<'_>) -> Option<HttpMatch> {
    m.unsupported(cx, UNSUPPORTED_MATCH_FIELDS);
    let name = m.string(cx, "name").map(|n| n.value);
    let gateways = gateway_names(m.strings(cx, "gateways"));
    let port = m.port(cx, "port");
    let uri = string_match_field(cx, m, "uri");
    let authority = string_match_field(cx, m, "authority");
    let method = string_match_field(cx, m, "method");
    let mut headers = BTreeMap::new();
    if let Some(mut h) = m.child(cx, "headers") {
        let names: Vec<String> = h.keys().map(str::to_string).collect();
        for header in names {
            if let Some(mut o) = h.child(cx, &header) {
                if let Some(sm) = string_match(cx, &mut o) {
                    headers.insert(header.to_ascii_lowercase(), sm);
                }
                o.finish(cx);
            }
        }
        h.finish(cx);
    }
    Some(HttpMatch {
        name,
        gateways,
        port,
        uri,
        authority,
        headers,
        method,
        span: m.span().clone(),
    })
}

fn string_match_field(cx: &mut Cx, m: &mut Obj<'_>, name: &str) -> Option<StringMatch> {
    let mut o = m.child(cx, name)?;
    let sm = string_match(cx, &mut o);
    o.finish(cx);
    sm
}

/// `{exact: x}`, `{prefix: x}` or `{regex: x}`: exactly one. Regexes are RE2 syntax and must
/// match the whole value, so they are checked here as `^(?:...)$`.
fn string_match(cx: &mut Cx, o: &mut Obj<'_>) -> Option<StringMatch> {
    let exact = o.string(cx, "exact");
    let prefix = o.string(cx, "prefix");
    let regex = o.string(cx, "regex");
    let count = [exact.is_some(), prefix.is_some(), regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if count != 1 {
        let msg = format!(
            "{}: exactly one of exact, prefix or regex is required",
            o.path()
        );
        cx.error(o.span(), msg);
        return None;
    }
    if let Some(e) = exact {
        return Some(StringMatch::Exact(e.value));
    }
    if let Some(p) = prefix {
        return Some(StringMatch::Prefix(p.value));
    }
    let r = regex?;
    if let Err(e) = regex::Regex::new(&format!("^(?:{})$", r.value)) {
        let first = e.to_string().lines().last().unwrap_or_default().to_string();
        cx.error(
            &r.span,
            format!("{}.regex: invalid regex '{}': {first}", o.path(), r.value),
        );
        return None;
    }
    Some(StringMatch::Regex(r.value))
}

fn retries(cx: &mut Cx, o: &mut Obj<'_>) -> Option<Retries> {
    o.unsupported(cx, &["retryRemoteLocalities"]);
    let attempts = if o.has("attempts") {
        o.u32(cx, "attempts")?
    } else {
        o.u32(cx, "attempts");
        2
    };
    let per_try_timeout = o.duration(cx, "perTryTimeout");
    let mut retry_on = Vec::new();
    if let Some(s) = o.string(cx, "retryOn") {
        let path = o.path_of("retryOn");
        for cond in s.value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if let Some((_, r)) = RETRY_ON.iter().find(|(n, _)| *n == cond) {
                retry_on.push(*r);
            } else if UNSUPPORTED_RETRY_ON.contains(&cond) || cond.parse::<u16>().is_ok() {
                cx.error(&s.span, format!("unsupported by egressd: {path} {cond}"));
            } else {
                let allowed: Vec<&str> = RETRY_ON.iter().map(|(n, _)| *n).collect();
                let msg = format!(
                    "{path}: invalid value '{cond}', expected one of {}",
                    allowed.join(", ")
                );
                cx.error(&s.span, msg);
            }
        }
    }
    // DESIGN.md: retries default to connect failures only.
    if retry_on.is_empty() {
        retry_on.push(RetryOn::ConnectFailure);
    }
    Some(Retries {
        attempts,
        per_try_timeout,
        retry_on,
    })
}
