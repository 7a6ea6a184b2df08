//! One TLS-passthrough or TCP connection, from accept to its access-log line.
//!
//! Owns the connection's forward-only life: peek the ClientHello when a route or a server
//! choice needs the SNI → pick the server the SNI selects (the single dispatch point
//! between passthrough and TLS termination) → route → connect (with retries) →
//! relay → log. It keeps the snapshot it started with for its whole life. It does not
//! parse hellos (`detect`), move bytes (`proxy::passthrough`) or format logs (`obs`).
//!
//! Memory: the only per-connection heap is the peeked hello (shrunk to the bytes read,
//! replayed upstream) and what the relay sets up once; bulk transfer adds nothing.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use glommio::net::TcpStream;

use super::http1::conn::DownstreamInfo;
use super::passthrough::{relay, RelayEnd, RelayOptions, Side};
use super::terminate;
use crate::config::model::Protocol;
use crate::detect::{peek_sni, Peek, PeekError, DEFAULT_PEEK_CAP};
use crate::obs::access_log::{AccessRecord, ResponseFlags};
use crate::obs::shard_stats::BLACKHOLE_CLUSTER;
use crate::obs::stats::{ClusterStats, HttpConnManagerStats, ListenerDeny, ListenerStats, SniPeek};
use crate::route::l4::{self, Intake, L4Route, ServerAction};
use crate::route::table::Snapshot;
use crate::runtime::shard::{ClusterLocal, Shard};
use crate::upstream::cluster::Cluster;
use crate::upstream::connect::{connect_sending, connect_silent};

/// Retries after the first connect attempt, each to the next endpoint the cluster's
/// load balancer picks (DESIGN.md's default: 2 retries on connect failure).
const CONNECT_RETRIES: usize = 2;

/// What the accept loop knows about a TLS/TCP connection.
pub struct L4Downstream {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub gateway_port: u16,
    /// The listener's protocol: TCP never peeks; TLS and HTTPS may.
    pub protocol: Protocol,
    pub stats: Rc<ListenerStats>,
    /// For connections handed to TLS termination (HTTPS servers serve HTTP inside).
    pub http_stats: Rc<HttpConnManagerStats>,
}

/// Resolves `timeouts.drain` after a reload removed this connection's route (its listener,
/// or the route from it to `cluster`): the one case where a reload ends a connection.
/// Routes that survive a reload leave the connection on the snapshot it started with.
async fn until_route_removed(
    shard: &Shard,
    started_on: &Snapshot,
    port: u16,
    sni: Option<&str>,
    cluster: &str,
) {
    let mut seen = started_on.generation;
    loop {
        seen = shard.reloads.changed(seen).await;
        let current = shard.snapshot();
        let kept = current
            .listener(port)
            .and_then(|l| l.l4.route(sni))
            .is_some_and(|route| {
                route
                    .destinations
                    .iter()
                    .any(|d| *current.clusters[d.cluster].name == *cluster)
            });
        if !kept {
            glommio::timer::sleep(current.config.gateway.timeouts.drain).await;
            return;
        }
    }
}

