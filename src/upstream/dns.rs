//! DNS for `resolution: DNS` clusters, on the control thread only (never on a shard's data
//! path): resolves every name the current snapshot needs, keeps the last good answer when a
//! lookup fails, refreshes by TTL within a floor and a ceiling, filters private addresses
//! when `denyPrivateAddresses` is on, and asks for a recompile when any answer changed. The
//! addresses published are exactly the ones checked here; shards connect to those.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;

use super::addr_policy::is_denied;
use crate::config::model::ResolverConfig as ResolverSettings;

/// Bounds on how often a name is re-resolved, whatever its TTL says.
pub const TTL_FLOOR: Duration = Duration::from_secs(1);
pub const TTL_CEILING: Duration = Duration::from_secs(300);
/// How long a last good answer outlives failing lookups.
pub const STALE_LIMIT: Duration = Duration::from_secs(3600);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);

struct Entry {
    addrs: Vec<IpAddr>,
    /// Private addresses the last answer had, refused under `denyPrivateAddresses`.
    refused: Vec<IpAddr>,
    refresh_at: Instant,
    good_until: Instant,
}

/// The control thread's cache of checked answers.
pub struct DnsCache {
    resolver: TokioResolver,
    deny_private: bool,
    entries: HashMap<String, Entry>,
}

impl DnsCache {
    pub fn new(settings: &ResolverSettings) -> Result<Self, String> {
        let builder = if settings.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| format!("reading /etc/resolv.conf: {e}"))?
        } else {
            let mut config = ResolverConfig::new();
            for ns in &settings.nameservers {
                config.add_name_server(NameServerConfig::new(*ns, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(*ns, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        let mut builder = builder;
        builder.options_mut().cache_size = 0;
        builder.options_mut().timeout = Duration::from_secs(2);
        builder.options_mut().attempts = 2;
        Ok(DnsCache {
            resolver: builder.build(),
            deny_private: settings.deny_private_addresses,
            entries: HashMap::new(),
        })
    }

    /// The checked addresses of `name`, if it resolved at least once (and not too long ago).
    pub fn get(&self, name: &str) -> Option<Vec<IpAddr>> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Some(vec![ip]);
        }
        let e = self.entries.get(name)?;
        (Instant::now() < e.good_until).then(|| e.addrs.clone())
    }

    /// Resolves the names that are due; returns true when any answer changed.
    pub async fn refresh(&mut self, names: &[String]) -> bool {
        let now = Instant::now();
        let mut changed = false;
        self.entries.retain(|k, _| names.contains(k));
        for name in names {
            if name.parse::<IpAddr>().is_ok()
                || self.entries.get(name).is_some_and(|e| e.refresh_at > now)
            {
                continue;
            }
            match self.resolver.lookup_ip(format!("{name}.")).await {
                Ok(answer) => {
                    let ttl = answer
                        .valid_until()
                        .saturating_duration_since(Instant::now())
                        .clamp(TTL_FLOOR, TTL_CEILING);
                    let mut addrs: Vec<IpAddr> = Vec::new();
                    let mut refused: Vec<IpAddr> = Vec::new();
                    for ip in answer.iter() {
                        if self.deny_private && is_denied(ip) {
                            refused.push(ip);
                        } else if !addrs.contains(&ip) {
                            addrs.push(ip);
                        }
                    }
                    addrs.sort();
                    let old = self.entries.insert(
                        name.clone(),
                        Entry {
                            addrs: addrs.clone(),
                            refused: refused.clone(),
                            refresh_at: Instant::now() + ttl,
                            good_until: Instant::now() + STALE_LIMIT.max(ttl),
                        },
                    );
                    // Logged when the answer changes, not at every TTL refresh.
                    if old.as_ref().is_none_or(|o| o.refused != refused) {
                        for ip in &refused {
                            tracing::warn!(%name, %ip, "refusing private address from DNS (denyPrivateAddresses)");
                        }
                    }
                    if old.is_none_or(|o| o.addrs != addrs) {
                        tracing::info!(%name, ?addrs, ttl_s = ttl.as_secs(), "resolved");
                        changed = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(%name, error = %e, "DNS lookup failed; keeping the last good answer");
                    match self.entries.get_mut(name) {
                        Some(entry) => {
                            entry.refresh_at = Instant::now() + RETRY_AFTER_FAILURE;
                            if Instant::now() >= entry.good_until && !entry.addrs.is_empty() {
                                entry.addrs.clear();
                                changed = true;
                            }
                        }
                        None => {
                            self.entries.insert(
                                name.clone(),
                                Entry {
                                    addrs: Vec::new(),
                                    refused: Vec::new(),
                                    refresh_at: Instant::now() + RETRY_AFTER_FAILURE,
                                    good_until: Instant::now(),
                                },
                            );
                        }
                    }
                }
            }
        }
        changed
    }

    /// When the next name is due.
    pub fn next_due(&self) -> Duration {
        let now = Instant::now();
        self.entries
            .values()
            .map(|e| e.refresh_at.saturating_duration_since(now))
            .min()
            .unwrap_or(TTL_CEILING)
            .max(Duration::from_millis(200))
    }
}
