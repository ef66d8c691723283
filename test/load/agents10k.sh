#!/usr/bin/env bash
# agents10k.sh OUT runs the ten-thousand-agent measurement of
# docs/perf/agents-10k.md, one load after the other on this machine, and
# leaves each load's report in OUT/*.txt (text) and OUT/*.json:
#
#   arbor-10k   arbor server, 10,000 agents, 10 entries each, sync every 5s, 60s
#   arbor-1k    arbor server, 1,000 agents, the same
#   spire-1k    spire-server v1.15.3, 1,000 agents, the same
#   prof-10k    arbor's server in-process (test/load/profserver), 10,000
#               agents for 40s with CPU and heap profiles of the middle 20s
#               of the server (OUT/prof-10k/*.pprof) and of the generator
#
# $ARBOR (default: arbor on PATH), $LOAD (default: go run ./test/load),
# $PROFSERVER (default: go run ./test/load/profserver) and $SPIRE_BIN
# (default: the cached spire v1.15.3 bin) say what to run; $ONLY picks
# steps (spire-10k is one more), $DIV divides every agent count (a quick
# check of the script) and $DURATION replaces the 60s. Run it from the
# repository root on an otherwise idle machine:
#
#   test/load/agents10k.sh /tmp/agents10k
set -euo pipefail

out=${1:?usage: agents10k.sh OUT}
only=${ONLY:-arbor-10k arbor-1k spire-1k prof-10k}
div=${DIV:-1}
duration=${DURATION:-60s}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
read -r -a load <<<"${LOAD:-go run ./test/load}"
read -r -a profserver <<<"${PROFSERVER:-go run ./test/load/profserver}"
common=(--entries-per-agent 10 --interval 5s --x509=false --jwt 0 --progress 10s --gogc 400 --setup-concurrency 8)
# $EXTRA adds load flags (--per-agent-goroutines: the generator's other mode).
read -r -a extra <<<"${EXTRA:-}"
common+=("${extra[@]}")

# measure NAME KIND AGENTS PORT: one server, one load, its reports.
measure() {
	local name=$1 kind=$2 agents=$(($3 / div)) port=$4 dir=$out/$1
	rm -rf "$dir"
	"$here/serve.sh" "$kind" "$dir" "$port"
	local rc=0
	"${load[@]}" --admin-socket "$dir/api.sock" --server-addr "127.0.0.1:$port" --server-pid "$(cat "$dir/pid")" \
		--agents "$agents" --entries $((agents * 10)) --duration "$duration" --warmup-timeout 5m "${common[@]}" \
		>"$out/$name.txt" 2>"$out/$name.progress" || rc=$?
	kill "$(cat "$dir/pid")"
	echo "== $name (exit $rc)"
	cat "$out/$name.txt"
}

for step in $only; do
	case $step in
	arbor-10k) measure arbor-10k arbor 10000 18201 ;;
	arbor-1k) measure arbor-1k arbor 1000 18202 ;;
	spire-1k) measure spire-1k spire 1000 18203 ;;
	spire-10k) measure spire-10k spire 10000 18204 ;;
	prof-10k)
		dir=$out/prof-10k
		rm -rf "$dir" && mkdir -p "$dir"
		"${profserver[@]}" --dir "$dir" --listen 127.0.0.1:18205 >"$dir/server.log" 2>&1 &
		for _ in $(seq 1 300); do [ -S "$dir/api.sock" ] && [ -s "$dir/pid" ] && break; sleep 0.2; done
		pid=$(cat "$dir/pid")
		"${load[@]}" --admin-socket "$dir/api.sock" --server-addr 127.0.0.1:18205 --server-pid "$pid" \
			--agents $((10000 / div)) --entries $((100000 / div)) --duration 40s "${common[@]}" \
			--cpuprofile "$dir/gen-cpu.pprof" --memprofile "$dir/gen-heap.pprof" >"$out/prof-10k.txt" 2>"$out/prof-10k.progress" &
		lpid=$!
		until grep -q "^setup:" "$out/prof-10k.txt" 2>/dev/null; do
			kill -0 "$lpid" 2>/dev/null || break
			sleep 0.5
		done
		sleep 10
		kill -USR1 "$pid"
		sleep 20
		kill -USR2 "$pid"
		rc=0
		wait "$lpid" || rc=$?
		kill "$pid"
		wait "$pid" || true
		echo "== prof-10k (exit $rc)"
		cat "$out/prof-10k.txt"
		;;
	*)
		echo "agents10k.sh: unknown step $step" >&2
		exit 2
		;;
	esac
done
