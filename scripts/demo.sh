#!/bin/bash
# The main job end to end on the built-in default: build (or reuse) the
# Debian fixture image, install it onto a disk image with
# `bootlace install to-disk --via-loopback` (its two logically bound images pulled from a
# loopback registry through a registries.conf mirror), boot the disk in QEMU and report.
#   scripts/demo.sh [SUITE] [FIRMWARE] [DISK]    (bookworm|trixie, uefi|bios)
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:-bookworm}
firmware=${2:-uefi}
disk=${3:-/var/tmp/bootlace-demo.raw}

archive=$(test/fixtures/build.sh "$suite" | tail -n 1)
apps=$(test/fixtures/build-apps.sh | tail -n 1)
echo "==> image: oci-archive:$archive"

# The fixture declares its bound images as localhost:5000/bootlace/app-{a,b}:latest; serve them
# from a loopback registry and mirror those names to it.
reg=$(mktemp -d /var/tmp/bootlace-demo-registry.XXXXXX)
bin/bootlace-testbed registry start --dir "$reg" >"$reg/start.log" 2>&1 &
reg_pid=$!
trap 'kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null; rm -rf --one-file-system "$reg"' EXIT
for _ in $(seq 100); do [[ -f $reg/registry.json ]] && break; sleep 0.1; done
[[ -f $reg/registry.json ]] || { cat "$reg/start.log" >&2; exit 1; }
for app in app-a app-b; do
	bin/bootlace-testbed registry push --dir "$reg" "oci-archive:$apps/$app.oci-archive.tar" "bootlace/$app:latest" >/dev/null
done
addr=$(jq -r .Addr "$reg/registry.json")
printf '[[registry]]\nlocation = "localhost:5000/bootlace"\n[[registry.mirror]]\nlocation = "%s/bootlace"\n' "$addr" >"$reg/registries.conf"
echo "==> bound images served from $addr"
rm -f "$disk"
truncate -s 8G "$disk"
start=$(date +%s.%N)
bin/bootlace install to-disk --via-loopback \
	--source-imgref "oci-archive:$archive" \
	--target-imgref "localhost/bootlace-fixture:$suite" \
	--karg bootlace.demo=1 \
	--bound-images pull --registries-conf "$reg/registries.conf" \
	--cert-dir "$(jq -r .CertDir "$reg/registry.json")" --authfile "$(jq -r .AuthFile "$reg/registry.json")" \
	--json "$disk" >/var/tmp/bootlace-demo-report.json
end=$(date +%s.%N)
printf '==> installed in %.1f s; report: /var/tmp/bootlace-demo-report.json\n' "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')"
jq -r '"    deployment: \(.deployment)\n    origin: \(.origin)\n    kargs: \(.kargs | join(" "))\n    bound images: \([.["bound-images"][]? | .image + " " + .["manifest-digest"]] | join(", "))"' /var/tmp/bootlace-demo-report.json || cat /var/tmp/bootlace-demo-report.json
echo "==> booting $disk under $firmware (QEMU, TCG)"
bin/bootlace-testbed boot --firmware "$firmware" --marker BOOTLACE-BOOT-OK --log /var/tmp/bootlace-demo-console.log "$disk"
echo "==> guest console (marker lines):"
grep -a 'BOOTLACE' /var/tmp/bootlace-demo-console.log | sed 's/^/    /'
echo "==> OK: $suite booted under $firmware; full console log: /var/tmp/bootlace-demo-console.log"
