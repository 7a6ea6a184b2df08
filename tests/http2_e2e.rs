//! HTTP/2 on plain HTTP servers (h2c with prior knowledge): curl and a multiplexing client
//! are routed per stream like HTTP/1.1 requests, request and response bodies stream through
//! flow control, and the known HTTP/2 attacks (rapid reset, CONTINUATION, PING and SETTINGS
//! floods) end in GOAWAY ENHANCE_YOUR_CALM with a counter while another connection on the
//! same shard keeps being served.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::h2raw::{self, frame};
use common::istio::{http_gateway, static_service, virtual_service};
use common::origin::{Handler, Origin};
use common::{free_port, Gateway};

fn two_hosts(a: u16, b: u16) -> String {
    static_service("a", "a.example.com", &[a])
        + &static_service("b", "b.example.com", &[b])
        + &http_gateway()
        + &virtual_service("a.example.com", "a.example.com", "").replace("name: vs", "name: vs-a")
        + &virtual_service("b.example.com", "b.example.com", "").replace("name: vs", "name: vs-b")
}

fn start(a: u16, b: u16) -> (Gateway, u16) {
    let port = free_port();
    let gw = Gateway::start(&[(80, port)], &two_hosts(a, b), &["--shards", "1"]);
    (gw, port)
}

/// A stat under the listener's `http.<prefix>.` scope, by name suffix.
fn http_stat(gw: &Gateway, suffix: &str) -> u64 {
    let (_, body) = gw.admin_get("/stats");
    body.lines()
        .filter(|l| l.starts_with("http.") && l.contains(&format!(".{suffix}: ")))
        .filter_map(|l| l.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum()
}

fn curl_h2c(port: u16, host: &str, extra: &[&str], stdin: Option<&[u8]>) -> (String, Vec<u8>) {
    let mut child = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "20"])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(["--connect-to", &format!("{host}:80:127.0.0.1:{port}")])
        .args(extra)
        .arg(format!("http://{host}/upload"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap().stdout;
    let split = out.iter().rposition(|b| *b == b'\n').unwrap();
    (
        String::from_utf8_lossy(&out[split + 1..]).to_string(),
        out[..split].to_vec(),
    )
}

#[test]
fn h2c_prior_knowledge_streams_bodies_both_ways_and_logs_http2() {
    let echo = Origin::echo();
    let other = Origin::fixed("b", "b");
    let (gw, port) = start(echo.port(), other.port());
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();

    // With content-length (curl knows the size) and without (an upload of unknown length:
    // the gateway re-frames it as chunked for the HTTP/1.1 upstream).
    let (status, echoed) = curl_h2c(port, "a.example.com", &["--data-binary", "@-"], Some(&body));
    assert_eq!((status.as_str(), echoed.len()), ("200 2", body.len()));
    assert!(echoed == body);
    let (status, echoed) = curl_h2c(port, "a.example.com", &["-T", "-"], Some(&body));
    assert_eq!(status, "200 2");
    assert!(echoed == body, "{} bytes back", echoed.len());

    let seen = echo.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("content-length"), Some("300000"));
    assert_eq!(seen[1].header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen[1].header("host"), Some("a.example.com"));

    let lines = gw.access_log_lines(2);
    assert!(
        lines[0].contains("\"POST /upload HTTP/2\" 200"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("\"PUT /upload HTTP/2\" 200"),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains("outbound|80||a.example.com"),
        "{}",
        lines[1]
    );
    assert_eq!(http_stat(&gw, "downstream_rq_http2_total"), 2);
    assert_eq!(http_stat(&gw, "downstream_cx_http2_total"), 2);

    // An unrouted authority is denied per stream like an HTTP/1.1 request.
    let (status, _) = curl_h2c(port, "c.example.com", &[], None);
    assert_eq!(status, "502 2");
    assert_eq!(
        (echo.seen().len(), other.seen().len()),
        (2, 0),
        "no upstream saw it"
    );
}

/// Origins whose handlers hold every response until `want` requests are in flight at once
/// (or 20 s pass): the peak they saw proves the streams really were concurrent.
fn barrier_origin(
    name: &'static str,
    gate: Arc<(Mutex<(usize, usize)>, Condvar)>,
    want: usize,
) -> Origin {
    let handler: Handler = Arc::new(move |_req| {
        let (lock, cv) = &*gate;
        let mut g = lock.lock().unwrap();
        g.0 += 1;
        g.1 = g.1.max(g.0);
        cv.notify_all();
        let released = cv
            .wait_timeout_while(g, Duration::from_secs(20), |g| g.1 < want)
            .unwrap();
        drop(released);
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
            name.len()
        )
        .into_bytes()
    });
    Origin::start(handler)
}

