//! A real HTTP/1.1 origin for tests: a thread per connection on 127.0.0.1:0, keep-alive,
//! Content-Length and chunked request bodies, and a handler deciding each response. It
//! counts connections and requests so tests can assert what reached the upstream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the origin saw of one request.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response the handler asks for: raw bytes written as they are.
pub type Handler = Arc<dyn Fn(&SeenRequest) -> Vec<u8> + Send + Sync>;

pub struct Origin {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<SeenRequest>>>,
    stop: Arc<AtomicBool>,
}

impl Origin {
    /// An origin answering `200` with `body` (and `x-origin: name`).
    pub fn fixed(name: &'static str, body: &'static str) -> Origin {
        Origin::start(Arc::new(move |_req| {
            format!(
                "HTTP/1.1 200 OK\r\nx-origin: {name}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }))
    }

    /// An origin that echoes the request body back with a SHA-free length header.
    pub fn echo() -> Origin {
        Origin::start(Arc::new(|req| {
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                req.body.len()
            )
            .into_bytes();
            out.extend_from_slice(&req.body);
            out
        }))
    }

    pub fn start(handler: Handler) -> Origin {
        Origin::start_on("127.0.0.1:0", handler)
    }

    /// As `start`, on a chosen loopback address (e.g. `127.0.0.2:0`, or a fixed port).
    pub fn start_on(bind: &str, handler: Handler) -> Origin {
        let listener = TcpListener::bind(bind).unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, r, s) = (connections.clone(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, h) = (r.clone(), handler.clone());
                std::thread::spawn(move || serve(conn, r, h));
            }
        });
        Origin {
            addr,
            connections,
            requests,
            stop,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.requests.lock().unwrap().clone()
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(conn: TcpStream, seen: Arc<Mutex<Vec<SeenRequest>>>, handler: Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut req = SeenRequest {
            method,
            path,
            headers,
            body: Vec::new(),
        };
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            let _ = writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        if let Some(len) = req
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            req.body = vec![0; len];
            if reader.read_exact(&mut req.body).is_err() {
                return;
            }
        } else if req.header("transfer-encoding").is_some() {
            req.body = read_chunked(&mut reader);
        }
        let response = handler(&req);
        seen.lock().unwrap().push(req);
        if writer.write_all(&response).is_err() {
            return;
        }
    }
}

/// Reads a chunked body (sizes, data, trailers) and returns the data.
pub fn read_chunked<R: Read>(r: &mut R) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(r);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            while !read_line(r).is_empty() {}
            return body;
        }
        let mut chunk = vec![0; size];
        r.read_exact(&mut chunk).unwrap();
        body.extend_from_slice(&chunk);
        read_line(r);
    }
}

fn read_line<R: Read>(r: &mut R) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while r.read(&mut b).unwrap() == 1 {
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    String::from_utf8_lossy(&line)
        .trim_end_matches('\r')
        .to_string()
}
