#!/bin/bash
# Run a command inside a throw-away qemu VM whose kernel has soft-RoCE: the
# stock Debian kernel boots with a small busybox initramfs, loads rdma_rxe,
# creates rxe0 on a dummy network device (10.77.0.1/24) and runs COMMAND as
# root, in this directory, with the host's programs and libraries.  The job
# finds the device and its address in SANPROV_VM_RXE_DEV and SANPROV_VM_RXE_ADDR.
#
#   scripts/rxe-vm.sh [--timeout SECONDS] [--mem SIZE] [--cpus N] -- COMMAND [ARG...]
#
# The guest sees the host's / read-only (under a tmpfs overlay: writes there
# vanish with the VM) and the current directory read-write.  Exit status:
# COMMAND's; 124 when the VM outlives --timeout; 125 when the VM failed;
# 77 (skip) when this host cannot run the VM (say why on stderr).
#
# Needs qemu-system-x86, busybox-static, xz-utils and apt (for the kernel
# package, downloaded once into $SANPROV_VM_CACHE, default ~/.cache/sanprov-vm).
# KVM is used when it can boot the kernel (SANPROV_VM_ACCEL=kvm|tcg forces one).
set -eu

timeout_s=1800 mem=2G cpus=2
while [ $# -gt 0 ]; do
	case $1 in
	--timeout) timeout_s=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--cpus) cpus=$2; shift 2 ;;
	--) shift; break ;;
	*) echo "usage: $0 [--timeout S] [--mem M] [--cpus N] -- COMMAND..." >&2; exit 2 ;;
	esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--timeout S] [--mem M] [--cpus N] -- COMMAND..." >&2; exit 2; }

skip() { echo "rxe-vm: SKIP: $*" >&2; exit 77; }
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 is not installed"
[ -x /bin/busybox ] || skip "busybox-static is not installed"

here=$(cd "$(dirname "$0")" && pwd)
cache=${SANPROV_VM_CACHE:-${HOME:-/root}/.cache/sanprov-vm}
mkdir -p "$cache"

# --- the kernel: Debian's current linux-image package, unpacked once --------
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$pkg" ] || skip "cannot find the linux-image package (run apt-get update)"
kdir=$cache/$pkg
if [ ! -d "$kdir/boot" ]; then
	tmp=$(mktemp -d "$cache/dl.XXXXXX")
	(cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null 2>&1) ||
		{ rm -rf "$tmp"; skip "cannot download $pkg"; }
	dpkg-deb -x "$tmp"/*.deb "$tmp/root"
	mv "$tmp/root" "$kdir"
	rm -rf "$tmp"
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | tail -n 1)
kver=${vmlinuz##*/vmlinuz-}
moddir=$kdir/lib/modules/$kver
[ -f "$moddir/modules.dep" ] || busybox depmod -b "$kdir" "$kver"

# --- the initramfs: busybox, our /init and the modules it loads --------------
init=$here/rxe-vm-init.sh
initrd=$cache/initrd-$kver.cpio.gz
if [ ! -f "$initrd" ] || [ "$init" -nt "$initrd" ]; then
	ir=$(mktemp -d)
	mkdir -p "$ir/bin" "$ir/proc" "$ir/sys" "$ir/dev" "$ir/lib/modules/$kver"
	cp /bin/busybox "$ir/bin/"
	cp "$init" "$ir/init"
	chmod 755 "$ir/init"
	cp "$moddir/modules.dep" "$moddir/modules.builtin" "$ir/lib/modules/$kver/"
	# rdma_rxe computes its ICRC with "crc32", which it does not depend on: load it first.
	modules="virtio_pci 9pnet_virtio 9p overlay dummy crc32_generic rdma_rxe rdma_ucm"
	echo "$modules" > "$ir/modules"
	for m in $modules; do
		dep=$(grep -E "/$m\.ko(\.[a-z]+)?:" "$moddir/modules.dep") || continue
		for f in ${dep%%:*} ${dep#*:}; do
			mkdir -p "$ir/lib/modules/$kver/$(dirname "$f")"
			cp "$moddir/$f" "$ir/lib/modules/$kver/$f"
		done
	done
	(cd "$ir" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$initrd.tmp"
	mv "$initrd.tmp" "$initrd"
	rm -rf "$ir"
fi

# --- the job: environment, directory and command, in a directory the guest mounts
job=$(mktemp -d)
trap 'rm -rf "$job"' EXIT
work=$(pwd -P)
{
	export -p | grep -vE '^declare -x (PWD|OLDPWD|SHLVL|_)(=|$)'
	echo "export SANPROV_VM_RXE_DEV=rxe0 SANPROV_VM_RXE_ADDR=10.77.0.1"
	printf 'cd %q || exit 125\n' "$work"
	printf '%q ' "$@"
	echo
} > "$job/job.sh"
echo "$work" > "$job/workdir"
echo "$moddir" > "$job/moddir"

accel=${SANPROV_VM_ACCEL:-}
if [ -z "$accel" ]; then
	accel=tcg
	[ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && accel=kvm
fi
if [ "$accel" = kvm ]; then
	accel_args=(-accel kvm -cpu host)
else
	accel_args=(-accel tcg,thread=multi -cpu max) # never -march=native for the guest
fi
fs() { echo "local,path=$1,mount_tag=$2,security_model=none,multidevs=remap$3"; }

set +e
timeout --foreground -k 10 "$timeout_s" qemu-system-x86_64 "${accel_args[@]}" \
	-m "$mem" -smp "$cpus" -nodefaults -no-user-config -display none -no-reboot \
	-kernel "$vmlinuz" -initrd "$initrd" -append "console=ttyS0 quiet panic=-1" \
	-serial "file:$job/console.log" -serial stdio \
	-virtfs "$(fs / hostroot ,readonly=on)" -virtfs "$(fs "$job" job '')" \
	-virtfs "$(fs "$work" work '')" < /dev/null
qemu_rc=$?
set -e
if [ -f "$job/rc" ]; then
	exit "$(cat "$job/rc")"
fi
tail -n 20 "$job/console.log" >&2 2>/dev/null || true
if [ $qemu_rc = 124 ]; then
	echo "rxe-vm: the VM ran past ${timeout_s}s" >&2
	exit 124
fi
echo "rxe-vm: the VM stopped before the command finished (qemu status $qemu_rc)" >&2
exit 125
