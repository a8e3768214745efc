#!/bin/sh
# The Linux switch against TCP loopback, in one run (docs/linux-switch.md):
# sockperf ping-pong latency and iperf3 throughput, each first on plain TCP,
# then under sanprov-run (softnic), alternated -r times; prints the medians
# and the ratios (switch / TCP).
# usage: bench/switch_bench.sh [-b BUILD_DIR] [-t SECONDS] [-r RUNS] [-P STREAMS]
set -eu
build=build
secs=5
runs=3
streams=1
while getopts b:t:r:P: o; do
	case $o in
	b) build=$OPTARG ;;
	t) secs=$OPTARG ;;
	r) runs=$OPTARG ;;
	P) streams=$OPTARG ;;
	*) echo "usage: $0 [-b BUILD_DIR] [-t SECONDS] [-r RUNS] [-P STREAMS]" >&2; exit 2 ;;
	esac
done
run="$build/shim/linux/sanprov-run-build"
for p in sockperf iperf3 "$run"; do
	command -v "$p" >/dev/null || [ -x "$p" ] || { echo "switch_bench: $p is missing" >&2; exit 77; }
done
export SANPROV_BACKEND="${SANPROV_BACKEND:-softnic}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
port=$((30000 + $$ % 20000))

# One sockperf ping-pong: its average latency in usec.
lat() { # wrapper...
	port=$((port + 1))
	"$@" sockperf sr --tcp -i 127.0.0.1 -p $port >/dev/null 2>&1 &
	srv=$!
	sleep 0.5
	"$@" sockperf pp --tcp -i 127.0.0.1 -p $port -t "$secs" >"$tmp/pp" 2>&1 || true
	kill $srv 2>/dev/null || true
	wait $srv 2>/dev/null || true
	sed -n 's/.*avg-latency=\([0-9.]*\).*/\1/p' "$tmp/pp" | tail -1
}

# One iperf3 run: the receiver's Gbit/s.
tput() { # wrapper...
	port=$((port + 1))
	"$@" iperf3 -s -1 -B 127.0.0.1 -p $port >/dev/null 2>&1 &
	srv=$!
	sleep 0.5
	"$@" iperf3 -c 127.0.0.1 -p $port -t "$secs" -P "$streams" -f g >"$tmp/ip" 2>&1 || true
	wait $srv 2>/dev/null || true
	grep receiver "$tmp/ip" | tail -1 | awk '{ for (i = 1; i < NF; i++) if ($(i + 1) == "Gbits/sec") v = $i } END { print v }'
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

: >"$tmp/lt"; : >"$tmp/ls"; : >"$tmp/tt"; : >"$tmp/ts"
i=0
while [ $i -lt "$runs" ]; do
	lat env >>"$tmp/lt"
	lat "$run" >>"$tmp/ls"
	tput env >>"$tmp/tt"
	tput "$run" >>"$tmp/ts"
	i=$((i + 1))
done
lt=$(median <"$tmp/lt"); ls=$(median <"$tmp/ls")
tt=$(median <"$tmp/tt"); ts=$(median <"$tmp/ts")
echo "switch_bench: $runs alternated run(s) of ${secs}s, backend $SANPROV_BACKEND, medians"
printf '%-34s %10s %10s %8s\n' "" "tcp" "switch" "x"
printf '%-34s %10s %10s %8s\n' "sockperf ping-pong latency, usec" "$lt" "$ls" \
	"$(awk -v a="$ls" -v b="$lt" 'BEGIN { if (b > 0 && a > 0) printf "%.2f", a / b; else print "-" }')"
printf '%-34s %10s %10s %8s\n' "iperf3 $streams stream(s), Gbit/s" "$tt" "$ts" \
	"$(awk -v a="$ts" -v b="$tt" 'BEGIN { if (b > 0 && a > 0) printf "%.2f", a / b; else print "-" }')"
[ -n "$lt" ] && [ -n "$ls" ] && [ -n "$tt" ] && [ -n "$ts" ]
