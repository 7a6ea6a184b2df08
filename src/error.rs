//! One error type for the data path: what went wrong, whose fault it is, and what the client
//! is told. The HTTP proxy maps it to a status and Envoy response flag; TCP paths to a close.

use std::io;

use thiserror::Error;

/// Whose fault an error is: decides the status class and whether a retry may help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something we refuse, or went away.
    Downstream,
    /// The upstream failed, timed out or answered garbage.
    Upstream,
    /// Policy or configuration decided (no route, no endpoint).
    Config,
    /// Our own failure.
    Internal,
}

#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("request header too large")]
    HeaderTooLarge,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("timed out reading the request head")]
    HeaderTimeout,
    #[error("downstream closed")]
    DownstreamClosed,
    #[error("downstream i/o: {0}")]
    DownstreamIo(io::Error),
    #[error("no route")]
    NoRoute,
    /// Policy refuses the request outright (a CONNECT no route allows).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// After TLS termination: the Host is not one of the hosts of the server the SNI chose.
    #[error("host does not match the TLS server name (domain fronting)")]
    Misdirected,
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    /// The cluster's `connectionPool.tcp.maxConnections` share on this shard is in use.
    #[error("upstream connection limit reached")]
    UpstreamOverflow,
    #[error("upstream connect failed: {0}")]
    ConnectFailed(io::Error),
    #[error("upstream connect timed out")]
    ConnectTimeout,
    #[error("upstream request timed out")]
    UpstreamTimeout,
    #[error("upstream reset: {0}")]
    UpstreamReset(io::Error),
    #[error("upstream closed before a response")]
    UpstreamClosed,
    #[error("invalid upstream response: {0}")]
    BadResponse(&'static str),
    #[error("internal: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn fault(&self) -> Fault {
        use ProxyError::*;
        match self {
            BadRequest(_) | HeaderTooLarge | BodyTooLarge | HeaderTimeout | DownstreamClosed
            | DownstreamIo(_) | Misdirected => Fault::Downstream,
            NoRoute | Forbidden(_) | NoHealthyUpstream | UpstreamOverflow => Fault::Config,
            ConnectFailed(_) | ConnectTimeout | UpstreamTimeout | UpstreamReset(_)
            | UpstreamClosed | BadResponse(_) => Fault::Upstream,
            Internal(_) => Fault::Internal,
        }
    }

    /// The status a client gets when nothing has been sent to it yet.
    pub fn status(&self) -> u16 {
        use ProxyError::*;
        match self {
            BadRequest(_) => 400,
            HeaderTooLarge => 431,
            BodyTooLarge => 413,
            HeaderTimeout => 408,
            NoRoute => 502,
            Forbidden(_) => 403,
            Misdirected => 421,
            NoHealthyUpstream | UpstreamOverflow | ConnectFailed(_) | ConnectTimeout => 503,
            UpstreamTimeout => 504,
            UpstreamReset(_) | UpstreamClosed | BadResponse(_) => 502,
            DownstreamClosed | DownstreamIo(_) => 0,
            Internal(_) => 500,
        }
    }

    /// Envoy's response flag for the access log.
    pub fn response_flag(&self) -> &'static str {
        use ProxyError::*;
        match self {
            NoRoute => "NR",
            NoHealthyUpstream => "UH",
            UpstreamOverflow => "UO",
            ConnectFailed(_) | ConnectTimeout => "UF",
            UpstreamTimeout => "UT",
            UpstreamReset(_) | UpstreamClosed => "UC",
            BadResponse(_) => "UPE",
            BadRequest(_) | HeaderTooLarge | BodyTooLarge => "DPE",
            DownstreamClosed | DownstreamIo(_) => "DC",
            HeaderTimeout => "DPE",
            Forbidden(_) | Internal(_) | Misdirected => "-",
        }
    }

    /// A connect failure happened before any byte of the request left: always safe to retry.
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::ConnectFailed(_) | ProxyError::ConnectTimeout
        )
    }
}
