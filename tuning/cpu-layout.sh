#!/bin/sh
# CPU and IRQ layout for egressd: each shard owns one core and the NIC queue whose
# interrupts land on that core; everything else (other IRQs, system services, the kernel's
# housekeeping) stays on the housekeeping cores. See tuning/README.md.
#
#   cpu-layout.sh --iface IFACE (--cpus LIST | --shards N) [--housekeeping LIST] [--dry-run]
#
#   --iface IFACE        the NIC carrying the proxied traffic
#   --cpus LIST          shard cores, e.g. 2-7 or 2,3,6,7 (one shard per core)
#   --shards N           or: the last N online cores (CPU 0 stays housekeeping)
#   --housekeeping LIST  cores for everything else (default: the other online cores)
#   --dry-run            print what would change; change nothing
#
# It sets: the NIC's RSS queue count (ethtool -L), each queue's IRQ affinity, XPS, RPS off,
# every other IRQ and the default IRQ affinity to housekeeping, and a systemd drop-in
# giving egressd.service CPUAffinity=<shard cores> (egressd starts one shard per CPU of
# its affinity mask, so no --shards/--cpus is needed in ExecStart). It prints the kernel
# command line for full isolation, which needs a reboot. Stop irqbalance first: it would
# move the IRQs back.
#
# EGRESSD_PROC, EGRESSD_SYS, EGRESSD_SYSTEMD_DIR, ETHTOOL override /proc, /sys,
# /etc/systemd/system and the ethtool command (tests run it against a fake tree).
set -eu

PROC=${EGRESSD_PROC:-/proc}
SYS=${EGRESSD_SYS:-/sys}
UNIT_DIR=${EGRESSD_SYSTEMD_DIR:-/etc/systemd/system}
ETHTOOL=${ETHTOOL:-ethtool}
iface=""
cpus=""
shards=""
housekeeping=""
dry=no

die() { echo "cpu-layout.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case "$1" in
	--iface) [ $# -ge 2 ] || die "--iface needs a value"; iface=$2; shift 2 ;;
	--cpus) [ $# -ge 2 ] || die "--cpus needs a value"; cpus=$2; shift 2 ;;
	--shards) [ $# -ge 2 ] || die "--shards needs a value"; shards=$2; shift 2 ;;
	--housekeeping) [ $# -ge 2 ] || die "--housekeeping needs a value"; housekeeping=$2; shift 2 ;;
	--dry-run) dry=yes; shift ;;
	-h|--help) sed -n '2,24p' "$0"; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done

# "2-4,7" -> "2 3 4 7"
expand() {
	echo "$1" | tr ',' '\n' | while IFS=- read -r a b; do
		case "$a${b:-}" in *[!0-9]*) die "invalid CPU list: $1" ;; esac
		[ -n "$a" ] || continue
		seq "$a" "${b:-$a}"
	done | sort -n | uniq | tr '\n' ' ' | sed 's/ $//'
}

# "1 2 3" -> the kernel's hex bitmap, 32-bit groups separated by commas ("e").
mask() {
	top=0
	for c in "$@"; do [ $((c / 32)) -gt "$top" ] && top=$((c / 32)); done
	out=""
	g=$top
	while [ "$g" -ge 0 ]; do
		bits=0
		for c in "$@"; do [ $((c / 32)) -eq "$g" ] && bits=$((bits | (1 << (c % 32)))); done
		if [ -z "$out" ]; then out=$(printf '%x' "$bits"); else out="$out,$(printf '%08x' "$bits")"; fi
		g=$((g - 1))
	done
	echo "$out"
}

contains() { case " $1 " in *" $2 "*) return 0 ;; esac; return 1; }

write() { # file value
	if [ "$dry" = yes ]; then
		echo "would write '$2' > $1"
	elif ! printf '%s\n' "$2" >"$1" 2>/dev/null; then
		echo "warning: could not write '$2' > $1" >&2
	fi
}

[ -n "$iface" ] || die "--iface is required"
[ -d "$SYS/class/net/$iface" ] || die "no network interface $iface"
online=$(expand "$(cat "$SYS/devices/system/cpu/online")")

if [ -n "$cpus" ]; then
	shard_cpus=$(expand "$cpus")
elif [ -n "$shards" ]; then
	case "$shards" in ''|*[!0-9]*) die "invalid --shards: $shards" ;; esac
	shard_cpus=$(echo "$online" | tr ' ' '\n' | grep -vx 0 | tail -n "$shards" | tr '\n' ' ' | sed 's/ $//')
	[ "$(echo "$shard_cpus" | wc -w)" -eq "$shards" ] || die "$shards shards need $shards online CPUs besides CPU 0; online: $online"
else
	die "--cpus or --shards is required"
fi
for c in $shard_cpus; do contains "$online" "$c" || die "CPU $c is not online (online: $online)"; done

if [ -n "$housekeeping" ]; then
	hk=$(expand "$housekeeping")
