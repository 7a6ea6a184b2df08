//! One YAML document -> one resource: `apiVersion`/`kind` dispatch, `metadata`, the
//! document-level fields, and duplicate names.
//!
//! Owns the envelope shared by every kind (what Kubernetes adds around a `spec`). It must not
//! read any `spec` itself (the kind modules do) nor check references between resources
//! (`validate.rs`).

use std::collections::HashMap;
use std::path::PathBuf;

use super::context::Cx;
use super::model::{Bootstrap, Config, Meta, Span};
use super::reader::Obj;
use super::yaml::Node;
use super::{bootstrap, destination_rule, gateway, service_entry, virtual_service};

const BOOTSTRAP_API: &str = "egressd.io/v1alpha1";
const ISTIO_APIS: &[&str] = &[
    "networking.istio.io/v1alpha3",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1",
];
const KINDS: &[&str] = &[
    "EgressGateway",
    "ServiceEntry",
    "Gateway",
    "VirtualService",
    "DestinationRule",
];

/// Kubernetes metadata fields that mean nothing to a gateway configured from a file.
const IGNORED_METADATA: &[&str] = &[
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
];

/// Reads every document into a configuration, before cross-resource validation.
pub(crate) fn load_documents(cx: &mut Cx, docs: &[Node], source: PathBuf) -> Config {
    let mut config = Config {
        source,
        gateway: Bootstrap::default(),
        service_entries: Vec::new(),
        gateways: Vec::new(),
        virtual_services: Vec::new(),
        destination_rules: Vec::new(),
    };
    let mut names: HashMap<(&'static str, String), Span> = HashMap::new();
    let mut first = true;
    for doc in docs.iter().filter(|d| !d.is_null()) {
        let is_first = std::mem::replace(&mut first, false);
        let Some(mut top) = Obj::new(cx, doc, "document", String::new()) else {
            continue;
        };
        let Some(kind) = envelope(cx, &mut top) else {
            continue;
        };
        top.set_kind(kind);
        top.ignored(cx, &["status"]);
        if kind == "EgressGateway" {
            if !is_first {
                let msg = "EgressGateway must be the first document of the file";
                cx.error(top.span(), msg);
            }
            if let Some(meta) = metadata(cx, &mut top, false) {
                config.gateway.name = meta.name;
            }
            if let Some(mut spec) = top.child(cx, "spec") {
                bootstrap::load_spec(cx, &mut spec, &mut config.gateway);
                spec.finish(cx);
            }
            top.finish(cx);
            continue;
        }
        let meta = metadata(cx, &mut top, true);
        let spec = top.child(cx, "spec");
        if spec.is_none() && !top.has("spec") {
            top.require(cx, "spec");
        }
        if let (Some(meta), Some(mut spec)) = (meta, spec) {
            cx.owner = Some((kind, meta.name.clone()));
            if let Some(prev) = names.get(&(kind, meta.name.clone())) {
                let msg = format!(
                    "duplicate {kind} name '{}' (first defined at {prev})",
                    meta.name
                );
                cx.error(&meta.span, msg);
            } else {
                names.insert((kind, meta.name.clone()), meta.span.clone());
            }
            match kind {
                "ServiceEntry" => config
                    .service_entries
                    .extend(service_entry::load(cx, &mut spec, meta)),
                "Gateway" => config.gateways.extend(gateway::load(cx, &mut spec, meta)),
                "VirtualService" => config
                    .virtual_services
                    .extend(virtual_service::load(cx, &mut spec, meta)),
                _ => config
                    .destination_rules
                    .extend(destination_rule::load(cx, &mut spec, meta)),
            }
            spec.finish(cx);
            cx.owner = None;
        }
        top.finish(cx);
    }
    config
}

/// Checks `apiVersion` and `kind`; None when the document cannot be read as a known kind.
fn envelope(cx: &mut Cx, top: &mut Obj<'_>) -> Option<&'static str> {
    let api = top.req_string(cx, "apiVersion");
    let kind = top.req_string(cx, "kind")?;
    let Some(known) = KINDS.iter().copied().find(|k| *k == kind.value) else {
        let msg = format!(
            "unknown kind '{}' (expected one of {})",
            kind.value,
            KINDS.join(", ")
        );
        cx.error(&kind.span, msg);
        return None;
    };
    let api = api?;
    let allowed: &[&str] = if known == "EgressGateway" {
        &[BOOTSTRAP_API]
    } else {
        ISTIO_APIS
    };
    if !allowed.contains(&api.value.as_str()) {
        let msg = format!(
            "unknown apiVersion '{}' for kind {known} (expected {})",
            api.value,
            allowed.join(" or ")
        );
        cx.error(&api.span, msg);
        return None;
    }
    Some(known)
}

/// `metadata`: `name` (required for Istio resources), the rest warns.
fn metadata(cx: &mut Cx, top: &mut Obj<'_>, name_required: bool) -> Option<Meta> {
    let span = top.span().clone();
    let Some(mut m) = top.child(cx, "metadata") else {
        if name_required {
            top.require(cx, "metadata");
        }
        return None;
    };
    m.ignored(cx, IGNORED_METADATA);
    let name = if name_required {
        m.req_string(cx, "name")
    } else {
        m.string(cx, "name")
    };
    m.finish(cx);
    Some(Meta {
        name: name?.value,
        span,
    })
}
