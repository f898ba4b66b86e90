#!/bin/bash
# The main job end to end on the built-in default: build (or reuse) the
# Debian fixture image, install it onto a disk image with
# `bootlace install to-disk --via-loopback`, boot the disk in QEMU and report.
#   scripts/demo.sh [SUITE] [FIRMWARE] [DISK]    (bookworm|trixie, uefi|bios)
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:-bookworm}
firmware=${2:-uefi}
disk=${3:-/var/tmp/bootlace-demo.raw}

archive=$(test/fixtures/build.sh "$suite" | tail -n 1)
echo "==> image: oci-archive:$archive"
rm -f "$disk"
truncate -s 8G "$disk"
start=$(date +%s.%N)
bin/bootlace install to-disk --via-loopback \
	--source-imgref "oci-archive:$archive" \
	--target-imgref "localhost/bootlace-fixture:$suite" \
	--karg bootlace.demo=1 \
	--json "$disk" >/var/tmp/bootlace-demo-report.json
end=$(date +%s.%N)
printf '==> installed in %.1f s; report: /var/tmp/bootlace-demo-report.json\n' "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')"
jq -r '"    deployment: \(.deployment)\n    origin: \(.origin)\n    kargs: \(.kargs | join(" "))"' /var/tmp/bootlace-demo-report.json || cat /var/tmp/bootlace-demo-report.json
echo "==> booting $disk under $firmware (QEMU, TCG)"
bin/bootlace-testbed boot --firmware "$firmware" --marker BOOTLACE-BOOT-OK --log /var/tmp/bootlace-demo-console.log "$disk"
echo "==> guest console (marker lines):"
grep -a 'BOOTLACE' /var/tmp/bootlace-demo-console.log | sed 's/^/    /'
echo "==> OK: $suite booted under $firmware; full console log: /var/tmp/bootlace-demo-console.log"