/// Why a connection was closed before reaching an upstream.
enum Refusal {
    /// No complete, usable hello: the reason says which, the counter says where.
    Peek(&'static str),
    /// Nothing on this port routes it (`BlackHoleCluster`, `NR`).
    NoRoute(&'static str),
}

/// What the server the SNI selected does with the connection.
enum Verdict<'s> {
    Relay(&'s L4Route),
    Terminate,
    Refuse(Refusal),
}

/// Serves one connection accepted on a TLS, HTTPS or TCP listener: passthrough and TCP
/// connections are relayed here, terminating servers' connections go to
/// `proxy::terminate` (with the peeked hello to replay, if one was peeked).
pub async fn serve(shard: Rc<Shard>, mut downstream: TcpStream, down: L4Downstream) {
    // Kept until the connection ends: a reload does not re-route a relayed stream.
    let snapshot = shard.snapshot_for_port(down.gateway_port);
    let started = Instant::now();
    let mut rec = AccessRecord::new(SystemTime::now(), down.local, down.peer);
    let Some(listener) = snapshot.listener(down.gateway_port) else {
        tracing::debug!(
            port = down.gateway_port,
            "listener gone from the snapshot; closing"
        );
        return;
    };
    let intake = match down.protocol {
        Protocol::Tcp => Intake::NoPeek,
        _ => l4::intake(&listener.servers, &listener.l4),
    };
    let timeouts = &snapshot.config.gateway.timeouts;
    let mut hello = Vec::new();
    let verdict = match intake {
        Intake::NoPeek => match listener.l4.tcp.first() {
            Some(route) => Verdict::Relay(route),
            None => Verdict::Refuse(Refusal::NoRoute("no tcp route")),
        },
        // The handshake reads its own hello: no peek, nothing to replay.
        Intake::TerminateAll => Verdict::Terminate,
        Intake::PeekSni => {
            let peeked = peek(
                &shard,
                &mut downstream,
                &mut hello,
                timeouts.sni_peek,
                &down,
            );
            match peeked.await {
                Err(refusal) => Verdict::Refuse(refusal),
                Ok(sni) => {
                    let verdict = dispatch(listener, sni.as_deref(), &down);
                    rec.requested_server_name = sni;
                    verdict
                }
            }
        }
    };
    let route = match verdict {
        Verdict::Relay(route) => route,
        Verdict::Terminate => {
            let info = DownstreamInfo {
                http_stats: down.http_stats.clone(),
                peer: down.peer,
                local: down.local,
                gateway_port: down.gateway_port,
                sni: None,
                peer_uri_san: None,
                peer_subject: None,
            };
            // Boxed: the TLS state would otherwise size this future, which the
            // accept loop moves into a box per connection (a 16 KiB memcpy
            // per passthrough connection, measured with callgrind).
            let terminated = terminate::serve(shard.clone(), downstream, info, listener, hello);
            return Box::pin(terminated).await;
        }
        Verdict::Refuse(refusal) => {
            refuse(&shard, &down, refusal, rec, started);
            return;
        }
    };
    // The hello stays alive for the replay only; give back the peek buffer's slack.
    hello.shrink_to_fit();

    let cluster = &snapshot.clusters[route.pick(shard.random())];
    let state = shard.cluster_state(cluster);
    rec.upstream_cluster = Some(cluster.name.clone());
    if !state.may_connect(cluster, &shard) {
        rec.response_flags |= ResponseFlags::UPSTREAM_OVERFLOW;
        rec.duration = started.elapsed();
        shard.log_http(&rec);
        return;
    }
    // The peeked hello goes out with the connect (see `connect_sending`); the relay has
    // nothing left to replay.
    let upstream = match connect(&shard, cluster, &state, &hello, &mut rec).await {
        Ok(up) => up,
        Err(flags) => {
            rec.response_flags |= flags;
            rec.duration = started.elapsed();
            shard.log_http(&rec);
            return;
        }
    };
    let _active = ActiveCx::new(state.stats.clone());
    // LEAST_REQUEST counts a relayed connection as one request for its whole life.
    let _in_flight = rec.upstream_host.map(|addr| state.request_started(addr));

    let opts = RelayOptions {
        idle_timeout: timeouts.downstream_idle,
        splice: shard.splice,
    };
    let relayed = futures_lite::future::or(
        async { Some(relay(downstream, upstream, &[], &opts, &shard.pipes).await) },
        async {
            until_route_removed(
                &shard,
                &snapshot,
                down.gateway_port,
                rec.requested_server_name.as_deref(),
                &cluster.name,
            )
            .await;
            None
        },
    );
    let Some(outcome) = relayed.await else {
        // Dropping the relay closed both sockets.
        tracing::info!(peer = %down.peer, cluster = %cluster.name, "closed: a reload removed this connection's route");
        rec.response_flags |= ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
        rec.upstream_transport_failure_reason = Some("route removed by reload".to_string());
        rec.duration = started.elapsed();
        shard.log_http(&rec);
        return;
    };
    let bytes_from_downstream = outcome.bytes_from_downstream + hello.len() as u64;
    state.on_bytes(bytes_from_downstream, outcome.bytes_from_upstream);
    tracing::debug!(
        peer = %down.peer,
        cluster = %cluster.name,
        rx = bytes_from_downstream,
        tx = outcome.bytes_from_upstream,
        spliced = outcome.bytes_spliced,
        "passthrough connection done"
    );
    rec.bytes_received = bytes_from_downstream;
    rec.bytes_sent = outcome.bytes_from_upstream;
    match &outcome.end {
        RelayEnd::Closed { .. } => {}
        RelayEnd::IdleTimeout => {
            tracing::debug!(peer = %down.peer, "passthrough idle timeout");
            rec.response_flags |= ResponseFlags::STREAM_IDLE_TIMEOUT;
        }
        RelayEnd::Error { side, error } => {
            tracing::debug!(peer = %down.peer, ?side, %error, "passthrough relay ended by an error");
            rec.response_flags |= match side {
                Side::Upstream => ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
                Side::Downstream => ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
            };
        }
        RelayEnd::Local(error) => {
            tracing::warn!(%error, "passthrough relay could not start (out of descriptors?)");
            rec.response_flags |= ResponseFlags::LOCAL_RESET;
        }
    }
    rec.duration = started.elapsed();
    shard.log_http(&rec);
}

/// Reads the ClientHello and counts what it said. `Ok(None)`: TLS without a usable name,
/// or not TLS at all; only a route that needs no SNI (a `tcp` route) can take it.
async fn peek(
    shard: &Shard,
    downstream: &mut TcpStream,
    hello: &mut Vec<u8>,
    deadline: Duration,
    down: &L4Downstream,
) -> Result<Option<String>, Refusal> {
    let server = &shard.stats.server;
    let verdict = match peek_sni(downstream, hello, DEFAULT_PEEK_CAP, deadline).await {
        Ok(verdict) => verdict,
        Err(e) => {
            match &e {
                PeekError::TimedOut(_) => down.stats.deny(ListenerDeny::PreConnectionTimeout),
                PeekError::Closed(_) => server.sni_peek(SniPeek::ConnectionClosed),
                PeekError::Io(_) => server.sni_peek(SniPeek::ReadError),
            }
            tracing::debug!(peer = %down.peer, error = %e, "closing: no ClientHello");
            return Err(Refusal::Peek(e.reason()));
        }
    };
    match verdict {
        Peek::Sni(name) => {
            server.sni_peek(SniPeek::TlsFound);
            server.sni_peek(SniPeek::SniFound);
            Ok(Some(name))
        }
        Peek::TooLarge => {
            server.sni_peek(SniPeek::ClientHelloTooLarge);
            Err(Refusal::Peek("client hello too large"))
        }
        other => {
            if other == Peek::NotTls {
                server.sni_peek(SniPeek::TlsNotFound);
            } else {
                server.sni_peek(SniPeek::TlsFound);
                server.sni_peek(SniPeek::SniNotFound);
            }
            tracing::debug!(peer = %down.peer, reason = other.reason(), "ClientHello without a usable SNI");
            Ok(None)
        }
    }
}

/// The single dispatch point once the SNI is known: the server it selects decides between
/// passthrough (route and relay here) and TLS termination (`proxy::terminate`, which
/// selects the same server again from the replayed hello).
fn dispatch<'s>(
    listener: &'s crate::route::table::ListenerSpec,
    sni: Option<&str>,
    down: &L4Downstream,
) -> Verdict<'s> {
    match l4::select_server(&listener.servers, sni) {
        Some(ServerAction::Passthrough) => match listener.l4.route(sni) {
            Some(route) => Verdict::Relay(route),
            None if sni.is_some() => Verdict::Refuse(Refusal::NoRoute("no route for sni")),
            None => Verdict::Refuse(Refusal::NoRoute("no sni")),
        },
        Some(ServerAction::Terminate(_)) => Verdict::Terminate,
        None => {
            down.stats.deny(ListenerDeny::NoFilterChainMatch);
            Verdict::Refuse(Refusal::NoRoute("sni matches no server"))
        }
    }
}

