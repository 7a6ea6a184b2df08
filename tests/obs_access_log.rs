//! Access-log formats: DESIGN.md's example lines byte for byte, Istio's JSON keys and
//! types, custom Envoy format strings and the errors the config loader reports.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use egressd::config::model::AccessLogFormat;
use egressd::obs::access_log::{AccessRecord, ResponseFlags, PROTOCOL_HTTP11, PROTOCOL_HTTP2};
use egressd::obs::log_format::{compile_format, FormatError, LogFormat};
use time::macros::datetime;

/// The guide's HTTP line in the istio format, copied from DESIGN.md.
const DESIGN_HTTP_LINE: &str = "[2019-09-03T20:57:49.103Z] \"GET /politics HTTP/2\" 301 - \"-\" \"-\" 0 0 90 89 \"10.244.2.10\" \"curl/7.64.0\" \"ea379962-…\" \"edition.cnn.com\" \"151.101.65.67:80\" outbound|80||edition.cnn.com - 10.244.1.5:80 10.244.2.10:50482 edition.cnn.com -";
/// The TCP line in the istio format, copied from DESIGN.md.
const DESIGN_TCP_LINE: &str = "[2019-01-02T11:46:46.981Z] \"- - -\" 0 - \"-\" \"-\" 627 1879689 44 - \"-\" \"-\" \"-\" \"-\" \"151.101.129.67:443\" outbound|443||edition.cnn.com 172.30.109.80:41122 172.30.109.80:443 172.30.109.112:59970 edition.cnn.com -";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn http_record() -> AccessRecord {
    let start = SystemTime::from(datetime!(2019-09-03 20:57:49.103 UTC));
    let mut r = AccessRecord::new(start, addr("10.244.1.5:80"), addr("10.244.2.10:50482"));
    r.method = Some("GET".into());
    r.path = Some("/politics".into());
    r.protocol = PROTOCOL_HTTP2;
    r.response_code = 301;
    r.duration = Duration::from_micros(90_700);
    r.upstream_service_time = Some(Duration::from_micros(89_999));
    r.x_forwarded_for = Some("10.244.2.10".into());
    r.user_agent = Some("curl/7.64.0".into());
    r.request_id = Some("ea379962-…".into());
    r.authority = Some("edition.cnn.com".into());
    r.upstream_host = Some(addr("151.101.65.67:80"));
    r.upstream_cluster = Some("outbound|80||edition.cnn.com".into());
    r.requested_server_name = Some("edition.cnn.com".into());
    r
}

fn tcp_record() -> AccessRecord {
    let start = SystemTime::from(datetime!(2019-01-02 11:46:46.981 UTC));
    let mut r = AccessRecord::new(
        start,
        addr("172.30.109.80:443"),
        addr("172.30.109.112:59970"),
    );
    r.bytes_received = 627;
    r.bytes_sent = 1_879_689;
    r.duration = Duration::from_millis(44);
    r.upstream_host = Some(addr("151.101.129.67:443"));
    r.upstream_cluster = Some("outbound|443||edition.cnn.com".into());
    r.upstream_local_address = Some(addr("172.30.109.80:41122"));
    r.requested_server_name = Some("edition.cnn.com".into());
    r
}

fn render(format: &LogFormat, rec: &AccessRecord) -> String {
    let mut out = String::new();
    format.render(rec, &mut out);
    out
}

#[test]
fn istio_format_reproduces_designs_http_line_byte_for_byte() {
    let line = render(&LogFormat::istio(), &http_record());
    assert_eq!(line, format!("{DESIGN_HTTP_LINE}\n"));
}

#[test]
fn istio_format_reproduces_designs_tcp_line_byte_for_byte() {
    let line = render(&LogFormat::istio(), &tcp_record());
    assert_eq!(line, format!("{DESIGN_TCP_LINE}\n"));
}

#[test]
fn istio_format_from_config_is_the_same_formatter() {
    let f = LogFormat::from_config(&AccessLogFormat::Istio).unwrap();
    assert_eq!(f, LogFormat::istio());
    assert_eq!(render(&f, &tcp_record()), format!("{DESIGN_TCP_LINE}\n"));
}

#[test]
fn several_response_flags_are_comma_joined_in_the_line() {
    let mut r = http_record();
    r.response_code = 503;
    r.response_flags =
        ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED | ResponseFlags::NO_HEALTHY_UPSTREAM;
    let line = render(&LogFormat::istio(), &r);
    assert!(line.contains("\" 503 UH,URX \"-\""), "{line}");
}

