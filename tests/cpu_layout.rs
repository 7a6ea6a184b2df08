//! tuning/cpu-layout.sh against a fake /proc and /sys: queue IRQs land on the shard cores
//! (queue k on shard core k), every other IRQ on housekeeping, XPS follows the queues,
//! RPS is off, egressd.service gets CPUAffinity=<shard cores>; --dry-run changes nothing.
//! No root needed: the script writes only inside the temp tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tuning/cpu-layout.sh")
}

/// A 4-core machine with NIC eth9: three combined queues plus a non-queue (async) IRQ,
/// and a serial port IRQ that has nothing to do with the NIC.
fn fake_tree(root: &Path) {
    let w = |p: &str, v: &str| {
        let p = root.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, v).unwrap();
    };
    w("sys/devices/system/cpu/online", "0-3\n");
    for irq in [40, 41, 42, 43] {
        w(
            &format!("sys/class/net/eth9/device/msi_irqs/{irq}"),
            "msix\n",
        );
    }
    for q in 0..3 {
        w(&format!("sys/class/net/eth9/queues/rx-{q}/rps_cpus"), "f\n");
        w(&format!("sys/class/net/eth9/queues/tx-{q}/xps_cpus"), "0\n");
    }
    for irq in [4, 40, 41, 42, 43] {
        w(&format!("proc/irq/{irq}/smp_affinity_list"), "0-3\n");
    }
    w("proc/irq/default_smp_affinity", "f\n");
    w(
        "proc/interrupts",
        "           CPU0       CPU1       CPU2       CPU3\n\
           4:         14          0          0          0   IO-APIC   4-edge      ttyS0\n\
          40:          0          0          0          0   PCI-MSI 0-edge      eth9-TxRx-0\n\
          41:          0          0          0          0   PCI-MSI 1-edge      eth9-TxRx-1\n\
          42:          0          0          0          0   PCI-MSI 2-edge      eth9-TxRx-2\n\
          43:          0          0          0          0   PCI-MSI 3-edge      eth9-async\n",
    );
}

fn run(root: &Path, args: &[&str]) -> Output {
    let out = Command::new(script())
        .args(args)
        .env("EGRESSD_PROC", root.join("proc"))
        .env("EGRESSD_SYS", root.join("sys"))
        .env("EGRESSD_SYSTEMD_DIR", root.join("systemd"))
        .env("ETHTOOL", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cpu-layout.sh {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read(root: &Path, p: &str) -> String {
    fs::read_to_string(root.join(p)).unwrap().trim().to_string()
}

#[test]
fn queues_go_to_shard_cores_and_everything_else_to_housekeeping() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fake_tree(root);
    let out = run(root, &["--iface", "eth9", "--cpus", "1-3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("shards: 3 on CPUs 1 2 3; housekeeping: CPUs 0"),
        "{text}"
    );

    assert_eq!(read(root, "proc/irq/40/smp_affinity_list"), "1");
    assert_eq!(read(root, "proc/irq/41/smp_affinity_list"), "2");
    assert_eq!(read(root, "proc/irq/42/smp_affinity_list"), "3");
    assert_eq!(
        read(root, "proc/irq/43/smp_affinity_list"),
        "0",
        "non-queue NIC IRQ"
    );
    assert_eq!(
        read(root, "proc/irq/4/smp_affinity_list"),
        "0",
        "unrelated IRQ"
    );
    assert_eq!(read(root, "proc/irq/default_smp_affinity"), "1");
    // XPS: tx-k used by core k+1 (bit masks 2, 4, 8); RPS off.
    assert_eq!(read(root, "sys/class/net/eth9/queues/tx-0/xps_cpus"), "2");
    assert_eq!(read(root, "sys/class/net/eth9/queues/tx-1/xps_cpus"), "4");
    assert_eq!(read(root, "sys/class/net/eth9/queues/tx-2/xps_cpus"), "8");
    for q in 0..3 {
        assert_eq!(
            read(root, &format!("sys/class/net/eth9/queues/rx-{q}/rps_cpus")),
            "0"
        );
    }
    let dropin = read(root, "systemd/egressd.service.d/10-cpus.conf");
    assert!(dropin.contains("[Service]\nCPUAffinity=1 2 3"), "{dropin}");
    assert!(
        text.contains(
            "isolcpus=managed_irq,domain,1,2,3 nohz_full=1,2,3 rcu_nocbs=1,2,3 irqaffinity=0"
        ),
        "{text}"
    );
}

#[test]
fn shards_count_takes_the_last_cores_and_keeps_cpu0_for_housekeeping() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fake_tree(root);
    run(root, &["--iface", "eth9", "--shards", "2"]);
    assert_eq!(read(root, "proc/irq/40/smp_affinity_list"), "2");
    assert_eq!(read(root, "proc/irq/41/smp_affinity_list"), "3");
    // Three queues, two shards: queue 2 wraps to the first shard core.
    assert_eq!(read(root, "proc/irq/42/smp_affinity_list"), "2");
    assert_eq!(read(root, "proc/irq/4/smp_affinity_list"), "0,1");
    assert_eq!(read(root, "proc/irq/default_smp_affinity"), "3");
}

#[test]
fn dry_run_prints_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fake_tree(root);
    let out = run(root, &["--iface", "eth9", "--cpus", "2,3", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("would write '2' > "), "{text}");
    assert!(
        text.contains("would run: true -L eth9 combined 2"),
        "{text}"
    );
    assert_eq!(read(root, "proc/irq/40/smp_affinity_list"), "0-3");
    assert_eq!(read(root, "sys/class/net/eth9/queues/rx-0/rps_cpus"), "f");
    assert!(!root.join("systemd").exists());
}

#[test]
fn impossible_layouts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fake_tree(root);
    let bad = |args: &[&str]| {
        Command::new(script())
            .args(args)
            .env("EGRESSD_PROC", root.join("proc"))
            .env("EGRESSD_SYS", root.join("sys"))
            .env("EGRESSD_SYSTEMD_DIR", root.join("systemd"))
            .env("ETHTOOL", "true")
            .output()
            .unwrap()
    };
    for args in [
        &["--iface", "eth9", "--cpus", "0-3"][..], // no housekeeping core left
        &["--iface", "eth9", "--cpus", "5"],       // offline CPU
        &["--iface", "eth9", "--shards", "4"],     // CPU 0 stays housekeeping
        &["--iface", "eth9", "--cpus", "1", "--housekeeping", "1"],
        &["--iface", "nope", "--cpus", "1"],
    ] {
        let out = bad(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(!out.stderr.is_empty(), "{args:?}: no reason given");
    }
    assert_eq!(read(root, "proc/irq/40/smp_affinity_list"), "0-3");
}
