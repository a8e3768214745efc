#!/bin/sh
# The Linux switch against TCP, in one run (docs/linux-switch.md): sockperf
# ping-pong latency and iperf3 throughput, each on plain TCP, under
# sanprov-run and (with -R) under rsockets (LD_PRELOAD of librdmacm's
# librspreload.so), alternated -r times; prints the medians and the ratios
# (switch / TCP, switch / rsockets).
#
# usage: bench/switch_bench.sh [-b BUILD_DIR] [-t SECONDS] [-r RUNS] [-P STREAMS]
#                              [-a ADDRESS] [-d DEVICE] [-R]
#   -a  the address servers bind and clients dial (127.0.0.1); the SAN reaches it
#   -d  the verbs backend on this device (default: softnic, or SANPROV_BACKEND)
#   -R  an rsockets column too (needs an RDMA device: the soft-RoCE VM)
# In the soft-RoCE VM (scripts/rxe-vm.sh):
#   scripts/rxe-vm.sh -- bench/switch_bench.sh -d rxe0 -a 10.77.0.1 -R
set -eu
build=build
secs=5
runs=3
streams=1
addr=127.0.0.1
rs=
usage() {
	echo "usage: $0 [-b BUILD_DIR] [-t SECONDS] [-r RUNS] [-P STREAMS] [-a ADDRESS] [-d DEVICE] [-R]" >&2
	exit 2
}
while getopts b:t:r:P:a:d:R o; do
	case $o in
	b) build=$OPTARG ;;
	t) secs=$OPTARG ;;
	r) runs=$OPTARG ;;
	P) streams=$OPTARG ;;
	a) addr=$OPTARG ;;
	d) export SANPROV_BACKEND=verbs SANPROV_DEVICE="$OPTARG" ;;
	R) rs=1 ;;
	*) usage ;;
	esac
done
run="$build/shim/linux/sanprov-run-build"
for p in sockperf iperf3 "$run"; do
	command -v "$p" >/dev/null || [ -x "$p" ] || { echo "switch_bench: $p is missing" >&2; exit 77; }
done
export SANPROV_BACKEND="${SANPROV_BACKEND:-softnic}"
# The SAN reaches the address the tools use (softnic's own default is 127.0.0.1).
export SANPROV_SPI_ADDRESSES="$addr"
if [ -n "$rs" ]; then
	# Debian puts librspreload.so (package librdmacm1) under the library directory's rsocket/.
	rspreload=
	for f in /usr/lib/*/rsocket/librspreload.so /usr/lib64/rsocket/librspreload.so \
		/usr/lib/rsocket/librspreload.so; do
		[ -e "$f" ] && { rspreload=$f; break; }
	done
	[ -n "$rspreload" ] || { echo "switch_bench: librspreload.so (librdmacm1) is missing" >&2; exit 77; }
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
port=$((30000 + $$ % 20000))
# What a tool said when it gave no figure (stderr: the table stays on stdout).
why() { # label, files...
	l=$1
	shift
	echo "switch_bench: $l gave no figure:" >&2
	tail -n 4 "$@" | sed 's/^/  /' >&2
}

# One sockperf ping-pong: its average latency in usec.  rsockets' preload
# has no epoll (sockperf's server default): with -R every server polls
# (-F poll, which sockperf takes with a connection list only).
lat() { # label, wrapper (words)
	port=$((port + 1))
	if [ -n "$rs" ]; then
		echo "T:$addr:$port" >"$tmp/feed"
		# shellcheck disable=SC2086
		timeout $((secs + 30)) $2 sockperf sr -f "$tmp/feed" -F poll >"$tmp/sr" 2>&1 &
	else
		# shellcheck disable=SC2086
		timeout $((secs + 30)) $2 sockperf sr --tcp -i "$addr" -p $port >"$tmp/sr" 2>&1 &
	fi
	srv=$!
	sleep 2
	# shellcheck disable=SC2086
	timeout $((secs + 30)) $2 sockperf pp --tcp -i "$addr" -p $port -t "$secs" >"$tmp/pp" 2>&1 || true
	kill $srv 2>/dev/null || true
	wait $srv 2>/dev/null || true
	v=$(sed -n 's/.*avg-latency=\([0-9.]*\).*/\1/p' "$tmp/pp" | tail -1)
	[ -n "$v" ] || why "sockperf ($1)" "$tmp/sr" "$tmp/pp"
	echo "$v"
}

