#!/bin/sh
# The two README commands, and what CI runs.
#   scripts/dev.sh main [sanprov_perf options]   build, then run the main job on the default
#                                                backend (softnic): all tests, all sizes
#   scripts/dev.sh test                          build with warnings as errors, run every test
#                                                suite, again under ASan+UBSan, the stress
#                                                suite under TSan, fuzz (clang), cross-build
#                                                the Windows parts and test them under Wine,
#                                                and summarize
set -eu
cd "$(dirname "$0")/.."

setup() { # setup DIR [meson options]
	dir=$1
	shift
	if [ -f "$dir/build.ninja" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
}

case "${1:-}" in
main)
	shift
	scripts/install-deps.sh
	setup build
	meson compile -C build >/dev/null
	if [ $# -eq 0 ]; then
		set -- --test all -a
	fi
	exec build/bench/sanprov_perf --loopback "$@"
	;;
test)
	# With what the soft-RoCE tier needs: qemu, a static busybox for the
	# VM's initramfs, rdma (iproute2) to create rxe0, perftest to compare.
	scripts/install-deps.sh qemu-system-x86 busybox-static iproute2 perftest
	setup build -Dtests=enabled -Dwerror=true
	meson compile -C build
	status=0
	meson test -C build --print-errorlogs || status=1
	# The same suites with AddressSanitizer (leaks included) and UndefinedBehaviorSanitizer.
	# Criterion's workers must exit normally for the leak check to run at all.
	setup build-asan -Dtests=enabled -Dwerror=true -Db_sanitize=address,undefined \
		-Db_lundef=false -Dbenchmarks=disabled
	meson compile -C build-asan >/dev/null
	CRITERION_NO_EARLY_EXIT=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C build-asan --print-errorlogs || status=1
	# The multithreaded stress programs once more under ThreadSanitizer.  gcc warns
	# that TSan does not model atomic_thread_fence; the seqlock needs its fences on
	# weakly ordered CPUs, and every access TSan checks there is atomic anyway.
	setup build-tsan -Dtests=enabled -Dwerror=true -Db_sanitize=thread -Db_lundef=false \
		-Dbenchmarks=disabled -Dc_args=-Wno-tsan
	meson compile -C build-tsan stress_rcache stress_mutex stress_htab stress_stale spi_stress spi_reentry spi_delivery sanprov >/dev/null
	TSAN_OPTIONS=halt_on_error=1 meson test -C build-tsan --no-rebuild --print-errorlogs \
		--suite stress || status=1
	# The fuzz targets (the proxy core, the provider's wire decoders, the Windows
	# driver's dispatch, what a softnic peer controls): clang, libFuzzer,
	# ASan and UBSan, for a bounded time.
	CC=clang setup build-fuzz -Dtests=enabled -Db_sanitize=address,undefined -Db_lundef=false \
		-Dbenchmarks=disabled
	meson compile -C build-fuzz fuzz_kp_core fuzz_sp_wire fuzz_kpw_dispatch fuzz_snic_peer >/dev/null
	meson test -C build-fuzz --no-rebuild --print-errorlogs --suite fuzz || status=1
	# The Windows parts: cross-built with clang, lld and mingw-w64, tested under Wine.
	# A machine that cannot install Wine says so in the summary (a skip, not a pass).
	set -- --skip "windows: the cross toolchain or Wine could not be installed"
	if scripts/install-deps.sh mingw-w64 gcc-mingw-w64-x86-64 llvm lld wine wine64; then
		setup build-win --cross-file cross/x86_64-w64-mingw32-clang.ini -Dwerror=true
		meson compile -C build-win >/dev/null
		meson test -C build-win --print-errorlogs || status=1
		set -- build-win/meson-logs/testlog.json
	fi
	python3 scripts/test-summary.py build/meson-logs/testlog.json \
		build-asan/meson-logs/testlog.json build-tsan/meson-logs/testlog.json \
		build-fuzz/meson-logs/testlog.json "$@" || status=1
	exit $status
	;;
*)
	echo "usage: scripts/dev.sh main [sanprov_perf options] | test" >&2
	exit 2
	;;
esac
