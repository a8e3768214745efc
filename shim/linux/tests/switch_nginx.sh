#!/bin/sh
# nginx (a master that never accepts, 3 worker processes, epoll, sendfile on)
# serving a file to wrk and to curl, all under sanprov-run on softnic, TAP.
# The workers accept on the listener their master made: every connection is
# a SAN one (counted in the switch's log), none waits for a connect timeout.
# A skip when nginx or wrk is not installed.  In the soft-RoCE tier
# (SANPROV_TEST_*, tests/rxe_run.py) nginx runs as one process
# (master_process off): the verbs backend cannot share a listener with
# fork children, whose connections would otherwise wait for the SAN
# connect to time out on the master's listener.
# usage: switch_nginx.sh SANPROV_RUN
run="$1"
. "$(dirname "$0")/switch_tenv.sh"
port=$((20000 + ($$ + 7919) % 20000))
tmp=$(mktemp -d)
srv=
trap '[ -n "$srv" ] && kill $srv 2>/dev/null; rm -rf "$tmp"' EXIT
echo "1..2"
nginx=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null)
if [ -z "$nginx" ] || ! command -v wrk >/dev/null; then
	echo "ok 1 # SKIP nginx or wrk is not installed"
	echo "ok 2 # SKIP nginx or wrk is not installed"
	exit 0
fi
master=on
[ "${SANPROV_TEST_BACKEND:-softnic}" = softnic ] || master=off
mkdir -p "$tmp/www" "$tmp/temp"
head -c 300000 /dev/urandom >"$tmp/www/file.bin"
cat >"$tmp/nginx.conf" <<CONF
daemon off;
master_process $master;
worker_processes 3;
user $(id -un) $(id -gn);
pid $tmp/nginx.pid;
error_log stderr notice;
events { use epoll; worker_connections 256; }
http {
	sendfile on;
	tcp_nopush on;
	access_log off;
	client_body_temp_path $tmp/temp/body;
	proxy_temp_path $tmp/temp/proxy;
	fastcgi_temp_path $tmp/temp/fastcgi;
	uwsgi_temp_path $tmp/temp/uwsgi;
	scgi_temp_path $tmp/temp/scgi;
	server {
		listen $addr:$port;
		root $tmp/www;
	}
}
CONF
SANPROV_RUN_LOG=3 "$run" "$nginx" -p "$tmp" -c "$tmp/nginx.conf" >"$tmp/s.log" 2>&1 &
srv=$!
# Up when a plain TCP client (no switch) gets the file.
i=0
while [ $i -lt 50 ] && ! curl -sf "http://$addr:$port/file.bin" -o /dev/null; do
	sleep 0.1
	i=$((i + 1))
done
# curl through the switch: the bytes are the file's.
st=0
SANPROV_RUN_LOG=3 timeout 30 "$run" curl -sf "http://$addr:$port/file.bin" -o "$tmp/got" \
	2>"$tmp/curl.log" || st=1
cmp -s "$tmp/got" "$tmp/www/file.bin" || st=1
sans=$(grep -c "SAN connection\$" "$tmp/curl.log" || true)
if [ $st = 0 ] && [ "$sans" -gt 0 ]; then echo "ok 1 - curl gets the file from nginx over the SAN"
else echo "not ok 1 - curl gets the file from nginx over the SAN (status $st, $sans SAN connections)"
	sed 's/^/# /' "$tmp/curl.log" "$tmp/s.log" | tail -40; fi
# wrk: 2 threads, 16 connections, 3 s; every connection a SAN one, no errors.
st=0
SANPROV_RUN_LOG=3 timeout 60 "$run" wrk -t 2 -c 16 -d $((3 - short / 5))s "http://$addr:$port/file.bin" \
	>"$tmp/wrk.log" 2>"$tmp/wrk.err" || st=1
grep -q "Requests/sec" "$tmp/wrk.log" || st=1
! grep -qE "Socket errors|Non-2xx" "$tmp/wrk.log" || st=1
# No worker died (the master would start another).
! grep -q "exited on signal" "$tmp/s.log" || st=1
sans=$(grep -c "SAN connection\$" "$tmp/wrk.err" || true)
tcps=$(grep -c "no SAN peer" "$tmp/wrk.err" || true)
accepted=$(grep -c "SAN connection accepted" "$tmp/s.log" || true)
workers=$(grep "SAN connection accepted" "$tmp/s.log" | sed 's/^sanprov-run\[\([0-9]*\)\].*/\1/' | sort -u | wc -l)
grep -E "Requests/sec|Transfer/sec" "$tmp/wrk.log" | sed 's/^/# /'
echo "# $sans SAN connections, $tcps fell back to TCP; $accepted accepted by $workers worker(s)"
if [ $st = 0 ] && [ "$sans" -gt 0 ] && [ "$tcps" = 0 ]; then
	echo "ok 2 - wrk against nginx (3 workers, epoll, sendfile) over the SAN"
else
	echo "not ok 2 - wrk against nginx (3 workers, epoll, sendfile) over the SAN (status $st)"
	sed 's/^/# /' "$tmp/wrk.log"
	grep -v "SAN connection" "$tmp/wrk.err" "$tmp/s.log" | sed 's/^/# /' | tail -30
fi
kill $srv 2>/dev/null
wait
srv=
