#!/bin/bash
# Throughput through 1, 2 and 3 egressd nodes, each in its own network namespace with one
# shard, behind one ECMP VIP (L4 hash), measured by wrk in a client namespace. Root only;
# every address lives in the namespaces it creates, which it deletes on exit.
#   deploy/kubernetes/fleet-bench.sh [path/to/egressd]   (default target/release/egressd)
set -u
P=egdbn$$; BIN=$(realpath "${1:-target/release/egressd}"); D=$(mktemp -d)
cleanup() { for p in $(cat $D/pids 2>/dev/null); do kill -9 $p 2>/dev/null; done; rm -rf "$D"; for n in c u n1 n2 n3; do ip netns del $P$n 2>/dev/null; done; }
trap cleanup EXIT
for n in c u n1 n2 n3; do ip netns add $P$n; ip -n $P$n link set lo up; done
ip -n ${P}c addr add 10.77.0.1/32 dev lo; ip -n ${P}u addr add 10.79.0.1/32 dev lo
ip netns exec ${P}c sysctl -qw net.ipv4.fib_multipath_hash_policy=1
for i in 1 2 3; do
  ip link add ${P}c$i netns ${P}c type veth peer name ${P}x$i netns ${P}n$i
  ip link add ${P}y$i netns ${P}n$i type veth peer name ${P}u$i netns ${P}u
  ip -n ${P}c addr add 10.77.$i.1/24 dev ${P}c$i; ip -n ${P}c link set ${P}c$i up
  ip -n ${P}n$i addr add 10.77.$i.2/24 dev ${P}x$i; ip -n ${P}n$i link set ${P}x$i up
  ip -n ${P}n$i addr add 10.77.100.1/32 dev lo
  ip -n ${P}n$i addr add 10.78.$i.1/24 dev ${P}y$i; ip -n ${P}n$i link set ${P}y$i up
  ip -n ${P}n$i route add 10.77.0.1/32 via 10.77.$i.1; ip -n ${P}n$i route add 10.79.0.1/32 via 10.78.$i.2
  ip -n ${P}u addr add 10.78.$i.2/24 dev ${P}u$i; ip -n ${P}u link set ${P}u$i up
  cat > $D/n$i.yaml <<Y
apiVersion: egressd.io/v1alpha1
kind: EgressGateway
metadata: {name: egressd}
spec:
  bindAddress: 0.0.0.0
  portMap: {80: 8080}
  admin: 0.0.0.0:15000
  limits: {maxConnections: 1000}
  accessLog: {path: /dev/null}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: demo}
spec: {hosts: [demo.local], ports: [{number: 80, name: http, protocol: HTTP}], resolution: STATIC, endpoints: [{address: 10.79.0.1, ports: {http: 80}}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec: {selector: {istio: egressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [demo.local]}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs}
spec: {hosts: [demo.local], gateways: [gw], http: [{route: [{destination: {host: demo.local, port: {number: 80}}}]}]}
Y
done
# The origin: two asyncio processes (SO_REUSEPORT) answering a fixed 200.
cat > $D/origin.py <<'PY'
import asyncio, os
R=b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
async def h(r,w):
    try:
        while True:
            d=await r.readuntil(b"\r\n\r\n")
            w.write(R)
    except Exception: pass
    w.close()
async def main():
    s=await asyncio.start_server(h,"10.79.0.1",80,reuse_port=True)
    await s.serve_forever()
asyncio.run(main())
PY
for k in 1 2; do ip netns exec ${P}u python3 $D/origin.py & echo $! >> $D/pids; done
sleep 1
for i in 1 2 3; do ip netns exec ${P}n$i $BIN run -c $D/n$i.yaml --shards 1 >/dev/null 2>$D/n$i.err & echo $! >> $D/pids; done
sleep 2
for n in 1 2 3; do
  hops=""; for i in $(seq 1 $n); do hops="$hops nexthop via 10.77.$i.2"; done
  ip -n ${P}c route replace 10.77.100.1/32 src 10.77.0.1 $hops
  ip netns exec ${P}c wrk -t2 -c48 -d8s -H 'Host: demo.local' http://10.77.100.1:8080/ > $D/wrk$n.txt
  echo "nodes=$n $(grep -E 'Requests/sec' $D/wrk$n.txt) $(grep -E 'Non-2xx|errors' $D/wrk$n.txt | tr '\n' ' ')"
  grep -E "Latency" $D/wrk$n.txt
  for i in 1 2 3; do echo -n " n$i rq=$(ip netns exec ${P}n$i curl -s 'http://127.0.0.1:15000/stats?filter=upstream_rq_total' | grep 'demo.local.upstream_rq_total' | grep -o '[0-9]*$' | head -1)"; done; echo
done
