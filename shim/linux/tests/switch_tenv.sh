# Sourced by the switch's shell tests: where they run (switch_tenv.h).
# softnic on 127.0.0.1, unless the soft-RoCE tier sets SANPROV_TEST_BACKEND,
# SANPROV_TEST_DEVICE and SANPROV_TEST_ADDR; there "short" is 10 (runs
# tenfold shorter: the VM's CPU is emulated), else 1.
addr=${SANPROV_TEST_ADDR:-127.0.0.1}
short=1
if [ -n "${SANPROV_TEST_BACKEND:-}" ]; then
	export SANPROV_BACKEND="$SANPROV_TEST_BACKEND"
	[ "$SANPROV_TEST_BACKEND" = softnic ] || short=10
fi
[ -z "${SANPROV_TEST_DEVICE:-}" ] || export SANPROV_DEVICE="$SANPROV_TEST_DEVICE"
# The SAN reaches that address alone (softnic's default is 127.0.0.1).
[ -z "${SANPROV_TEST_ADDR:-}" ] || export SANPROV_SPI_ADDRESSES="$SANPROV_TEST_ADDR"
