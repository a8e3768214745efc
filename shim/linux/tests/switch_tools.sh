#!/bin/sh
# Real programs under sanprov-run on softnic, TAP: iperf3 (1 and 4 streams),
# sockperf ping-pong, redis-server with redis-benchmark (50 clients, pipelining
# off and on) and memcached with memcslap.  A program that is not installed is
# a skip.  In the soft-RoCE tier (SANPROV_TEST_BACKEND, _DEVICE, _ADDR, as
# tests/rxe_run.py sets them) the same on that device and address, with
# fewer requests (the VM's CPU is emulated).
# SWITCH_TOOLS (iperf3 sockperf redis memcached) picks the tools; the others
# are skips that say so (the soft-RoCE tier's short variant).
# usage: switch_tools.sh SANPROV_RUN
run="$1"
. "$(dirname "$0")/switch_tenv.sh"
n=0
port=$((20000 + $$ % 20000))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "1..6"
result() { # name, status, san connections seen
	n=$((n + 1))
	if [ "$2" = 0 ] && [ "$3" -gt 0 ]; then echo "ok $n - $1 ($3 SAN connections)"
	else echo "not ok $n - $1 (status $2, $3 SAN connections)"; sed 's/^/# /' "$tmp"/*.log; fi
}
skip() { n=$((n + 1)); echo "ok $n # SKIP $1"; }
want() { case " ${SWITCH_TOOLS:-iperf3 sockperf redis memcached} " in *" $1 "*) return 0 ;; esac; return 1; }
sans() { cat "$tmp"/*.log | grep -c "SAN connection" || true; }
iperf() { # streams
	port=$((port + 1))
	rm -f "$tmp"/*.log
	SANPROV_RUN_LOG=3 timeout 60 "$run" iperf3 -s -1 -B $addr -p $port >"$tmp/s.log" 2>&1 &
	sleep 0.5
	SANPROV_RUN_LOG=3 timeout 60 "$run" iperf3 -c $addr -p $port -t 2 -P "$1" >"$tmp/c.log" 2>&1
	st=$?
	wait
	grep -q receiver "$tmp/c.log" || st=1
	result "iperf3, $1 stream(s)" $st "$(sans)"
}
if ! want iperf3; then skip "iperf3 not in SWITCH_TOOLS"; skip "iperf3 not in SWITCH_TOOLS"
elif command -v iperf3 >/dev/null; then iperf 1; iperf 4; else skip "iperf3 is not installed"; skip "iperf3 is not installed"; fi
if ! want sockperf; then
	skip "sockperf not in SWITCH_TOOLS"
elif command -v sockperf >/dev/null; then
	port=$((port + 1))
	rm -f "$tmp"/*.log
	SANPROV_RUN_LOG=3 timeout 30 "$run" sockperf sr --tcp -i $addr -p $port >"$tmp/s.log" 2>&1 &
	srv=$!
	sleep 0.5
	SANPROV_RUN_LOG=3 timeout 30 "$run" sockperf pp --tcp -i $addr -p $port -t 2 >"$tmp/c.log" 2>&1
	st=$?
	kill $srv 2>/dev/null
	wait
	grep -q "avg-latency" "$tmp/c.log" || st=1
	grep "avg-latency" "$tmp/c.log" | sed 's/^/# /'
	result "sockperf ping-pong" $st "$(sans)"
else
	skip "sockperf is not installed"
fi
redis() { # pipeline depth; the server's log in s.log
	rm -f "$tmp"/c.log
	SANPROV_RUN_LOG=3 timeout 60 "$run" redis-benchmark -h $addr -p $port -c 50 -n $((20000 / short)) \
		-P "$1" -t set,get -q >"$tmp/c.log" 2>&1
	st=$?
	# Both tests report a rate, nothing reports an error.
	[ "$(tr '\r' '\n' <"$tmp/c.log" | grep -c 'requests per second')" = 2 ] || st=1
	! grep -qi "error" "$tmp/c.log" || st=1
	tr '\r' '\n' <"$tmp/c.log" | grep 'requests per second' | sed 's/^/# /'
	result "redis-benchmark, 50 clients, pipeline $1" $st "$(grep -c 'SAN connection' "$tmp/c.log")"
}
if ! want redis; then
	skip "redis not in SWITCH_TOOLS"
	skip "redis not in SWITCH_TOOLS"
elif command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
	port=$((port + 1))
	rm -f "$tmp"/*.log
	SANPROV_RUN_LOG=3 timeout 60 "$run" redis-server --port $port --bind $addr --save '' \
		--appendonly no >"$tmp/s.log" 2>&1 &
	srv=$!
	sleep 0.5
	redis 1
	redis 16
	kill $srv 2>/dev/null
	wait
else
	skip "redis-server or redis-benchmark is not installed"
	skip "redis-server or redis-benchmark is not installed"
fi
if ! want memcached; then
	skip "memcached not in SWITCH_TOOLS"
elif command -v memcached >/dev/null && command -v memcslap >/dev/null; then
	port=$((port + 1))
	rm -f "$tmp"/*.log
	SANPROV_RUN_LOG=3 timeout 60 "$run" memcached -u "$(id -un)" -l $addr -p $port -U 0 -t 2 \
		>"$tmp/s.log" 2>&1 &
	srv=$!
	sleep 0.5
	SANPROV_RUN_LOG=3 timeout 60 "$run" memcslap --servers=$addr:$port --concurrency=8 \
		--execute-number=$((1000 / short)) --binary >"$tmp/c.log" 2>&1
	st=$?
	kill $srv 2>/dev/null
	wait
	grep -q "Time total" "$tmp/c.log" || st=1
	! grep -qiE "fail|error" "$tmp/c.log" || st=1
	grep "Time to set" "$tmp/c.log" | sed 's/^/# /'
	result "memcached with memcslap, 8 threads" $st "$(grep -c 'SAN connection' "$tmp/c.log")"
else
	skip "memcached or memcslap (libmemcached-tools) is not installed"
fi
