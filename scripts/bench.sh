#!/bin/bash
# Install benchmark: bootlace against the peer pipeline a user would script with Debian's
# skopeo, umoci and ostree, and against the machine's limits, on a large bootable image served
# by the loopback registry. Methodology and numbers: docs/performance.md.
#
#   sudo scripts/bench.sh              (or: make bench)
#
# Environment:
#   BENCH_ROUNDS=3        rounds; each round runs every contender once, in turn
#   BENCH_SCALE=1         1: the bench image (test/fixtures/build-bench.sh); 2: twice as large
#   BENCH_CONTENDERS=...  subset/order of: peer bootlace decompress decompress-gzip tar-x
#   BENCH_DIR=/var/tmp/bootlace-bench   results (results.json, results.txt, logs/)
#   BENCH_PROFILE=1       CPU profile of bootlace's last run: BENCH_DIR/bootlace.cpu.pprof and
#                         the `go tool pprof -top` of it in BENCH_DIR/pprof-top.txt
#   BENCH_FS_SIZE=24G     size of each target's sparse backing file (times BENCH_SCALE)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

rounds=${BENCH_ROUNDS:-3}
scale=${BENCH_SCALE:-1}
read -r -a contenders <<<"${BENCH_CONTENDERS:-peer bootlace decompress decompress-gzip tar-x}"
out=${BENCH_DIR:-/var/tmp/bootlace-bench}
profile=${BENCH_PROFILE:-0}
fs_size=${BENCH_FS_SIZE:-24G}

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}
((EUID == 0)) || die "needs root (loop devices, mounts, drop_caches)"
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer, not '$rounds'"
[[ $scale == 1 || $scale == 2 ]] || die "BENCH_SCALE must be 1 or 2, not '$scale'"
for c in "${contenders[@]}"; do
	case $c in peer | bootlace | decompress | decompress-gzip | tar-x) ;; *) die "unknown contender '$c' in BENCH_CONTENDERS" ;; esac
done
for c in skopeo umoci ostree pigz gzip zstd jq mkfs.ext4 losetup /usr/bin/time; do
	command -v "$c" >/dev/null || die "$c missing; run scripts/deps.sh"
done
[[ -x bin/bootlace && -x bin/bootlace-testbed ]] || die "bin/bootlace missing; run make build (or make bench)"
if [[ $fs_size =~ ^([0-9]+)G$ ]]; then
	fs_size=$((BASH_REMATCH[1] * scale))G
fi

mkdir -p "$out/logs"
run=$(mktemp -d "$out/run.XXXXXX")
mnt=$run/mnt
mkdir "$mnt"
loopdev="" registry_pid=""