/// Counts, logs and closes a refused connection (the caller drops the socket).
fn refuse(
    shard: &Shard,
    down: &L4Downstream,
    refusal: Refusal,
    mut rec: AccessRecord,
    started: Instant,
) {
    let reason = match refusal {
        Refusal::Peek(reason) => reason,
        Refusal::NoRoute(reason) => {
            down.stats.deny(ListenerDeny::NoRoute);
            shard.count_blackhole(0);
            rec.response_flags |= ResponseFlags::NO_ROUTE_FOUND;
            reason
        }
    };
    tracing::debug!(peer = %down.peer, sni = ?rec.requested_server_name, reason, "connection denied");
    rec.upstream_cluster = Some(BLACKHOLE_CLUSTER.into());
    rec.duration = started.elapsed();
    shard.log_http(&rec);
}

/// Connects to an endpoint of `cluster` and sends it `first` (the peeked hello, maybe
/// empty), trying the next endpoint on failure. Fills the record's upstream host and local
/// address; returns the flags to log on failure.
async fn connect(
    shard: &Shard,
    cluster: &Cluster,
    state: &ClusterLocal,
    first: &[u8],
    rec: &mut AccessRecord,
) -> Result<TcpStream, ResponseFlags> {
    for attempt in 0..=CONNECT_RETRIES {
        let Some(addr) = state.pick_endpoint(cluster, shard) else {
            state.on_no_endpoint();
            return Err(ResponseFlags::NO_HEALTHY_UPSTREAM);
        };
        rec.upstream_host = Some(addr);
        let connected = if first.is_empty() {
            connect_silent(addr, cluster.connect_timeout).await
        } else {
            connect_sending(addr, cluster.connect_timeout, first).await
        };
        match connected {
            Ok(stream) => {
                rec.upstream_local_address = stream.local_addr().ok();
                return Ok(stream);
            }
            Err(e) => {
                let timed_out = e.kind() == std::io::ErrorKind::TimedOut;
                state.on_connect_fail(timed_out);
                state.on_endpoint_result(cluster, addr, None);
                tracing::debug!(cluster = %cluster.name, %addr, attempt, error = %e, "upstream connect failed");
            }
        }
    }
    Err(ResponseFlags::UPSTREAM_CONNECTION_FAILURE)
}

/// `upstream_cx_total`/`upstream_cx_active` of one relayed upstream connection: counted
/// when it is up, released when the connection ends, however it ends.
struct ActiveCx(Rc<ClusterStats>);

impl ActiveCx {
    fn new(stats: Rc<ClusterStats>) -> Self {
        stats.upstream_cx_total.inc();
        stats.upstream_cx_active.inc();
        ActiveCx(stats)
    }
}

impl Drop for ActiveCx {
    fn drop(&mut self) {
        self.0.upstream_cx_active.dec();
    }
}
