//! TLS origination towards a cluster's endpoints, per shard: the client config (shared,
//! reloading) specialised with this shard's own session cache, the SNI, and the tag that
//! keeps pooled TLS connections apart by (SNI, client identity, trust).
//!
//! Owns: the shard-local cache cluster name → `Origination`, rebuilt when the cluster's
//! `tls` policy or the certificate files change; the client handshake.
//! Must not: share session caches across shards (resumption state stays on the core that
//! made it) or across client identities (a session resumed under another certificate
//! would present the wrong identity).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::sync::Arc;

use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use glommio::net::TcpStream;
use rustls::client::{ClientSessionMemoryCache, Resumption};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::client::ClientSpec;
use super::store::Entry;
use crate::config::model::{Bootstrap, ClientTls};
use crate::upstream::cluster::Cluster;

/// Sessions remembered per (shard, origination config).
const SESSIONS_PER_SHARD: usize = 256;

/// How one cluster's connections are wrapped in TLS on this shard.
pub struct Origination {
    pub config: Arc<ClientConfig>,
    pub sni: ServerName<'static>,
    /// Pool key part: connections with different tags are never interchanged.
    pub tag: Rc<str>,
}

struct Slot {
    /// The policy this slot was built for (a reload may change it under the same name).
    policy: ClientTls,
    http2: bool,
    entry: Arc<Entry<ClientSpec>>,
    /// The shared config this shard's copy was derived from.
    source: Arc<ClientConfig>,
    local: Rc<Origination>,
}

thread_local! {
    static CACHE: RefCell<HashMap<String, Slot>> = RefCell::new(HashMap::new());
}

fn same_policy(a: &ClientTls, b: &ClientTls) -> bool {
    a.mode == b.mode
        && a.sni == b.sni
        && a.ca_certificates == b.ca_certificates
        && a.client_certificate == b.client_certificate
        && a.private_key == b.private_key
        && a.subject_alt_names == b.subject_alt_names
}

/// The origination for `cluster` on this shard; None when the cluster is plain. Err says
/// why its TLS config cannot be built (the request fails closed: 503 UF).
pub fn for_cluster(
    cluster: &Cluster,
    gateway: impl FnOnce() -> Bootstrap,
) -> Result<Option<Rc<Origination>>, String> {
    let Some(policy) = &cluster.tls else {
        return Ok(None);
    };
    let hit = CACHE.with(|c| {
        c.borrow().get(&*cluster.name).and_then(|slot| {
            (same_policy(&slot.policy, policy)
                && slot.http2 == cluster.http2
                && slot.entry.is_current(&slot.source))
            .then(|| slot.local.clone())
        })
    });
    if let Some(found) = hit {
        return Ok(Some(found));
    }
    let spec = ClientSpec::from_model(policy, &gateway())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "tls mode DISABLE".to_string())?;
    let entry = spec.entry().map_err(|e| e.to_string())?;
    let source = entry.current();
    let sni_name = policy.sni.clone().unwrap_or_else(|| cluster.host.clone());
    let sni = ServerName::try_from(sni_name.clone())
        .map_err(|_| format!("invalid SNI {sni_name:?} for TLS origination"))?;
    let mut config = (*source).clone();
    config.resumption =
        Resumption::store(Arc::new(ClientSessionMemoryCache::new(SESSIONS_PER_SHARD)));
    // HTTP/2 upstreams are asked for it by ALPN; its connections never serve HTTP/1.1.
    let alpn = if cluster.http2 { "|h2" } else { "" };
    if cluster.http2 {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    let local = Rc::new(Origination {
        config: Arc::new(config),
        sni,
        tag: format!("{sni_name}|{}{alpn}", spec.identity_tag()).into(),
    });
    CACHE.with(|c| {
        c.borrow_mut().insert(
            cluster.name.to_string(),
            Slot {
                policy: policy.clone(),
                http2: cluster.http2,
                entry,
                source,
                local: local.clone(),
            },
        )
    });
    Ok(Some(local))
}

/// The client handshake on a connected socket. The caller bounds it in time.
pub async fn handshake(orig: &Origination, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
    TlsConnector::from(orig.config.clone())
        .connect(orig.sni.clone(), tcp)
        .await
}