# One iperf3 run: the receiver's Gbit/s.
tput() { # label, wrapper (words)
	port=$((port + 1))
	# shellcheck disable=SC2086
	timeout $((secs + 30)) $2 iperf3 -s -1 -B "$addr" -p $port >"$tmp/is" 2>&1 &
	srv=$!
	sleep 2
	# shellcheck disable=SC2086
	timeout $((secs + 30)) $2 iperf3 -c "$addr" -p $port -t "$secs" -P "$streams" -f g >"$tmp/ip" 2>&1 || true
	kill $srv 2>/dev/null || true
	wait $srv 2>/dev/null || true
	v=$(grep receiver "$tmp/ip" | tail -1 | awk '{ for (i = 1; i < NF; i++) if ($(i + 1) == "Gbits/sec") v = $i } END { print v }')
	if [ -z "$v" ] || [ "$v" = 0.00 ]; then
		why "iperf3 ($1)" "$tmp/is" "$tmp/ip"
		# No end of test from the client: the receiving server's per-second
		# rates, averaged (its intervals of 0.5 s and more), marked with a *.
		v=$(awk '$NF ~ /bits\/sec$/ && $3 ~ /^[0-9.]+-[0-9.]+$/ {
			split($3, t, "-"); if (t[2] - t[1] < 0.5) next
			r = $(NF - 1); u = $NF
			if (u == "Kbits/sec") r /= 1e6; else if (u == "Mbits/sec") r /= 1e3
			else if (u == "bits/sec") r /= 1e9
			sum += r; n++ } END { if (n) printf "%.3f*", sum / n }' "$tmp/is")
		[ -z "$v" ] || echo "switch_bench: iperf3 ($1): the server's rate, $v Gbit/s" >&2
	fi
	echo "$v"
}

median() { tr -d '*' | sort -g | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
ratio() { awk -v a="${1%\*}" -v b="${2%\*}" 'BEGIN { if (b > 0 && a > 0) printf "%.2f", a / b; else print "-" }'; }

: >"$tmp/lt"; : >"$tmp/ls"; : >"$tmp/lr"; : >"$tmp/tt"; : >"$tmp/ts"; : >"$tmp/tr"
i=0
while [ $i -lt "$runs" ]; do
	lat tcp env >>"$tmp/lt"
	lat switch "$run" >>"$tmp/ls"
	[ -z "$rs" ] || lat rsockets "env LD_PRELOAD=$rspreload" >>"$tmp/lr"
	tput tcp env >>"$tmp/tt"
	tput switch "$run" >>"$tmp/ts"
	[ -z "$rs" ] || tput rsockets "env LD_PRELOAD=$rspreload" >>"$tmp/tr"
	i=$((i + 1))
done
lt=$(median <"$tmp/lt"); ls=$(median <"$tmp/ls"); lr=$(median <"$tmp/lr")
tt=$(median <"$tmp/tt"); ts=$(median <"$tmp/ts"); tr=$(median <"$tmp/tr")
# A median over runs of which one took the server's rate is marked too.
mark() { if grep -q '[*]' "$1"; then echo '*'; fi; }
lt=$lt$(mark "$tmp/lt"); ls=$ls$(mark "$tmp/ls"); lr=$lr$(mark "$tmp/lr")
tt=$tt$(mark "$tmp/tt"); ts=$ts$(mark "$tmp/ts"); tr=$tr$(mark "$tmp/tr")
echo "switch_bench: $runs alternated run(s) of ${secs}s, backend $SANPROV_BACKEND${SANPROV_DEVICE:+ on $SANPROV_DEVICE}, $addr, medians"
if [ -z "$rs" ]; then
	printf '%-34s %10s %10s %8s\n' "" "tcp" "switch" "x"
	printf '%-34s %10s %10s %8s\n' "sockperf ping-pong latency, usec" "$lt" "$ls" "$(ratio "$ls" "$lt")"
	printf '%-34s %10s %10s %8s\n' "iperf3 $streams stream(s), Gbit/s" "$tt" "$ts" "$(ratio "$ts" "$tt")"
else
	# x tcp, x rs: the switch's figure over TCP's, over rsockets'.
	printf '%-34s %10s %10s %10s %8s %8s\n' "" "tcp" "switch" "rsockets" "x tcp" "x rs"
	printf '%-34s %10s %10s %10s %8s %8s\n' "sockperf ping-pong latency, usec" "$lt" "$ls" "${lr:--}" \
		"$(ratio "$ls" "$lt")" "$(ratio "$ls" "$lr")"
	printf '%-34s %10s %10s %10s %8s %8s\n' "iperf3 $streams stream(s), Gbit/s" "$tt" "$ts" "${tr:--}" \
		"$(ratio "$ts" "$tt")" "$(ratio "$ts" "$tr")"
fi
case "$lt$ls$lr$tt$ts$tr" in
*'*'*) echo "* no end of test from iperf3's client: the receiving server's per-second rates" ;;
esac
[ -n "$lt" ] && [ -n "$ls" ] && [ -n "$tt" ] && [ -n "$ts" ]
