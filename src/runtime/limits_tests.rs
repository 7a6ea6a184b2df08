//! Unit tests of `runtime::limits`: the arithmetic and the verdicts, on made-up machines.

use super::*;

const MIB: u64 = 1 << 20;

fn demand(shards: usize, max_connections: u64) -> Demand {
    Demand {
        shards,
        cpus: Vec::new(),
        io_memory_per_shard: MIB,
        max_connections,
        listeners: 3,
        fds_per_connection: SOCKETS_PER_CONNECTION,
    }
}

fn roomy() -> Machine {
    Machine {
        memlock: sys::Rlimit {
            soft: Some(64 * MIB),
            hard: Some(64 * MIB),
        },
        nofile: sys::Rlimit {
            soft: Some(1 << 20),
            hard: Some(1 << 20),
        },
        cap_ipc_lock: false,
        affinity: vec![0, 1, 2, 3],
        kernel: String::from("6.1.0-18-amd64"),
        io_uring_disabled: 0,
    }
}

fn item<'a>(r: &'a Report, name: &str) -> &'a Item {
    r.items.iter().find(|i| i.name == name).unwrap()
}

#[test]
fn memlock_is_three_registrations_plus_rings_per_shard() {
    let n = Needs::compute(demand(2, 1000));
    assert_eq!(n.memlock_bytes, 2 * (3 * MIB + (64 << 10)));
}

#[test]
fn tiny_io_memory_is_rounded_up_as_glommio_does() {
    let mut d = demand(1, 1000);
    d.io_memory_per_shard = 1000;
    assert_eq!(Needs::compute(d).memlock_bytes, 3 * (64 << 10) + (64 << 10));
    let mut d = demand(1, 1000);
    d.io_memory_per_shard = MIB + 1;
    assert_eq!(
        Needs::compute(d).memlock_bytes,
        3 * (MIB + 4096) + (64 << 10)
    );
}

#[test]
fn nofile_counts_two_sockets_per_connection_and_listeners_per_shard() {
    let n = Needs::compute(demand(2, 1000));
    assert_eq!(n.nofile, Some(2000 + 2 * (3 + 16) + 64));
    assert_eq!(Needs::compute(demand(2, 0)).nofile, None);
    let mut with_pipes = demand(2, 1000);
    with_pipes.fds_per_connection = 6;
    assert_eq!(
        Needs::compute(with_pipes).nofile,
        Some(6000 + 2 * (3 + 16) + 64)
    );
}

#[test]
fn roomy_machine_fits_and_prints_ok_lines() {
    let r = judge(&Needs::compute(demand(2, 1000)), &roomy());
    assert!(r.fits(), "{r}");
    let text = r.to_string();
    assert_eq!(text.lines().count(), 4);
    assert!(text.lines().all(|l| l.ends_with(": ok")), "{text}");
    assert!(text.starts_with("memlock: need 6.1 MiB (2 shard(s) x (3 x 1 MiB io_memory + 64 KiB rings)), have 64 MiB: ok"), "{text}");
}

#[test]
fn low_memlock_says_what_to_set() {
    let mut m = roomy();
    m.memlock.soft = Some(8 * MIB);
    let r = judge(&Needs::compute(demand(4, 1000)), &m);
    assert!(!r.fits());
    let line = r.to_string().lines().next().unwrap().to_string();
    // 4 × (3 MiB + 64 KiB) = 12.25 MiB → 13 MiB.
    assert!(
        line.ends_with("have 8 MiB: TOO LOW (set LimitMEMLOCK=13M in the unit / ulimit -l 13312)"),
        "{line}"
    );
}

#[test]
fn cap_ipc_lock_or_unlimited_memlock_fits() {
    let mut m = roomy();
    m.memlock.soft = Some(1 << 16);
    m.cap_ipc_lock = true;
    let n = Needs::compute(demand(4, 1000));
    assert!(item(&judge(&n, &m), "memlock").fix.is_none());
    m.cap_ipc_lock = false;
    assert!(item(&judge(&n, &m), "memlock").fix.is_some());
    m.memlock.soft = None;
    let r = judge(&n, &m);
    assert!(item(&r, "memlock").fix.is_none());
    assert!(r.to_string().contains("have unlimited: ok"));
}

#[test]
fn low_nofile_says_what_to_set() {
    let mut m = roomy();
    m.nofile.soft = Some(1024);
    let r = judge(&Needs::compute(demand(2, 100_000)), &m);
    let fix = item(&r, "nofile").fix.clone().unwrap();
    assert_eq!(fix, "set LimitNOFILE=200102 in the unit / ulimit -n 200102");
    assert!(!r.fits());
}

#[test]
fn more_shards_than_cpus_or_cpus_outside_the_mask_do_not_fit() {
    let m = roomy();
    let r = judge(&Needs::compute(demand(5, 10)), &m);
    assert!(item(&r, "cpus")
        .fix
        .as_ref()
        .unwrap()
        .contains("--shards 4"));
    let mut d = demand(2, 10);
    d.cpus = vec![3, 7];
    let r = judge(&Needs::compute(d), &m);
    assert!(item(&r, "cpus").fix.as_ref().unwrap().contains("[7]"));
    let mut d = demand(3, 10);
    d.cpus = vec![2, 3];
    assert!(item(&judge(&Needs::compute(d), &m), "cpus").fix.is_some());
    let mut d = demand(2, 10);
    d.cpus = vec![2, 3];
    assert!(item(&judge(&Needs::compute(d), &m), "cpus").fix.is_none());
}

#[test]
fn old_kernel_or_disabled_io_uring_does_not_fit() {
    let mut m = roomy();
    m.kernel = String::from("5.4.0-150-generic");
    let n = Needs::compute(demand(1, 10));
    assert!(item(&judge(&n, &m), "kernel").fix.is_some());
    m.kernel = String::from("5.8.0");
    assert!(item(&judge(&n, &m), "kernel").fix.is_none());
    m.kernel = String::from("garbage");
    assert!(item(&judge(&n, &m), "kernel").fix.is_some());
    m.kernel = String::from("6.6.1");
    m.io_uring_disabled = 2;
    let fix = item(&judge(&n, &m), "kernel").fix.clone().unwrap();
    assert!(fix.contains("io_uring_disabled=0"));
}

#[test]
fn check_on_this_machine_reports_the_real_limits() {
    let n = Needs::compute(demand(1, 10));
    let r = check(&n);
    let have = sys::get(Resource::Nofile).unwrap();
    let nofile = item(&r, "nofile");
    assert_eq!(
        nofile.have,
        have.soft.map_or("unlimited".into(), |v| v.to_string())
    );
    // After check, the soft limit is at least the need or already at the hard limit.
    assert!(have.soft >= n.nofile || have.soft == have.hard);
}

#[test]
fn ensure_error_names_the_shards_and_carries_the_report() {
    let n = Needs::compute(demand(1, u64::MAX / 4));
    let err = ensure(&n).unwrap_err();
    assert_eq!(err.shards, 1);
    let text = err.to_string();
    assert!(text.contains("nofile: need"), "{text}");
    assert!(text.contains("TOO LOW (set LimitNOFILE="), "{text}");
}