else
	hk=""
	for c in $online; do contains "$shard_cpus" "$c" || hk="$hk $c"; done
	hk=$(echo "$hk" | sed 's/^ //')
fi
[ -n "$hk" ] || die "no housekeeping CPU left: keep at least one core out of the shards"
for c in $hk; do contains "$shard_cpus" "$c" && die "CPU $c is both a shard and a housekeeping core"; done

n=$(echo "$shard_cpus" | wc -w)
echo "shards: $n on CPUs $shard_cpus; housekeeping: CPUs $hk"

# 1. One RSS queue per shard.
if [ "$dry" = yes ]; then
	echo "would run: $ETHTOOL -L $iface combined $n"
elif ! $ETHTOOL -L "$iface" combined "$n" 2>/dev/null; then
	echo "warning: '$ETHTOOL -L $iface combined $n' failed (fixed queue count?); IRQs are still spread over the shard cores" >&2
fi

# 2. The NIC's IRQs: queue IRQs round-robin over the shard cores, the rest to housekeeping.
dev="$SYS/class/net/$iface/device"
irqs=$(ls "$dev/msi_irqs" 2>/dev/null || ls "$dev/../msi_irqs" 2>/dev/null || true)
nic_irqs=""
# Queue k's IRQs go to shard core k. Combined queues (TxRx, mlx5 comp) count on their own;
# split ones (virtio input.k/output.k, -rx-k/-tx-k) count rx and tx separately, so a
# queue pair lands on one core.
rx=0 tx=0 combined=0 i=0
for irq in $(echo "$irqs" | tr ' ' '\n' | sort -n); do
	name=$(awk -v irq="$irq:" '$1 == irq { print $NF }' "$PROC/interrupts")
	nic_irqs="$nic_irqs $irq"
	case "$name" in
	*[Tt]x[Rr]x*|*comp*|*queue*) k=$combined; combined=$((combined + 1)) ;;
	*input*|*-rx*) k=$rx; rx=$((rx + 1)) ;;
	*output*|*-tx*) k=$tx; tx=$((tx + 1)) ;;
	*) k="" ;;
	esac
	if [ -n "$k" ]; then
		cpu=$(echo "$shard_cpus" | cut -d' ' -f$((k % n + 1)))
		echo "IRQ $irq ($name) -> shard CPU $cpu"
		write "$PROC/irq/$irq/smp_affinity_list" "$cpu"
		i=$((i + 1))
	else
		write "$PROC/irq/$irq/smp_affinity_list" "$(echo "$hk" | tr ' ' ',')"
	fi
done
[ "$i" -gt 0 ] || echo "warning: no queue IRQs found for $iface (virtual NIC?): only CPU affinity applies" >&2

# 3. Transmit: queue k is used by shard core k (XPS). Receive: hardware RSS already
#    spreads flows, so RPS (a software copy of it) stays off.
k=0
for q in "$SYS/class/net/$iface/queues"/tx-*; do
	[ -e "$q/xps_cpus" ] || continue
	cpu=$(echo "$shard_cpus" | cut -d' ' -f$((k % n + 1)))
	write "$q/xps_cpus" "$(mask "$cpu")"
	k=$((k + 1))
done
for q in "$SYS/class/net/$iface/queues"/rx-*; do
	[ -e "$q/rps_cpus" ] && write "$q/rps_cpus" 0
done

# 4. Every other IRQ, and future ones, to housekeeping.
# shellcheck disable=SC2086 # one argument per CPU
write "$PROC/irq/default_smp_affinity" "$(mask $hk)"
for d in "$PROC/irq"/[0-9]*; do
	irq=${d##*/}
	contains "$nic_irqs" "$irq" && continue
	[ -e "$d/smp_affinity_list" ] && write "$d/smp_affinity_list" "$(echo "$hk" | tr ' ' ',')"
done

# 5. egressd's affinity mask = the shard cores.
dropin="$UNIT_DIR/egressd.service.d/10-cpus.conf"
if [ "$dry" = yes ]; then
	echo "would write $dropin: CPUAffinity=$shard_cpus"
else
	mkdir -p "$(dirname "$dropin")"
	printf '# Written by tuning/cpu-layout.sh\n[Service]\nCPUAffinity=%s\n' "$shard_cpus" >"$dropin"
	echo "wrote $dropin (systemctl daemon-reload && systemctl restart egressd)"
fi

list=$(echo "$shard_cpus" | tr ' ' ',')
echo "for the rest of the system, set CPUAffinity=$hk in /etc/systemd/system.conf"
echo "for full isolation (reboot), add to the kernel command line:"
echo "  isolcpus=managed_irq,domain,$list nohz_full=$list rcu_nocbs=$list irqaffinity=$(echo "$hk" | tr ' ' ',')"
echo "without systemd: taskset -c $list egressd run ...   (or: egressd run --cpus $list)"
