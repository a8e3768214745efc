#!/bin/busybox sh
# /init of the soft-RoCE VM (scripts/rxe-vm.sh): load the modules, build a
# root from the host's / (read-only 9p under a tmpfs overlay) with the job
# directory and the work directory read-write, create rxe0, run the job,
# leave its exit status in the job directory, and power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec > /dev/console 2>&1

fail() {
	echo "rxe-vm-init: $*"
	poweroff -f
}

for m in $(cat /modules); do
	modprobe "$m" || fail "cannot load $m"
done

opts=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /host /job /scratch /root
mount -t 9p -o "$opts,ro,cache=loose" hostroot /host || fail "cannot mount the host's /"
mount -t 9p -o "$opts,cache=mmap" job /job || fail "cannot mount the job directory"
mount -t tmpfs -o mode=755 tmpfs /scratch
mkdir -p /scratch/upper /scratch/work
mount -t overlay -o lowerdir=/host,upperdir=/scratch/upper,workdir=/scratch/work overlay /root ||
	fail "cannot build the root"
R=/root
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs tmpfs $R/run
mkdir -p $R/run/job
mount --bind /job $R/run/job
work=$(cat /job/workdir)
mkdir -p "$R$work"
mount -t 9p -o "$opts,cache=mmap" work "$R$work" || fail "cannot mount $work"
# The guest kernel's modules, where modprobe in the job looks for them.
mkdir -p "$R/lib/modules/$(uname -r)"
mount --bind "/host$(cat /job/moddir)" "$R/lib/modules/$(uname -r)"

hostname rxe-vm
ip link set lo up
ip link add rxenet0 type dummy || fail "no dummy netdev"
ip addr add 10.77.0.1/24 dev rxenet0
ip link set rxenet0 up
chroot $R rdma link add rxe0 type rxe netdev rxenet0 || fail "cannot create rxe0"
ulimit -l unlimited

# The job's output goes to the second serial port, the host script's stdout.
stty -F /dev/ttyS1 -onlcr 2>/dev/null
{
	chroot $R /bin/bash /run/job/job.sh < /dev/null 2>&1
	echo $? > /job/rc
} | cat > /dev/ttyS1
sync
poweroff -f
