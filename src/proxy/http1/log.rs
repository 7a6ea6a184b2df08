//! What one HTTP request leaves for the access log and the counters, gathered while the
//! exchange runs and handed to the shard when it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::conn::DownstreamInfo;
use super::exchange::UpstreamOutcome;
use super::head::RequestHead;
use crate::error::ProxyError;

#[derive(Debug)]
pub struct HttpLog {
    pub start_time: SystemTime,
    pub method: Option<String>,
    pub path: Option<String>,
    pub protocol: &'static str,
    /// 0 when no response was sent (client gone).
    pub status: u16,
    pub flags: Vec<&'static str>,
    pub failure_reason: Option<String>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration: Duration,
    pub service_time: Option<Duration>,
    pub forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub authority: Option<String>,
    pub upstream_host: Option<SocketAddr>,
    pub cluster: Option<String>,
    pub upstream_local: Option<SocketAddr>,
    pub downstream_local: SocketAddr,
    pub downstream_remote: SocketAddr,
    pub sni: Option<String>,
    pub route_name: Option<Arc<str>>,
    pub peer_uri_san: Option<String>,
    pub peer_subject: Option<String>,
}

impl HttpLog {
    pub fn new(start_time: SystemTime, info: &DownstreamInfo) -> Self {
        HttpLog {
            start_time,
            method: None,
            path: None,
            protocol: "HTTP/1.1",
            status: 0,
            flags: Vec::new(),
            failure_reason: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            service_time: None,
            forwarded_for: None,
            user_agent: None,
            request_id: None,
            authority: None,
            upstream_host: None,
            cluster: None,
            upstream_local: None,
            downstream_local: info.local,
            downstream_remote: info.peer,
            sni: info.sni.clone(),
            route_name: None,
            peer_uri_san: info.peer_uri_san.clone(),
            peer_subject: info.peer_subject.clone(),
        }
    }

    pub fn set_request(&mut self, head: &RequestHead, user_agent: Option<&str>) {
        self.method = Some(head.method.clone());
        self.path = Some(head.path.clone());
        self.protocol = if head.minor == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        };
        self.authority = Some(head.authority.clone());
        self.user_agent = user_agent.map(str::to_string);
        self.forwarded_for = head.forwarded_for.clone();
        self.request_id = head.request_id.clone();
    }

    pub fn set_outcome(&mut self, outcome: &UpstreamOutcome) {
        self.status = outcome.status;
        self.upstream_host = outcome.upstream_host;
        self.upstream_local = outcome.upstream_local;
        self.bytes_received = outcome.bytes_received;
        self.bytes_sent = outcome.bytes_sent;
        self.service_time = outcome.service_time;
        if outcome.retried {
            self.flags.push("URX");
        }
        if let Some(flag) = outcome.flag {
            self.flags.push(flag);
        }
    }

    /// Records a local answer for `e`.
    pub fn fail(&mut self, e: &ProxyError) {
        self.status = e.status();
        let flag = e.response_flag();
        if flag != "-" && !self.flags.contains(&flag) {
            self.flags.push(flag);
        }
        if matches!(e, ProxyError::NoRoute) {
            self.cluster = Some("BlackHoleCluster".to_string());
        }
        if e.fault() == crate::error::Fault::Upstream {
            self.failure_reason = Some(e.to_string());
        }
    }

    pub fn finish(&mut self, started: Instant) {
        self.duration = started.elapsed();
    }
}
