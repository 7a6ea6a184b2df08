//! tuning/sysctl.conf is well formed for this kernel: every key it sets unconditionally
//! exists under /proc/sys (optional ones carry procps' "-" prefix), every value has the
//! kernel's shape, and each setting carries its reason. Read-only: the host's values are
//! never changed (most of these keys are global, not per network namespace).

use std::collections::BTreeMap;
use std::path::Path;

const CONF: &str = include_str!("../tuning/sysctl.conf");

/// key -> (optional, value, comment lines in its block above it)
fn entries() -> BTreeMap<String, (bool, String, usize)> {
    let mut out = BTreeMap::new();
    let mut comments = 0;
    for line in CONF.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            comments += 1;
            continue;
        }
        if t.is_empty() {
            comments = 0;
            continue;
        }
        let (key, value) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("not key = value: {t}"));
        let (optional, key) = match key.trim().strip_prefix('-') {
            Some(k) => (true, k.to_string()),
            None => (false, key.trim().to_string()),
        };
        assert!(
            out.insert(key.clone(), (optional, value.trim().to_string(), comments))
                .is_none(),
            "{key} twice"
        );
    }
    out
}

#[test]
fn required_settings_are_present_with_a_reason() {
    let e = entries();
    for key in [
        "net.core.somaxconn",
        "net.ipv4.tcp_max_syn_backlog",
        "net.core.netdev_max_backlog",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_tw_reuse",
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
        "fs.file-max",
        "fs.nr_open",
        "net.core.busy_poll",
        "net.core.busy_read",
        "net.ipv4.tcp_migrate_req",
    ] {
        assert!(e.contains_key(key), "{key} missing");
    }
    assert_eq!(e["net.ipv4.tcp_migrate_req"].1, "1");
    // Every setting's block (lines since the last blank one) has a comment: its reason.
    for (key, (_, _, comments)) in &e {
        assert!(*comments > 0, "{key} has no reason above it");
    }
}

#[test]
fn unconditional_keys_exist_on_this_kernel_and_values_have_its_shape() {
    for (key, (optional, value, _)) in entries() {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        if !optional {
            assert!(
                path.exists(),
                "{key} does not exist here: prefix it with '-' if it is optional"
            );
        }
        let numbers: Vec<&str> = value.split_whitespace().collect();
        let numeric = numbers.iter().all(|n| n.parse::<u64>().is_ok());
        let word = ["fq", "bbr"].contains(&value.as_str());
        let list = value.split(',').all(|n| n.parse::<u16>().is_ok());
        assert!(numeric || word || list, "{key} = {value}: unexpected value");
        if let Ok(current) = std::fs::read_to_string(&path) {
            // Same number of fields as the kernel prints (e.g. tcp_rmem has three).
            let fields = current.split_whitespace().count();
            // (An empty list, like ip_local_reserved_ports, has no fixed count.)
            if numeric && fields > 0 {
                assert_eq!(
                    numbers.len(),
                    fields,
                    "{key}: {value:?} vs kernel {current:?}"
                );
            }
        }
    }
}

#[test]
fn limits_and_ranges_are_consistent() {
    let e = entries();
    let num = |k: &str| {
        e[k].1
            .split_whitespace()
            .map(|n| n.parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    };
    let ports = num("net.ipv4.ip_local_port_range");
    assert!(ports[0] >= 1024 && ports[0] < ports[1] && ports[1] <= 65535);
    // The unit's LimitNOFILE must fit under fs.nr_open, and nr_open under file-max.
    let unit = include_str!("../tuning/egressd.service");
    let limit: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(limit <= num("fs.nr_open")[0]);
    assert!(num("fs.nr_open")[0] <= num("fs.file-max")[0]);
    // Autotuning maxima must not exceed the caps setsockopt honours.
    assert!(num("net.ipv4.tcp_rmem")[2] <= num("net.core.rmem_max")[0]);
    assert!(num("net.ipv4.tcp_wmem")[2] <= num("net.core.wmem_max")[0]);
    assert!(num("net.ipv4.tcp_max_syn_backlog")[0] <= num("net.core.somaxconn")[0]);
}
