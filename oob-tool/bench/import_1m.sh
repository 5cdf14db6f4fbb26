#!/usr/bin/env bash
# Benchmark: import N (default 1,000,000) ES256 entries into a fresh idprovd
# through idprov-oob (validation, chunked upload, one-transaction commit).
# Reports wall time and peak memory (max RSS) of the tool and the daemon.
#
#   oob-tool/bench/import_1m.sh [N] [WORKDIR]
#
# The input file is generated once per N and reused (generation time is
# reported separately). Release builds; the daemon listens on 127.0.0.1 only
# and does not advertise (--no-mdns).
set -euo pipefail
N=${1:-1000000}
WORK=${2:-/tmp/idprov-oob-bench}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$WORK"
cd "$ROOT"
# IDPROV_BIN: a directory with release builds of idprovd, idprov-oob and
# examples/bench_file (skips the build).
if [ -z "${IDPROV_BIN:-}" ]; then
  cargo build --release -q -p idprovd -p idprov-oob --bins --example bench_file
fi
BIN=${IDPROV_BIN:-$ROOT/target/release}
FILE=$WORK/bench-$N.csv
if [ ! -s "$FILE" ]; then
  /usr/bin/time -f "generate: %e s wall, %M KiB max RSS" \
    "$BIN/examples/bench_file" "$N" "$FILE.tmp"
  mv "$FILE.tmp" "$FILE"
fi
echo "input: $FILE ($(du -h "$FILE" | cut -f1))"

DATA=$(mktemp -d "$WORK/data.XXXX")
"$BIN/idprovd" --data-dir "$DATA" --listen 127.0.0.1:0 --no-mdns --log-format text --log-level warn \
  >"$DATA/daemon.out" 2>&1 &
DPID=$!
trap 'kill $DPID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$DATA/admin.profile" ] && break; sleep 0.1; done
[ -s "$DATA/admin.profile" ] || { echo "daemon did not start"; cat "$DATA/daemon.out"; exit 1; }

/usr/bin/time -f "tool: %e s wall, %M KiB max RSS, %U s user, %S s sys" \
  "$BIN/idprov-oob" --profile "$DATA/admin.profile" import --timings --show 3 "$FILE"
echo "daemon: $(grep VmHWM /proc/$DPID/status | tr -s ' ') peak RSS; store file $(du -h "$DATA/idprov.redb" | cut -f1)"
echo "daemon CPU: $(awk '{printf "%.1f s user, %.1f s sys", $14/100, $15/100}' /proc/$DPID/stat)"

# The same file again: idempotent, nothing changes.
/usr/bin/time -f "re-import (no change): %e s wall, %M KiB max RSS" \
  "$BIN/idprov-oob" --profile "$DATA/admin.profile" import --timings --show 3 "$FILE"
echo "daemon after re-import: $(grep VmHWM /proc/$DPID/status | tr -s ' ') peak RSS"
kill $DPID
wait $DPID 2>/dev/null || true
rm -rf "$DATA"