#[test]
fn a_hundred_concurrent_streams_on_one_connection_reach_two_hosts() {
    let gate = Arc::new((Mutex::new((0usize, 0usize)), Condvar::new()));
    let a = barrier_origin("origin-a", gate.clone(), 100);
    let b = barrier_origin("origin-b", gate.clone(), 100);
    let (gw, port) = start(a.port(), b.port());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bodies = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let mut pending = Vec::new();
        for i in 0..100 {
            let host = if i % 2 == 0 {
                "a.example.com"
            } else {
                "b.example.com"
            };
            let req = http::Request::get(format!("http://{host}/s{i}"))
                .body(())
                .unwrap();
            let (resp, _) = client.send_request(req, true).unwrap();
            pending.push((host, resp));
            client = client.ready().await.unwrap();
        }
        let mut out = Vec::new();
        for (host, resp) in pending {
            let resp = tokio::time::timeout(Duration::from_secs(30), resp)
                .await
                .unwrap()
                .unwrap();
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                let _ = body.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            out.push((host, status, String::from_utf8(bytes).unwrap()));
        }
        out
    });
    for (host, status, body) in &bodies {
        let want = if host.starts_with('a') {
            "origin-a"
        } else {
            "origin-b"
        };
        assert_eq!((*status, body.as_str()), (200, want), "{host}");
    }
    assert_eq!((a.seen().len(), b.seen().len()), (50, 50));
    assert_eq!(
        gate.0.lock().unwrap().1,
        100,
        "peak of requests in flight at the origins"
    );
    assert_eq!(http_stat(&gw, "downstream_cx_http2_total"), 1);
    assert_eq!(http_stat(&gw, "downstream_rq_http2_total"), 100);
}

/// One HTTP/2 request on an existing client connection.
async fn get(client: &mut h2::client::SendRequest<bytes::Bytes>, host: &str) -> u16 {
    let ready = client
        .clone()
        .ready()
        .await
        .expect("connection still usable");
    let mut ready = ready;
    let req = http::Request::get(format!("http://{host}/"))
        .body(())
        .unwrap();
    let (resp, _) = ready.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), resp)
        .await
        .unwrap()
        .unwrap();
    resp.status().as_u16()
}

#[test]
fn floods_get_goaway_while_another_connection_on_the_shard_is_served() {
    let a = Origin::fixed("a", "a");
    let b = Origin::fixed("b", "b");
    let (gw, port) = start(a.port(), b.port());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut bystander = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        client
    });
    assert_eq!(rt.block_on(get(&mut bystander, "a.example.com")), 200);

    let block = h2raw::get_block("a.example.com");
    let mut attacks: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut rapid = Vec::new();
    for i in 0..500u32 {
        let id = i * 2 + 1;
        rapid.extend(frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            id,
            &block,
        ));
        rapid.extend(frame(h2raw::RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    attacks.push(("http2.rapid_reset", rapid));
    let mut continuation = frame(h2raw::HEADERS, h2raw::END_STREAM, 1, &block[..3]);
    for _ in 0..100 {
        continuation.extend(frame(h2raw::CONTINUATION, 0, 1, &[]));
    }
    attacks.push(("http2.continuation_flood", continuation));
    attacks.push((
        "http2.ping_flood",
        (0..300)
            .flat_map(|_| frame(h2raw::PING, 0, 0, &[0; 8]))
            .collect(),
    ));
    attacks.push((
        "http2.settings_flood",
        (0..300)
            .flat_map(|_| frame(h2raw::SETTINGS, 0, 0, &[]))
            .collect(),
    ));

    for (counter, bytes) in attacks {
        let mut s = h2raw::open(port);
        let _ = s.write_all(&bytes);
        assert_eq!(
            h2raw::read_goaway(&mut s),
            Some(h2raw::ENHANCE_YOUR_CALM),
            "{counter}"
        );
        assert_eq!(http_stat(&gw, counter), 1, "{counter}");
        // The bystander's connection, on the same (only) shard, still gets answers.
        assert_eq!(
            rt.block_on(get(&mut bystander, "b.example.com")),
            200,
            "after {counter}"
        );
    }
    assert_eq!(http_stat(&gw, "http2.goaway_sent"), 4);
    assert_eq!(
        http_stat(&gw, "downstream_cx_http2_active"),
        1,
        "only the bystander is left"
    );
}
