#!/bin/sh
# Installs egressd on a dedicated egress node: binary, configuration, system user and the
# systemd unit; checks the unit with `systemd-analyze verify` and the configuration with
# `egressd validate`; enables and starts the service when systemd runs.
#
#   install.sh [--binary PATH] [--config PATH] [--destdir DIR] [--sysctl] [--no-start]
#
#   --binary PATH   egressd binary (default: target/release/egressd beside this script)
#   --config PATH   configuration to install as /etc/egressd/egressd.yaml when none is
#                   there yet (default: config/egressd.yaml); an existing one is kept
#   --destdir DIR   install under DIR (packaging, tests): no user, no chown, no start
#   --sysctl        also install tuning/sysctl.conf as /etc/sysctl.d/90-egressd.conf
#   --no-start      install and enable, but do not start
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
binary="$top/target/release/egressd"
config="$top/config/egressd.yaml"
destdir=""
sysctl=no
start=yes

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case "$1" in
	--binary) [ $# -ge 2 ] || die "--binary needs a value"; binary=$2; shift 2 ;;
	--config) [ $# -ge 2 ] || die "--config needs a value"; config=$2; shift 2 ;;
	--destdir) [ $# -ge 2 ] || die "--destdir needs a value"; destdir=$2; shift 2 ;;
	--sysctl) sysctl=yes; shift ;;
	--no-start) start=no; shift ;;
	-h|--help) sed -n '2,14p' "$0"; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done

[ -x "$binary" ] || die "no executable egressd at $binary (cargo build --release, or --binary PATH)"
[ -f "$config" ] || die "no configuration at $config (--config PATH)"
if [ -z "$destdir" ] && [ "$(id -u)" != 0 ]; then
	die "run as root (or use --destdir DIR)"
fi

bin_path=/usr/local/bin/egressd
etc_dir=/etc/egressd
unit_path=/etc/systemd/system/egressd.service

# The service's user: a system account with no shell and no home. io_uring charges locked
# memory per user, so sharing the account with anything else shrinks egressd's budget.
if [ -z "$destdir" ]; then
	if ! id -u egressd >/dev/null 2>&1; then
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin --comment "egressd egress gateway" egressd
		echo "created system user egressd"
	fi
	owner="-o root -g egressd"
else
	owner=""
fi

# shellcheck disable=SC2086 # $owner is empty or two options
install -D -m 0755 "$binary" "$destdir$bin_path"
# shellcheck disable=SC2086
install -d -m 0750 $owner "$destdir$etc_dir"
if [ -e "$destdir$etc_dir/egressd.yaml" ]; then
	echo "kept existing $etc_dir/egressd.yaml"
else
	# shellcheck disable=SC2086
	install -m 0640 $owner "$config" "$destdir$etc_dir/egressd.yaml"
fi
install -D -m 0644 "$here/egressd.service" "$destdir$unit_path"
if [ "$sysctl" = yes ]; then
	install -D -m 0644 "$here/sysctl.conf" "$destdir/etc/sysctl.d/90-egressd.conf"
	[ -z "$destdir" ] && sysctl --load=/etc/sysctl.d/90-egressd.conf >/dev/null
fi

# The configuration must load (certificate files may be missing in a destdir: only a
# warning for validate).
"$destdir$bin_path" validate -c "$destdir$etc_dir/egressd.yaml" >/dev/null ||
	die "egressd validate failed on $etc_dir/egressd.yaml"

# verify checks that ExecStart= exists: in a destdir, check a copy aimed at it.
if command -v systemd-analyze >/dev/null 2>&1; then
	if [ -n "$destdir" ]; then
		tmp=$(mktemp -d)
		trap 'rm -rf "$tmp"' EXIT INT TERM
		sed "s|$bin_path|$destdir$bin_path|g" "$destdir$unit_path" >"$tmp/egressd.service"
		systemd-analyze verify "$tmp/egressd.service" || die "systemd-analyze verify failed"
	else
		systemd-analyze verify "$unit_path" || die "systemd-analyze verify failed"
	fi
else
	echo "systemd-analyze not found: unit not verified" >&2
fi

echo "installed $bin_path, $etc_dir/egressd.yaml, $unit_path"
[ -n "$destdir" ] && exit 0

"$bin_path" check-system -c "$etc_dir/egressd.yaml" ||
	echo "check-system: limits too low for this node (see above); the unit's LimitMEMLOCK/LimitNOFILE apply under systemd" >&2

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	if [ "$start" = yes ]; then
		systemctl enable --now egressd.service
		systemctl --no-pager status egressd.service || true
	else
		systemctl enable egressd.service
	fi
else
	echo "systemd is not running: not enabled (start with: systemctl enable --now egressd)" >&2
fi
