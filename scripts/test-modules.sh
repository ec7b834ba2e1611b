#!/usr/bin/env bash
# test-modules.sh runs `go test ARGS...` over every Go module of the
# repository (the root and the nested ones), for `make test` and
# `make test-short`.
#
# The modules are one workspace (go.work), so a single `go test` takes them
# all: packages of every module are built and tested side by side, and the
# cores stay busy until the last package ends (one module after another, the
# long tail of each module left a core idle). `go test` goes on past a
# failing package; the failing packages are listed at the end and the script
# exits 1.
#
# Modules named in PERIMETER_TEST_BESIDE (default: ./providers/kubernetes,
# whose tests spend most of their time waiting for a cluster that runs in
# its own processes) start first in a `go test` of their own, beside the
# rest; their output is printed whole when they end, so no two runs' lines
# interleave. Set PERIMETER_TEST_BESIDE= (empty) to take every module in the
# one `go test`.
set -uo pipefail
cd "$(dirname "$0")/.."

beside=${PERIMETER_TEST_BESIDE-./providers/kubernetes}
mapfile -t modules < <(find . -name go.mod -not -path './.git/*' -printf '%h\n' | sort)

is_beside() {
	local b
	for b in $beside; do [ "$b" = "$1" ] && return 0; done
	return 1
}

declare -A pids logs
tmp=$(mktemp -d)
# Whatever ends this script ends the runs still going beside it.
trap 'for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
patterns=()
for m in "${modules[@]}"; do
	if ! is_beside "$m"; then
		patterns+=("$m/...")
		continue
	fi
	logs[$m]=$tmp/$(echo "$m" | tr / _).log
	# Own process group, so the trap can end its go test and test binaries.
	setsid bash -c 'cd "$1" && shift && exec go test "$@" ./...' _ "$m" "$@" >"${logs[$m]}" 2>&1 &
	pids[$m]=$!
	echo "== go test $* $m/... (beside the others; output when it ends)"
done

failed=""
if [ ${#patterns[@]} -gt 0 ]; then
	echo "== go test $* ${patterns[*]}"
	go test "$@" "${patterns[@]}" 2>&1 | tee "$tmp/all.log"
	rc=${PIPESTATUS[0]}
	# `go test` prints "FAIL<TAB>package ..." for each failing package (a
	# failing test, a build failure, a timeout); it exits 1 for any.
	pkgs=$(sed -n 's/^FAIL\t\([^ \t]*\).*/\1/p' "$tmp/all.log" | sort -u | tr '\n' ' ')
	if [ "$rc" != 0 ]; then
		failed="$failed ${pkgs:-(go test exited $rc)}"
	fi
fi
for m in "${!pids[@]}"; do
	wait "${pids[$m]}"
	rc=$?
	unset "pids[$m]"
	echo "== go test $* $m/... (ran beside the others)"
	cat "${logs[$m]}"
	if [ "$rc" != 0 ]; then
		pkgs=$(sed -n 's/^FAIL\t\([^ \t]*\).*/\1/p' "${logs[$m]}" | sort -u | tr '\n' ' ')
		failed="$failed ${pkgs:-$m (go test exited $rc)}"
	fi
done
if [ -n "$failed" ]; then
	echo "== FAILED:$failed"
	exit 1
fi
echo "== all modules passed"