# cleanup: unmount and detach what this run made, stop the registry, drop the scratch files.
# Runs on every exit, Ctrl-C included; each step is safe to repeat. A trap can fire while a
# contender's stderr goes to its log; fd 3 keeps the caller's.
exec 3>&2
cleanup() {
	local rc=$? m
	exec 2>&3
	set +e
	trap '' INT TERM
	for m in $(awk -v d="$run" 'index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m"
	done
	[[ -n $loopdev ]] && losetup -d "$loopdev" 2>/dev/null
	if [[ -n $registry_pid ]]; then
		kill -TERM "$registry_pid" 2>/dev/null
		wait "$registry_pid" 2>/dev/null
	fi
	# Nothing is mounted below $run any more (checked above); --one-file-system all the same.
	if ! awk -v d="$run" 'index($5, d "/") == 1 { f = 1 } END { exit !f }' /proc/self/mountinfo; then
		rm -rf --one-file-system "$run"
	else
		log "still mounted below $run; left in place"
	fi
	((rc == 0)) || log "failed or interrupted (exit $rc); cleaned up"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the image and the registry --------------------------------------------------------
log "bench image x$scale (built and cached by test/fixtures/build-bench.sh on first use)"
image=$(test/fixtures/build-bench.sh --scale "$scale" | tail -n 1)
manifest=$image/blobs/sha256/$(jq -r '.manifests[0].digest' "$image/index.json" | cut -d: -f2)
mapfile -t layers < <(jq -r '.layers[] | "\(.mediaType) \(.digest)"' "$manifest")
compressed_bytes=$(jq '[.layers[].size] | add' "$manifest")
version=$(jq -r '.annotations["org.opencontainers.image.version"]' "$manifest")

bin/bootlace-testbed registry start --dir "$run/registry" >"$run/registry.out" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
	grep -q '^running' "$run/registry.out" && break
	kill -0 "$registry_pid" 2>/dev/null || die "registry did not start: $(cat "$run/registry.out")"
	sleep 0.2
done
reg_field() { sed -n "s/^$1: *//p" "$run/registry.out"; }
addr=$(reg_field address) certdir=$(reg_field "cert dir") authfile=$(reg_field "auth file")
[[ -n $addr && -n $certdir && -n $authfile ]] || die "registry output not understood: $(cat "$run/registry.out")"
ref=docker://$addr/bench/os:x$scale
log "pushing to $ref"
bin/bootlace-testbed registry push --dir "$run/registry" "oci:$image:latest" "bench/os:x$scale" >/dev/null

# --- targets and measurement -----------------------------------------------------------
# new_target: a fresh ext4 on a fresh sparse file, mounted at $mnt. noinit_itable keeps the
# kernel's lazy inode-table zeroing from running in the background of the measurement.
new_target() {
	rm -f "$run/target.img"
	truncate -s "$fs_size" "$run/target.img"
	mkfs.ext4 -q -F "$run/target.img"
	loopdev=$(losetup -f --show "$run/target.img")
	mount -o noinit_itable "$loopdev" "$mnt"
}
drop_target() {
	umount "$mnt"
	losetup -d "$loopdev"
	loopdev=""
	rm -f "$run/target.img"
}
# Every contender starts with the same cold page cache: the blobs, the registry's storage
# and the tools are read from disk again.
cold() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# timed NAME CMD...: run CMD under GNU time; appends "NAME wall maxrss_kib user sys" to $steps.
timed() {
	local name=$1 tf=$run/time.out
	shift
	if ! /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@"; then
		log "$name failed: $* (log: $cur_log)"
		return 1
	fi
	printf '%s %s\n' "$name" "$(tail -n 1 "$tf")" >>"$steps"
}

contender_peer() {
	local b=$mnt/.peer
	mkdir "$b"
	timed skopeo skopeo copy -q --src-cert-dir "$certdir" --src-authfile "$authfile" "$ref" "oci:$b/oci:bench" &&
		timed umoci umoci unpack --image "$b/oci:bench" "$b/bundle" &&
		# ostree wants /usr/etc; bootc images ship /etc (bootlace and ostree-ext move it).
		timed ostree-init sh -c 'mv "$1/etc" "$1/usr/etc" && ostree admin init-fs "$2" && ostree admin os-init --sysroot="$2" default' \
			sh "$b/bundle/rootfs" "$mnt" &&
		timed ostree-commit ostree commit --repo="$mnt/ostree/repo" --branch=bench/os --tree=dir="$b/bundle/rootfs" \
			--subject="$version" --add-metadata-string=version="$version" &&
		timed ostree-deploy ostree admin deploy --sysroot="$mnt" --os=default bench/os &&
		timed sync sync -f "$mnt"
}

contender_bootlace() {
	local env=()
	[[ -n ${profile_file:-} ]] && env=(env "BOOTLACE_CPUPROFILE=$profile_file")
	timed bootlace "${env[@]}" bin/bootlace install to-filesystem --source-imgref "$ref" \
		--cert-dir "$certdir" --authfile "$authfile" --bound-images skip --progress none --json "$mnt" >"$cur_log.json" &&
		timed sync sync -f "$mnt"
}

# The limits run generated scripts, one command per layer in order, reading the blobs from the
# image's OCI layout (the files the registry was fed). gzip layers decode with pigz (or gzip
# for decompress-gzip), zstd layers with zstd.
# limit_script GZIPTOOL SINK: a script decoding every layer into SINK (a shell fragment).
limit_script() {
	local l mt d
	echo 'set -e -o pipefail'
	for l in "${layers[@]}"; do
		mt=${l% *}
		case $mt in
		*+gzip) d="$1 -dc" ;;
		*+zstd) d="zstd -dc" ;;
		*.tar) d=cat ;;
		*) die "unsupported layer type $mt" ;;
		esac
		printf '%s %q %s\n' "$d" "$image/blobs/sha256/${l#* sha256:}" "$2"
	done
}
limit_script pigz '>/dev/null' >"$run/decompress.sh"
limit_script gzip '>/dev/null' >"$run/decompress-gzip.sh"
# tar -x as root with owners and xattrs; whiteout files are extracted as plain files (the image
# has only a handful), so this is the cost of writing the tree and nothing else.
limit_script pigz "| tar -C $(printf %q "$mnt") -x --numeric-owner --xattrs --xattrs-include='*'" >"$run/tar-x.sh"

