//! The DNS thread: a tokio current-thread runtime that keeps the names of the current
//! snapshot resolved and republishes when answers change. Shards never resolve.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::control::Control;
use crate::route::compile::dns_targets;
use crate::upstream::dns::DnsCache;

pub fn spawn(control: Arc<Control>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("egressd-dns".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "DNS thread could not start; DNS clusters stay without endpoints");
                return;
            }
        };
        runtime.block_on(run(control));
    })
}

async fn run(control: Arc<Control>) {
    let mut settings = control.snapshot().config.gateway.resolver.clone();
    let mut cache: Option<DnsCache> = None;
    while !control.exiting.load(Ordering::Relaxed) {
        let snapshot = control.snapshot();
        let names = dns_targets(&snapshot);
        if snapshot.config.gateway.resolver != settings {
            settings = snapshot.config.gateway.resolver.clone();
            cache = None;
        }
        if names.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if cache.is_none() {
            match DnsCache::new(&settings) {
                Ok(c) => cache = Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the DNS resolver");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            }
        }
        let Some(c) = cache.as_mut() else { continue };
        if c.refresh(&names).await {
            let answers: HashMap<_, _> = names
                .iter()
                .filter_map(|n| c.get(n).map(|a| (n.clone(), a)))
                .collect();
            control.set_dns_answers(answers);
        }
        tokio::time::sleep(c.next_due().min(Duration::from_millis(500))).await;
    }
}
