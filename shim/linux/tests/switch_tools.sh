#!/bin/sh
# Real programs under sanprov-run on softnic, TAP: iperf3 (1 and 4 streams)
# and sockperf ping-pong.  A program that is not installed is a skip.
# usage: switch_tools.sh SANPROV_RUN
run="$1"
n=0
port=$((20000 + $$ % 20000))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "1..3"
result() { # name, status, san connections seen
	n=$((n + 1))
	if [ "$2" = 0 ] && [ "$3" -gt 0 ]; then echo "ok $n - $1 ($3 SAN connections)"
	else echo "not ok $n - $1 (status $2, $3 SAN connections)"; sed 's/^/# /' "$tmp"/*.log; fi
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
sans() { cat "$tmp"/*.log | grep -c "SAN connection" || true; }
iperf() { # streams
	port=$((port + 1))
	rm -f "$tmp"/*.log
	SANPROV_RUN_LOG=3 timeout 60 "$run" iperf3 -s -1 -B 127.0.0.1 -p $port >"$tmp/s.log" 2>&1 &
	sleep 0.5
	SANPROV_RUN_LOG=3 timeout 60 "$run" iperf3 -c 127.0.0.1 -p $port -t 2 -P "$1" >"$tmp/c.log" 2>&1
	st=$?
	wait
	grep -q receiver "$tmp/c.log" || st=1
	result "iperf3, $1 stream(s)" $st "$(sans)"
}
if command -v iperf3 >/dev/null; then iperf 1; iperf 4; else skip "iperf3 is not installed"; skip "iperf3 is not installed"; fi
if command -v sockperf >/dev/null; then
	port=$((port + 1))
	rm -f "$tmp"/*.log
	SANPROV_RUN_LOG=3 timeout 30 "$run" sockperf sr --tcp -i 127.0.0.1 -p $port >"$tmp/s.log" 2>&1 &
	srv=$!
	sleep 0.5
	SANPROV_RUN_LOG=3 timeout 30 "$run" sockperf pp --tcp -i 127.0.0.1 -p $port -t 2 >"$tmp/c.log" 2>&1
	st=$?
	kill $srv 2>/dev/null
	wait
	grep -q "avg-latency" "$tmp/c.log" || st=1
	grep "avg-latency" "$tmp/c.log" | sed 's/^/# /'
	result "sockperf ping-pong" $st "$(sans)"
else
	skip "sockperf is not installed"
fi
