//! An HTTP/2 origin (h2c with prior knowledge) for tests of `h2UpgradePolicy: UPGRADE`:
//! the `h2` crate on a tokio runtime in its own thread, echoing each request's body and
//! saying what it saw, counting connections and streams.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

pub struct H2Origin {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub streams: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl H2Origin {
    pub fn start() -> H2Origin {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let streams = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let (c, s) = (connections.clone(), streams.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => return,
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            c.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(serve(tcp, s.clone()));
                        }
                    }
                }
            });
        });
        H2Origin {
            addr,
            connections,
            streams,
            stop: Some(tx),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for H2Origin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(tcp: tokio::net::TcpStream, streams: Arc<AtomicUsize>) {
    let Ok(mut conn) = h2::server::handshake(tcp).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        streams.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let (parts, mut body) = req.into_parts();
            let mut received = Vec::new();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
                received.extend_from_slice(&chunk);
            }
            let summary = format!(
                "{} {} authority={} xff={} len={}\n",
                parts.method,
                parts.uri.path(),
                parts.uri.authority().map(|a| a.as_str()).unwrap_or("-"),
                parts
                    .headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-"),
                received.len()
            );
            let response = http::Response::builder()
                .status(200)
                .header("x-origin-protocol", "HTTP/2")
                .body(())
                .unwrap();
            let Ok(mut send) = respond.send_response(response, false) else {
                return;
            };
            let mut out = summary.into_bytes();
            out.extend_from_slice(&received);
            // No content-length: the gateway must frame it for HTTP/1.1 clients itself.
            let _ = send.send_data(Bytes::from(out), true);
        });
    }
}
