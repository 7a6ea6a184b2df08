//! `h2UpgradePolicy: UPGRADE`: HTTP/1.1 and HTTP/2 clients' requests reach an HTTP/2
//! upstream as streams multiplexed on one pooled connection per shard, bodies stream both
//! ways (chunked and content-length), and the response is framed for HTTP/1.1 clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::h2_origin::H2Origin;
use common::istio::{http_gateway, static_service, virtual_service};
use common::origin::read_chunked;
use common::{free_port, Gateway};

fn resources(origin: u16) -> String {
    static_service("a", "a.example.com", &[origin])
        + &http_gateway()
        + &virtual_service("a.example.com", "a.example.com", "")
        + "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: a-h2}\nspec:\n  host: a.example.com\n  trafficPolicy:\n    connectionPool:\n      http: {h2UpgradePolicy: UPGRADE}\n---\n"
}

/// One HTTP/1.1 exchange with `Connection: close`, read to the end: the head as sent and
/// the body with its chunk framing removed.
fn http1(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let body = if head.contains("transfer-encoding: chunked") {
        String::from_utf8(read_chunked(&mut body.as_bytes())).unwrap()
    } else {
        body.to_string()
    };
    format!("{head}\r\n\r\n{body}")
}

#[test]
fn http1_and_http2_clients_share_one_multiplexed_http2_upstream_connection() {
    let origin = H2Origin::start();
    let port = free_port();
    let gw = Gateway::start(&[(80, port)], &resources(origin.port()), &["--shards", "1"]);

    // Twenty HTTP/1.1 clients at once.
    let clients: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                http1(
                    port,
                    format!(
                        "GET /c{i} HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
            })
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        let resp = c.join().unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("transfer-encoding: chunked"), "{resp}");
        assert!(resp.contains("x-origin-protocol: HTTP/2"), "{resp}");
        assert!(
            resp.contains(&format!(
                "GET /c{i} authority=a.example.com xff=127.0.0.1 len=0"
            )),
            "{resp}"
        );
    }

    // A chunked upload and a content-length one, streamed into HTTP/2 DATA frames.
    let body = "x".repeat(200_000);
    let chunked = format!(
        "POST /up HTTP/1.1\r\nHost: a.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let resp = http1(port, chunked.as_bytes());
    assert!(
        resp.contains(&format!(
            "POST /up authority=a.example.com xff=127.0.0.1 len={}\n{body}",
            body.len()
        )),
        "{}",
        &resp[..300.min(resp.len())]
    );
    let sized = format!(
        "PUT /up HTTP/1.1\r\nHost: a.example.com\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let resp = http1(port, sized.as_bytes());
    assert!(resp.contains(&format!(
        "PUT /up authority=a.example.com xff=127.0.0.1 len={}",
        body.len()
    )));

    // An HTTP/2 client (h2c) on the same gateway: HTTP/2 on both sides.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "20"])
        .args([
            "--connect-to",
            &format!("a.example.com:80:127.0.0.1:{port}"),
        ])
        .arg("http://a.example.com/via-h2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("GET /via-h2 authority=a.example.com"),
        "{text}"
    );

    assert_eq!(origin.streams.load(std::sync::atomic::Ordering::SeqCst), 23);
    assert_eq!(
        origin.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one multiplexed connection"
    );
    assert_eq!(
        gw.stat("cluster.outbound|80||a.example.com.upstream_cx_total"),
        Some(1)
    );
    assert_eq!(
        gw.stat("cluster.outbound|80||a.example.com.upstream_rq_200"),
        Some(23)
    );
}
