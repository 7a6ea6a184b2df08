//! The admin server: a small blocking HTTP/1.1 server on its own thread, off the shards.
//! It answers Envoy's admin paths (`/ready`, `/healthz`, `/server_info`, `/stats`,
//! `POST /reload`, `POST /drain_listeners`). One request per connection, bounded reads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::control::Control;

const MAX_REQUEST: usize = 8 * 1024;

pub fn spawn(addr: SocketAddr, control: Arc<Control>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("egressd-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if control.exiting.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(stream) = stream {
                    if let Err(e) = handle(stream, &control) {
                        tracing::debug!(error = %e, "admin request failed");
                    }
                }
            }
        })?;
    Ok(bound)
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: String) -> Self {
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }
}

fn handle(mut stream: TcpStream, control: &Control) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut filled = 0;
    let response = loop {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(_)) => {
                break super::routes::dispatch(
                    req.method.unwrap_or(""),
                    req.path.unwrap_or("/"),
                    control,
                );
            }
            Ok(httparse::Status::Partial) if filled < buf.len() => continue,
            Ok(httparse::Status::Partial) => break Response::text(431, "request too large\n"),
            Err(_) => break Response::text(400, "bad request\n"),
        }
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        response.status,
        crate::proxy::http1::serialize::reason(response.status),
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(response.body.as_bytes())?;
    stream.flush()
}