contender_decompress() { timed decompress bash "$run/decompress.sh"; }
contender_decompress-gzip() { timed decompress-gzip bash "$run/decompress-gzip.sh"; }
contender_tar-x() {
	timed tar-x bash "$run/tar-x.sh" && timed sync sync -f "$mnt" || return 1
	if [[ ! -s $out/logs/tree-stats ]]; then
		# Once: the size of the unpacked image, outside the measurement.
		printf '%s %s\n' "$(find "$mnt" -xdev ! -type d ! -path "$mnt/lost+found*" | wc -l)" \
			"$(du -sxb --exclude=lost+found "$mnt" | cut -f1)" >"$out/logs/tree-stats"
	fi
}

# --- the rounds --------------------------------------------------------------------------
results=$out/runs.x$scale.jsonl
: >"$results"
rm -f "$out/logs/tree-stats"
((profile == 1)) && rm -f "$out/bootlace.cpu.pprof" "$out/pprof-top.txt"
log "image $version: ${#layers[@]} layers, $((compressed_bytes >> 20)) MiB compressed; $rounds round(s) of: ${contenders[*]}"
for ((r = 1; r <= rounds; r++)); do
	for c in "${contenders[@]}"; do
		cur_log=$out/logs/$c-x$scale-r$r
		steps=$run/steps
		: >"$steps"
		profile_file=""
		[[ $c == bootlace && $profile == 1 && $r == "$rounds" ]] && profile_file=$out/bootlace.cpu.pprof
		new_target
		cold
		start=$(date +%s.%N)
		"contender_$c" >"$cur_log.out" 2>"$cur_log.err" || die "$c failed in round $r; see $cur_log.err"
		end=$(date +%s.%N)
		phases='{}'
		[[ -s $cur_log.json ]] && phases=$(jq -c '."phase-durations" // {}' "$cur_log.json")
		jq -nc --arg c "$c" --argjson r "$r" --arg t0 "$start" --arg t1 "$end" --argjson phases "$phases" \
			--rawfile steps "$steps" '
			($steps | split("\n") | map(select(length > 0) | split(" ")
				| {name: .[0], wall: (.[1]|tonumber), rss_kib: (.[2]|tonumber), user: (.[3]|tonumber), sys: (.[4]|tonumber)})) as $s
			| {contender: $c, round: $r, wall: (($t1|tonumber) - ($t0|tonumber)),
			   rss_mib: (($s | map(.rss_kib) | max) / 1024), user: ($s | map(.user) | add), sys: ($s | map(.sys) | add),
			   steps: $s, phases: ($phases | map_values(
				if test("ms$") then (.[:-2]|tonumber)/1000 elif test("µs$|us$") then 0 elif test("m[0-9.]+s$") then
				  ((split("m")[0]|tonumber)*60 + (split("m")[1][:-1]|tonumber)) else (.[:-1]|tonumber) end))}' >>"$results"
		log "round $r $c: $(tail -n 1 "$results" | jq -r '"\(.wall*10|round/10) s, peak RSS \(.rss_mib|round) MiB"')"
		drop_target
	done
done

