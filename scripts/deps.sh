#!/bin/bash
# Installs everything bootlace's build, tests, demo and bench need on a Debian
# machine: host packages from apt (test tools only: bootlace itself needs none
# of them at install time) and Go modules through the module proxy.
# Idempotent and quick when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(
	# test bed: fixture images, QEMU boots, loopback registry
	debootstrap debian-archive-keyring qemu-system-x86 ovmf
	docker-registry apache2-utils openssl skopeo
	# in-container installs (the image's own container run by podman; runc:
	# crun refuses hosts with cgroup v1 plus an empty v2 hierarchy) and bound
	# images (the test checks the target's store with podman)
	podman runc
	# integration tests compare against the real tools
	ostree e2fsprogs xfsprogs dosfstools mtools fdisk gdisk util-linux
	grub-efi-amd64-bin grub-pc-bin grub2-common
	# bench: the peer pipeline and the machine's limits
	umoci pigz zstd time jq
	# build
	gcc git ca-certificates
)
missing=()
for p in "${pkgs[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[[ $status == installed ]] || missing+=("$p")
done
if ((${#missing[@]})); then
	if ((EUID != 0)); then
		echo "deps.sh: missing packages: ${missing[*]}; run as root" >&2
		exit 1
	fi
	echo "deps.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
test/fixtures/deps.sh

# Go: the module pins its toolchain; any Go >= 1.21 fetches it through the
# module proxy.
if ! command -v go >/dev/null 2>&1; then
	if [[ -x /usr/local/go/bin/go ]]; then
		export PATH=/usr/local/go/bin:$PATH
	else
		echo "deps.sh: no Go toolchain found; install Go >= 1.21 (it fetches the pinned toolchain itself)" >&2
		exit 1
	fi
fi
go mod download
if ! command -v staticcheck >/dev/null 2>&1 && [[ ! -x "$(go env GOPATH)/bin/staticcheck" ]]; then
	go install honnef.co/go/tools/cmd/staticcheck@latest >&2 || echo "deps.sh: staticcheck unavailable; lint will skip it" >&2
fi
