#!/bin/sh
# Load sanprov_proxy.sys in Wine as a demand-start kernel service and run the
# driver's TAP test against it, in one Wine session: winedevice.exe, which
# hosts the driver, ends with the session's last program.
#
#   wine-driver.sh DRIVER.sys TEST.exe      (WINEPREFIX from the environment)
set -u
sys=$1 test=$2
wine=${WINE:-wine}
: "${WINEPREFIX:?WINEPREFIX must be set}"

if [ ! -d "$WINEPREFIX/drive_c/windows/system32/drivers" ]; then
	timeout 300 "$wine" wineboot -i >/dev/null 2>&1 || { echo "Bail out! wineboot failed"; exit 1; }
	# A new prefix goes on being set up after wineboot returns: wait until it is done.
	timeout 300 wineserver -w 2>/dev/null
fi
cp "$sys" "$WINEPREFIX/drive_c/windows/system32/drivers/sanprov_proxy.sys" ||
	{ echo "Bail out! cannot copy the driver into the prefix"; exit 1; }
if ! timeout 60 "$wine" reg query 'HKLM\System\CurrentControlSet\Services\sanprov_proxy' \
	>/dev/null 2>&1; then
	timeout 60 "$wine" sc create sanprov_proxy type= kernel start= demand \
		binPath= 'C:\windows\system32\drivers\sanprov_proxy.sys' >/dev/null 2>&1 ||
		{ echo "Bail out! sc create failed"; exit 1; }
fi
wtest="Z:$(realpath "$test" | sed 's#/#\\#g')"
tmp=$(mktemp)
log=$(mktemp)
wlog="Z:$(printf '%s' "$log" | sed 's#/#\\#g')"
timeout 120 "$wine" cmd /c "sc start sanprov_proxy >$wlog & $wtest" >"$tmp"
rc=$?
tr -d '\r' <"$tmp"
# What sc start said, for a test that could not open the device.
[ $rc -eq 0 ] || sed 's/^/# sc start: /' "$log" | tr -d '\r'
rm -f "$tmp" "$log"
timeout 60 wineserver -w 2>/dev/null
exit $rc