# --- summary -----------------------------------------------------------------------------
read -r tree_files tree_bytes <"$out/logs/tree-stats" 2>/dev/null || tree_files=null tree_bytes=null
jq -s --arg version "$version" --argjson scale "$scale" --argjson rounds "$rounds" --argjson layers "${#layers[@]}" \
	--argjson compressed "$compressed_bytes" --argjson files "${tree_files:-null}" --argjson bytes "${tree_bytes:-null}" \
	--arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg kernel "$(uname -r)" --argjson cpus "$(nproc)" \
	--arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --arg commit "$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)" '
	def median: sort | if length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
	def stats(f): map(f) | {median: median, min: min, max: max};
	["resolve", "storage", "fetch", "assemble", "inspect", "deploy", "bootloader", "finalize"] as $order
	| . as $all
	| (group_by(.contender) | map(. as $runs | {key: .[0].contender, value: {
		wall: stats(.wall), rss_mib: (map(.rss_mib) | max), user: stats(.user), sys: stats(.sys),
		steps: ([.[0].steps[].name] | map(. as $n | {key: $n, value: ($runs | map(.steps[] | select(.name == $n) | .wall) | median)}) | from_entries),
		phases: ([.[].phases | keys[]] | unique | sort_by(. as $k | $order | index($k) // 99) | map(. as $n | {key: $n, value: ($runs | map(.phases[$n] // 0) | median)}) | from_entries)
	  }}) | from_entries) as $s
	| ([$s.decompress.wall.median, $s["decompress-gzip"].wall.median] | map(select(. != null)) | min) as $dec
	| {date: $date, commit: $commit, host: {kernel: $kernel, cpus: $cpus, load_at_end: $load},
	   image: {version: $version, scale: $scale, layers: $layers, compressed_bytes: $compressed, files: $files, unpacked_bytes: $bytes},
	   rounds: $rounds, summary: $s,
	   ratios: {
		"bootlace/peer": (if $s.bootlace and $s.peer then $s.bootlace.wall.median / $s.peer.wall.median else null end),
		"bootlace/tar-x": (if $s.bootlace and $s["tar-x"] then $s.bootlace.wall.median / $s["tar-x"].wall.median else null end),
		"bootlace/decompress": (if $s.bootlace and $dec then $s.bootlace.wall.median / $dec else null end)},
	   runs: $all}' "$results" >"$out/results.x$scale.json"
cp "$out/results.x$scale.json" "$out/results.json"

{
	jq -r '"image \(.image.version): \(.image.layers) layers, \(.image.compressed_bytes/1048576|round) MiB compressed, " +
		"\(if .image.unpacked_bytes then (.image.unpacked_bytes/1048576|round|tostring) + " MiB / " + (.image.files|tostring) + " files unpacked" else "unpacked size not measured (no tar-x run)" end); " +
		"\(.rounds) round(s), \(.host.cpus) CPUs, load \(.host.load_at_end) at the end"' "$out/results.json"
	echo
	printf '%-16s %9s %9s %9s %9s %8s %8s\n' contender "median s" "min s" "max s" "peak MiB" "user s" "sys s"
	jq -r '.summary | to_entries[] | [.key, (.value.wall.median, .value.wall.min, .value.wall.max, .value.rss_mib, .value.user.median, .value.sys.median | . * 10 | round / 10)] | @tsv' \
		"$out/results.json" | while IFS=$'\t' read -r n m lo hi rss u s; do
		printf '%-16s %9s %9s %9s %9s %8s %8s\n' "$n" "$m" "$lo" "$hi" "$rss" "$u" "$s"
	done
	echo
	jq -r '.ratios | to_entries[] | select(.value != null) | "ratio \(.key) = \(.value * 100 | round / 100)"' "$out/results.json"
	jq -r '.summary.peer.steps // empty | "peer steps (median s): " + (to_entries | map("\(.key) \(.value*10|round/10)") | join(", "))' "$out/results.json"
	jq -r '.summary.bootlace.phases // empty | "bootlace phases (median s): " + (to_entries | map("\(.key) \(.value*10|round/10)") | join(", "))' "$out/results.json"
} | tee "$out/results.x$scale.txt"
cp "$out/results.x$scale.txt" "$out/results.txt"

if ((profile == 1)) && [[ -s $out/bootlace.cpu.pprof ]]; then
	go tool pprof -top -nodecount=40 bin/bootlace "$out/bootlace.cpu.pprof" >"$out/pprof-top.txt" 2>&1 ||
		log "go tool pprof failed; see $out/pprof-top.txt"
	log "CPU profile: $out/bootlace.cpu.pprof; top: $out/pprof-top.txt"
fi
log "results: $out/results.json (and results.x$scale.json), $out/results.txt; logs in $out/logs"
