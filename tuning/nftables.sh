#!/bin/sh
# Applies tuning/nftables.conf: only the egressd user may open connections that leave the
# node; everything else to the outside is dropped and counted.
#
#   nftables.sh [--user NAME] [--internal CIDR[,CIDR...]] [--dry-run] [--remove] [--counters]
#
#   --user NAME        the user egressd runs as (default: egressd); must exist
#   --internal LIST    comma-separated networks that are not "outside" (the cluster's pod,
#                      service and node CIDRs); replaces the file's RFC 1918 default.
#                      Loopback (127.0.0.0/8, ::1) is always internal.
#   --dry-run          print the rendered rules and check them with `nft -c`; change nothing
#   --remove           delete egressd's table (and nothing else)
#   --counters         print the drop/allow counters
#
# To apply inside a network namespace: `ip netns exec NS tuning/nftables.sh ...`.
# To persist across reboots: install the rendered file (--dry-run prints it) as
# /etc/nftables.d/egressd.conf and include it from /etc/nftables.conf.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
conf="$here/nftables.conf"
user=egressd
internal=""
mode=apply

die() { echo "nftables.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case "$1" in
	--user) [ $# -ge 2 ] || die "--user needs a value"; user=$2; shift 2 ;;
	--internal) [ $# -ge 2 ] || die "--internal needs a value"; internal=$2; shift 2 ;;
	--dry-run) mode=dry-run; shift ;;
	--remove) mode=remove; shift ;;
	--counters) mode=counters; shift ;;
	-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
	*) die "unknown argument: $1 (see --help)" ;;
	esac
done

command -v nft >/dev/null 2>&1 || die "nft not found: apt-get install -y nftables"

case "$mode" in
remove)
	# Deleting a table that is not there is an error: create it first, in one transaction.
	printf 'table inet egressd_egress\ndelete table inet egressd_egress\n' | nft -f -
	echo "removed table inet egressd_egress"
	exit 0 ;;
counters)
	nft list counters table inet egressd_egress
	exit 0 ;;
esac

# A user name becomes part of an nft define: allow only what useradd allows.
case "$user" in
''|*[!a-z0-9_.-]*) die "invalid user name: $user" ;;
esac
id -u "$user" >/dev/null 2>&1 || die "user $user does not exist (create it first: useradd --system $user)"

v4="127.0.0.0/8"
v6="::1/128"
if [ -n "$internal" ]; then
	old_ifs=$IFS
	IFS=,
	for net in $internal; do
		case "$net" in
		'') ;;
		*[!0-9a-fA-F:./]*) die "invalid network: $net" ;;
		*:*) v6="$v6, $net" ;;
		*.*) v4="$v4, $net" ;;
		*) die "invalid network: $net" ;;
		esac
	done
	IFS=$old_ifs
fi

rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT INT TERM
script="s|^define egressd_user = .*|define egressd_user = \"$user\"|"
if [ -n "$internal" ]; then
	script="$script
s|^define internal_v4 = .*|define internal_v4 = { $v4 }|
s|^define internal_v6 = .*|define internal_v6 = { $v6 }|"
fi
sed -e "$script" "$conf" >"$rendered"

if [ "$mode" = dry-run ]; then
	cat "$rendered"
	nft -c -f "$rendered"
	echo "# dry run: rules are valid; nothing was changed" >&2
	exit 0
fi

nft -f "$rendered"
echo "applied: only user $user may open connections to outside; internal networks:" >&2
grep -E '^define internal_v[46]' "$rendered" >&2
nft list counters table inet egressd_egress
