# bootlace: make targets for people and CI. Every target that needs host
# packages installs them first (scripts/deps.sh, idempotent).

export PATH := /usr/local/go/bin:$(shell go env GOPATH 2>/dev/null)/bin:$(PATH)
# containers/image without cgo GPG, without the btrfs/zfs graph drivers and
# without the docker-daemon transport (no dockerd here).
export GOFLAGS := -buildvcs=false -tags=containers_image_openpgp,exclude_graphdriver_btrfs,exclude_graphdriver_zfs,containers_image_docker_daemon_stub

SUITE ?= bookworm
FIRMWARE ?= uefi
DISK ?= /var/tmp/bootlace-demo.raw

.PHONY: all build deps test unit lint fixtures demo registry boot bench docs clean

all: build

deps:
	@scripts/deps.sh

build:
	@mkdir -p bin
	go build -o bin/bootlace ./cmd/bootlace
	go build -o bin/bootlace-testbed ./cmd/bootlace-testbed

# The whole suite: unit, root-level integration (loop devices, loopback
# registry) and end-to-end tests that install fixture images and boot them
# in QEMU. Needs root.
test: deps lint
	go test -timeout 80m -count=1 ./...

unit: 
	go test -short -count=1 ./...

lint:
	@test -z "$$(gofmt -l cmd internal test)" || { gofmt -l cmd internal test; echo "gofmt: files above need formatting"; exit 1; }
	go vet ./...
	@if command -v staticcheck >/dev/null; then staticcheck ./...; fi

fixtures: deps
	test/fixtures/build.sh bookworm
	test/fixtures/build.sh trixie

# The main job on the built-in default: build the bookworm fixture, install
# it onto a disk image with to-disk --via-loopback, boot it in QEMU, report.
demo: deps build
	scripts/demo.sh $(SUITE) $(FIRMWARE) $(DISK)

registry: build
	bin/bootlace-testbed registry start --dir /var/tmp/bootlace-registry

boot: build
	bin/bootlace-testbed boot --firmware $(FIRMWARE) --marker BOOTLACE-BOOT-OK $(DISK)

bench: deps build
	scripts/bench.sh

# Man pages and shell completions, generated from the CLI and committed.
docs: build
	rm -rf docs/man && SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct) bin/bootlace man docs/man
	mkdir -p completions
	bin/bootlace completion bash > completions/bootlace.bash
	bin/bootlace completion zsh > completions/_bootlace
	bin/bootlace completion fish > completions/bootlace.fish

clean:
	rm -rf bin
