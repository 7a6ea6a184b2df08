#!/usr/bin/env bash
# User-space instructions per proxied keep-alive request, counted by callgrind: repeatable
# for the same binary and load whatever else the machine does, so it can compare two builds
# on a noisy machine where CPU times cannot. Loopback only; every process started is
# stopped by PID.
#
#   bench/scripts/callgrind-per-request.sh [EGRESSD_BINARY] [SECONDS]
#
# Layout as in `bench http`: nginx origin and egressd (one shard) on CPU 1, wrk on
# CPU 0 with 32 connections (CONNS=N for another count: 2 profiles low load). Needs
# valgrind, nginx, wrk, curl.
set -euo pipefail
bin=${1:-target/release/egressd}
secs=${2:-5}
dir=$(mktemp -d /tmp/egressd-callgrind.XXXXXX)
origin_port=$((20000 + RANDOM % 10000))
proxy_port=$((origin_port + 1))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT

cat >"$dir/origin.conf" <<NGINX
worker_processes 1;
master_process off;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/f;
  uwsgi_temp_path $dir/u; scgi_temp_path $dir/s;
  server { listen 127.0.0.1:$origin_port; location / { default_type text/plain; return 200 "hello, bench\n"; } }
}
NGINX
taskset -c 1 nginx -c "$dir/origin.conf" -p "$dir" </dev/null >/dev/null 2>&1 &
pids+=($!)

cat >"$dir/egressd.yaml" <<YAML
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata: {name: egressd}
spec:
  bindAddress: 127.0.0.1
  portMap: {80: $proxy_port}
  admin: ""
  limits: {maxConnections: 4096}
  accessLog: {path: "$dir/access.log", format: istio}
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: bench-origin}
spec:
  hosts: [bench.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: $origin_port}}]
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: bench-gateway}
spec:
  selector: {istio: egressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [bench.local]}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: bench-route}
spec:
  hosts: [bench.local]
  gateways: [bench-gateway]
  http:
  - route: [{destination: {host: bench.local, port: {number: 80}}}]
YAML
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
  "$bin" run --shards 1 --cpus 1 -c "$dir/egressd.yaml" </dev/null >"$dir/egressd.log" 2>&1 &
egressd=$!
pids+=("$egressd")
for _ in $(seq 100); do
  curl -fso /dev/null -H 'Host: bench.local' "http://127.0.0.1:$proxy_port/" && break
  sleep 0.2
done
load() { taskset -c 0 wrk -t1 -c"${CONNS:-32}" -d"$1" -H 'Host: bench.local' "http://127.0.0.1:$proxy_port/"; }
load 2s >/dev/null # warm-up: connections, pools and caches
callgrind_control -i on "$egressd" >/dev/null
out=$(load "${secs}s")
callgrind_control -i off "$egressd" >/dev/null
kill "$egressd"
wait "$egressd" || true
requests=$(awk '/requests in/ {print $1}' <<<"$out")
total=$(callgrind_annotate "$dir/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "instructions $total  requests $requests  per request $((total / requests))"
