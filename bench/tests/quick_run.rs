//! The whole `bench http --quick` run end to end: origin, proxies, result files. Ignored by
//! default because it needs nginx, haproxy and wrk installed and keeps both CPUs busy for
//! ~25 s; run it with `cargo test -p bench --test quick_run -- --ignored`.

use std::process::Command;

#[test]
#[ignore = "needs nginx, haproxy and wrk; ~25 s of full CPU"]
fn quick_run_writes_json_and_markdown_and_skips_a_missing_egressd() {
    let out = tempfile::tempdir().expect("tempdir");
    let status = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "http",
            "--quick",
            "--only",
            "direct,egressd,haproxy",
            "--egressd",
        ])
        .arg(out.path().join("no-such-egressd"))
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("run bench");
    assert!(status.success());
    let files: Vec<_> = std::fs::read_dir(out.path())
        .expect("out dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    let json = files
        .iter()
        .find(|f| f.ends_with("-http.json"))
        .expect("json written");
    assert!(files.iter().any(|f| f.ends_with("-http.md")));
    assert!(files.iter().any(|f| f.ends_with("-http.svg")));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join(json)).expect("read"))
            .expect("json");
    let targets = v["scenarios"][0]["targets"].as_array().expect("targets");
    let by_name = |n: &str| targets.iter().find(|t| t["name"] == n).expect(n);
    assert!(by_name("direct")["peak_rps"].as_f64().expect("direct peak") > 0.0);
    assert!(
        by_name("haproxy")["open_loop"]["p99_us"]
            .as_f64()
            .expect("haproxy p99")
            > 0.0
    );
    let skipped = by_name("egressd")["skipped"]
        .as_str()
        .expect("egressd skipped");
    assert!(skipped.contains("not found"), "{skipped}");
    assert!(v["machine"]["cpu_model"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}