#[test]
fn json_line_parses_and_carries_istios_keys_with_envoys_types() {
    let mut r = http_record();
    r.protocol = PROTOCOL_HTTP11;
    r.user_agent = Some("evil\"agent\\\n".into());
    r.downstream_peer_uri_san = Some("spiffe://cluster.local/ns/default/sa/sleep".into());
    let line = render(&LogFormat::json(), &r);
    assert!(
        line.ends_with("}\n") && line.matches('\n').count() == 1,
        "{line}"
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let o = v.as_object().unwrap();
    for key in [
        "start_time",
        "method",
        "path",
        "protocol",
        "response_code",
        "response_flags",
        "bytes_received",
        "bytes_sent",
        "duration",
        "upstream_service_time",
        "x_forwarded_for",
        "user_agent",
        "request_id",
        "authority",
        "upstream_host",
        "upstream_cluster",
        "upstream_local_address",
        "downstream_local_address",
        "downstream_remote_address",
        "requested_server_name",
        "route_name",
        "upstream_transport_failure_reason",
        "downstream_peer_uri_san",
        "downstream_peer_subject",
    ] {
        assert!(o.contains_key(key), "missing {key} in {line}");
    }
    assert_eq!(o.len(), 24);
    assert_eq!(v["start_time"], "2019-09-03T20:57:49.103Z");
    assert_eq!(v["response_code"], 301);
    assert_eq!(v["duration"], 90);
    assert_eq!(v["bytes_sent"], 0);
    assert_eq!(v["upstream_service_time"], "89");
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["user_agent"], "evil\"agent\\\n");
    assert_eq!(v["upstream_host"], "151.101.65.67:80");
    assert_eq!(v["upstream_local_address"], serde_json::Value::Null);
    assert_eq!(v["route_name"], serde_json::Value::Null);
    assert_eq!(
        v["downstream_peer_uri_san"],
        "spiffe://cluster.local/ns/default/sa/sleep"
    );
}

#[test]
fn json_tcp_line_has_nulls_for_http_only_fields() {
    let v: serde_json::Value =
        serde_json::from_str(&render(&LogFormat::json(), &tcp_record())).unwrap();
    assert_eq!(v["method"], serde_json::Value::Null);
    assert_eq!(v["protocol"], serde_json::Value::Null);
    assert_eq!(v["response_code"], 0);
    assert_eq!(v["bytes_sent"], 1_879_689);
    assert_eq!(v["upstream_service_time"], serde_json::Value::Null);
}

#[test]
fn custom_format_uses_the_same_operators_and_ends_each_record_with_a_newline() {
    let f = compile_format(
        "%START_TIME% %REQ(HOST)% %RESPONSE_CODE% %RESPONSE_FLAGS% %DOWNSTREAM_PEER_URI_SAN% \"%DOWNSTREAM_PEER_SUBJECT%\" %REQ(USER-AGENT):4% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %ROUTE_NAME% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    )
    .unwrap();
    let mut r = http_record();
    r.response_flags = ResponseFlags::NO_ROUTE_FOUND;
    r.downstream_peer_subject = Some("CN=sleep,O=cluster.local".into());
    r.route_name = Some("cnn-route".into());
    assert_eq!(
        render(&f, &r),
        "2019-09-03T20:57:49.103Z edition.cnn.com 301 NR - \"CN=sleep,O=cluster.local\" curl 10.244.2.10 cnn-route /politics\n"
    );
    let from_config =
        LogFormat::from_config(&AccessLogFormat::Custom("%BYTES_SENT%\n".into())).unwrap();
    assert_eq!(render(&from_config, &tcp_record()), "1879689\n");
    // Even an empty format yields one line per record.
    let mut two = String::new();
    compile_format("").unwrap().render(&tcp_record(), &mut two);
    compile_format("").unwrap().render(&tcp_record(), &mut two);
    assert_eq!(two, "\n\n");
}

#[test]
fn bad_format_strings_are_refused_with_a_typed_error() {
    assert_eq!(
        compile_format("x %NOPE% y").unwrap_err(),
        FormatError::UnknownOperator {
            op: "NOPE".into(),
            pos: 2
        }
    );
    assert!(matches!(
        compile_format("%REQ(X-CUSTOM)%").unwrap_err(),
        FormatError::UnsupportedHeader { header, pos: 0 } if header == "X-CUSTOM"
    ));
    assert!(matches!(
        compile_format("%RESP(SERVER)%").unwrap_err(),
        FormatError::UnsupportedHeader { .. }
    ));
    assert!(matches!(
        compile_format("%REQ%").unwrap_err(),
        FormatError::MissingArgument { .. }
    ));
    assert!(matches!(
        compile_format("%DURATION(x)%").unwrap_err(),
        FormatError::UnexpectedArgument { .. }
    ));
    assert!(matches!(
        compile_format("100% done").unwrap_err(),
        FormatError::Malformed { pos: 3, .. }
    ));
    assert!(matches!(
        compile_format("%DURATION").unwrap_err(),
        FormatError::Malformed { .. }
    ));
    assert!(matches!(
        compile_format("%REQ(:PATH").unwrap_err(),
        FormatError::Malformed { .. }
    ));
    let msg = compile_format("%NOPE%").unwrap_err().to_string();
    assert!(msg.contains("unknown operator %NOPE%"), "{msg}");
}
