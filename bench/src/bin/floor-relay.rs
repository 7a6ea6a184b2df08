//! `floor-relay LISTEN ORIGIN`: the least work a TCP relay must do, a reference row
//! ("floor") in the bench's tables.
//!
//! It is what haproxy and egressd are at their core, one event loop on one thread (epoll,
//! edge-triggered, through mio) relaying many connections at once, with everything else
//! taken out: no parsing, routing, header rewriting, timeouts, log or counters, no pool
//! (each client connection gets its own upstream connection for its whole life). What is
//! left is what the kernel charges any relay on this machine: accept, connect, one
//! registration per socket, a read and a write per chunk each way, the half-close passed
//! on, close. No proxy in the table can go below its CPU per request or per connection.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::ExitCode;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
const BUF: usize = 256 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, origin] => listen.parse::<SocketAddr>().ok().zip(origin.parse().ok()),
        _ => None,
    };
    let Some((listen, origin)) = parsed else {
        eprintln!("usage: floor-relay LISTEN_ADDR ORIGIN_ADDR");
        return ExitCode::from(2);
    };
    match run(listen, origin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor-relay: {e}");
            ExitCode::from(1)
        }
    }
}

/// One direction: bytes read but not yet written, whether epoll said the source hung up,
/// and whether it reached EOF and everything was passed on.
#[derive(Default)]
struct Dir {
    pending: Vec<u8>,
    source_closed: bool,
    done: bool,
}

struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    to_upstream: Dir,
    to_client: Dir,
}

fn run(listen: SocketAddr, origin: SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(listen)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; BUF];
    let mut events = Events::with_capacity(256);
    let both = Interest::READABLE | Interest::WRITABLE;
    loop {
        poll.poll(&mut events, None)?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut client, _)) = listener.accept() {
                    // A refused upstream shows up as an error in the bench's client.
                    let Ok(mut upstream) = TcpStream::connect(origin) else {
                        continue;
                    };
                    let id = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    let registry = poll.registry();
                    if registry.register(&mut client, Token(2 * id), both).is_err()
                        || registry
                            .register(&mut upstream, Token(2 * id + 1), both)
                            .is_err()
                    {
                        free.push(id);
                        continue;
                    }
                    conns[id] = Some(Conn {
                        client,
                        upstream,
                        to_upstream: Dir::default(),
                        to_client: Dir::default(),
                    });
                }
                continue;
            }
            let id = ev.token().0 / 2;
            let Some(conn) = conns.get_mut(id).and_then(Option::as_mut) else {
                continue;
            };
            if ev.is_read_closed() {
                let from_client = ev.token().0 % 2 == 0;
                let dir = if from_client {
                    &mut conn.to_upstream
                } else {
                    &mut conn.to_client
                };
                dir.source_closed = true;
            }
            if !advance(conn, &mut buf).unwrap_or(false) {
                conns[id] = None;
                free.push(id);
            }
        }
    }
}

/// Moves both directions as far as they go without waiting; false once the connection is
/// over (both directions done, or an error), when the caller closes both sockets.
fn advance(conn: &mut Conn, buf: &mut [u8]) -> io::Result<bool> {
    let Conn {
        client,
        upstream,
        to_upstream,
        to_client,
    } = conn;
    pump(client, upstream, to_upstream, to_client.done, buf)?;
    pump(upstream, client, to_client, to_upstream.done, buf)?;
    Ok(!(to_upstream.done && to_client.done))
}

/// Reads `from` and writes `to` until `from` is empty, `to` is full or `from` ends. At the
/// end, passes the half-close on, unless the other direction is over too: then the close
/// that follows sends the FIN.
fn pump(
    from: &mut TcpStream,
    to: &mut TcpStream,
    dir: &mut Dir,
    other_done: bool,
    buf: &mut [u8],
) -> io::Result<()> {
    if dir.done || !flush(to, &mut dir.pending)? {
        return Ok(());
    }
    loop {
        let n = match from.read(buf) {
            Ok(0) => {
                dir.done = true;
                if !other_done {
                    to.shutdown(Shutdown::Write)?;
                }
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dir.pending.extend_from_slice(&buf[..n]);
        if !flush(to, &mut dir.pending)? {
            return Ok(());
        }
        // A short read emptied the socket and epoll (edge-triggered) reports the next bytes,
        // but not an EOF that came with these: read on to it when the peer hung up.
        if n < buf.len() && !dir.source_closed {
            return Ok(());
        }
    }
}

/// Writes what is pending; false when `to` is full or still connecting (its writable
/// event comes later).
fn flush(to: &mut TcpStream, pending: &mut Vec<u8>) -> io::Result<bool> {
    while !pending.is_empty() {
        match to.write(pending) {
            Ok(n) => drop(pending.drain(..n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                ) =>
            {
                return Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
