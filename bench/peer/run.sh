#!/usr/bin/env bash
# Runs a peer Zoom connector, Airbyte's source-zoom 1.1.22 (from PyPI), against `ferry sandbox`,
# then reads the same simulated world with `ferry read`, and prints both record counts and
# the requests the simulator served to the peer, by rate-limit category and endpoint.
#
# Optional and by hand: not part of `cargo test` or CI. Needs Python 3.10 (3.11 crashes on
# import of that package's CDK) given as PYTHON=... or found as python3.10 or through pyenv,
# and PyPI for the first install only; offline after that. Everything goes under target/peer/.
#
#   bench/peer/run.sh            # 120 meetings, as `ferry sandbox` by default
#   MEETINGS=2000 bench/peer/run.sh
#   LATENCY_MS=100 bench/peer/run.sh   # each answer to the peer 100 ms late, as over a network
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
work="$root/target/peer"
mkdir -p "$work"
meetings=${MEETINGS:-120}
latency_ms=${LATENCY_MS:-0}

# --- Python 3.10 and the peer ------------------------------------------------------------
py=${PYTHON:-}
if [ -z "$py" ] && command -v python3.10 >/dev/null 2>&1 && python3.10 -c '' 2>/dev/null; then
  py=python3.10
fi
if [ -z "$py" ] && command -v pyenv >/dev/null 2>&1; then
  v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.|$)' | tail -1 || true)
  [ -n "$v" ] && py="$(pyenv root)/versions/$v/bin/python3.10"
fi
if [ -z "$py" ] || ! "$py" -c 'import sys; assert sys.version_info[:2] in ((3, 9), (3, 10))' 2>/dev/null; then
  echo "error: needs Python 3.9 or 3.10 (set PYTHON=/path/to/python3.10)" >&2
  exit 2
fi
venv="$work/airbyte-venv"
if [ ! -x "$venv/bin/source-zoom" ]; then
  echo "Installing airbyte-source-zoom 1.1.22 into $venv …" >&2
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check airbyte-source-zoom==1.1.22
fi
# Its API base is hard-coded: let the config override it (the one `url_base` in the manifest).
manifest=$("$venv/bin/python" -c 'import os, source_zoom; print(os.path.join(os.path.dirname(source_zoom.__file__), "manifest.yaml"))')
if ! grep -q "config.get('url_base'" "$manifest"; then
  sed -i "s|url_base: \"https://api.zoom.us/v2\"|url_base: \"{{ config.get('url_base', 'https://api.zoom.us/v2') }}\"|" "$manifest"
fi

# --- ferry and its sandbox ---------------------------------------------------------------
ferry=${FERRY:-}
if [ -z "$ferry" ]; then
  (cd "$root" && cargo build --quiet --release --bin ferry)
  ferry="$root/target/release/ferry"
fi

sandbox_pid=
start_sandbox() { # $1: output file, $2: latency added to each Zoom answer (ms)
  rm -rf "$work/sandbox"
  "$ferry" sandbox --dir "$work/sandbox" --meetings "$meetings" --zoom-latency-ms "$2" >"$1" 2>&1 &
  sandbox_pid=$!
  for _ in $(seq 1 100); do
    grep -qs '^Press Ctrl-C' "$1" && return 0
    sleep 0.1
  done
  echo "error: ferry sandbox did not start:" >&2
  cat "$1" >&2
  exit 1
}
stop_sandbox() {
  if [ -n "$sandbox_pid" ]; then
    kill -TERM "$sandbox_pid" 2>/dev/null || true
    wait "$sandbox_pid" 2>/dev/null || true
    sandbox_pid=
  fi
}
trap stop_sandbox EXIT
field() { sed -n "s/^ *$1: *//p" "$2" | head -1; }

# --- 1. The peer ---------------------------------------------------------------------------
start_sandbox "$work/sandbox-airbyte.out" "$latency_ms"
out="$work/sandbox-airbyte.out"
base=$(field "Zoom simulator" "$out")
cat >"$work/airbyte-config.json" <<EOF
{"account_id": "$(field account_id "$out")", "client_id": "$(field client_id "$out")",
 "client_secret": "$(field client_secret "$out")", "authorization_endpoint": "$(field "token URL" "$out")",
 "url_base": "$base"}
EOF
"$venv/bin/source-zoom" discover --config "$work/airbyte-config.json" >"$work/airbyte-discover.jsonl"
"$venv/bin/python" - "$work" <<'EOF'
import json, sys
work = sys.argv[1]
for line in open(f"{work}/airbyte-discover.jsonl"):
    msg = json.loads(line)
    if msg.get("type") == "CATALOG":
        streams = [{"stream": s, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}
                   for s in msg["catalog"]["streams"]]
        json.dump({"streams": streams}, open(f"{work}/airbyte-catalog.json", "w"))
EOF
echo "Running airbyte-source-zoom 1.1.22 (all 19 streams) against $base …" >&2
t0=$(date +%s.%N)
"$venv/bin/source-zoom" read --config "$work/airbyte-config.json" --catalog "$work/airbyte-catalog.json" \
  >"$work/airbyte-read.jsonl" 2>"$work/airbyte-read.err" || echo "(source-zoom exited $?)" >&2
t1=$(date +%s.%N)
stop_sandbox

# --- 2. ferry over the same world -----------------------------------------------------------
start_sandbox "$work/sandbox-ferry.out" 0
# `ferry read` takes ${NAME} secrets: the sandbox's file secrets, given as variables.
sed -e 's|\${file:secrets/zoom_client_secret}|${FERRY_PEER_ZOOM_SECRET}|' \
    -e 's|\${file:secrets/zoom_webhook_secret}|${FERRY_PEER_UNUSED}|' \
    -e 's|\${file:secrets/salesforce_client_secret}|${FERRY_PEER_UNUSED}|' \
    "$work/sandbox/ferry.yaml" >"$work/sandbox/ferry-read.yaml"
export FERRY_PEER_ZOOM_SECRET
FERRY_PEER_ZOOM_SECRET=$(cat "$work/sandbox/secrets/zoom_client_secret")
export FERRY_PEER_UNUSED=unused
days=$(sed -n 's/.* over \([0-9]*\) days.*/\1/p' "$work/sandbox-ferry.out" | head -1)
since=$(date -u -d "$((days + 1)) days ago" +%Y-%m-%dT00:00:00Z)
read_stream() { "$ferry" read --config "$work/sandbox/ferry-read.yaml" "$@"; }
f0=$(date +%s.%N)
read_stream zoom.users >"$work/ferry-users.jsonl"
read_stream zoom.webinars --param user_id=all >"$work/ferry-webinars.jsonl"
read_stream zoom.past_meetings --param user_id=all --since "$since" >"$work/ferry-past_meetings.jsonl"
: >"$work/ferry-past_meeting_participants.jsonl"
for uuid in $("$venv/bin/python" -c 'import json,sys; [print(json.loads(l)["uuid"]) for l in open(sys.argv[1])]' "$work/ferry-past_meetings.jsonl"); do
  read_stream zoom.past_meeting_participants --param "meeting_uuid=$uuid" >>"$work/ferry-past_meeting_participants.jsonl"
done
for s in webinar_registrants webinar_panelists webinar_absentees past_webinar_participants; do
  : >"$work/ferry-$s.jsonl"
done
while read -r id uuid; do
  read_stream zoom.webinar_registrants --param "webinar_id=$id" >>"$work/ferry-webinar_registrants.jsonl"
  read_stream zoom.webinar_panelists --param "webinar_id=$id" >>"$work/ferry-webinar_panelists.jsonl"
  read_stream zoom.webinar_absentees --param "webinar_uuid=$uuid" >>"$work/ferry-webinar_absentees.jsonl"
  read_stream zoom.past_webinar_participants --param "webinar_uuid=$uuid" >>"$work/ferry-past_webinar_participants.jsonl"
done < <("$venv/bin/python" -c 'import json,sys; [print(json.loads(l)["id"], json.loads(l)["uuid"]) for l in open(sys.argv[1])]' "$work/ferry-webinars.jsonl")
f1=$(date +%s.%N)
stop_sandbox

# --- 3. Report -------------------------------------------------------------------------------
"$venv/bin/python" - "$work" "$t0" "$t1" "$f0" "$f1" <<'EOF'
import collections, json, sys
work, t0, t1, f0, f1 = sys.argv[1], *map(float, sys.argv[2:])
records = collections.Counter()
errors = []
for line in open(f"{work}/airbyte-read.jsonl"):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("type") == "RECORD":
        records[msg["record"]["stream"]] += 1
    elif msg.get("type") == "TRACE" and msg["trace"].get("type") == "ERROR":
        errors.append(msg["trace"]["error"].get("message", ""))
def ferry(name):
    return sum(1 for _ in open(f"{work}/ferry-{name}.jsonl"))
pairs = [
    ("users", "users"), ("meetings", None), ("report_meetings", "past_meetings"),
    ("report_meeting_participants", "past_meeting_participants"), ("webinars", "webinars"),
    ("webinar_panelists", "webinar_panelists"), ("webinar_registrants", "webinar_registrants"),
    ("webinar_absentees", "webinar_absentees"), ("report_webinars", None),
    ("report_webinar_participants", "past_webinar_participants"),
]
print(f"\nairbyte-source-zoom 1.1.22: {sum(records.values())} records in {t1 - t0:.1f} s")
print(f"ferry read:                 {sum(ferry(f) for _, f in pairs if f)} records in {f1 - f0:.1f} s "
      "(one process per stream and partition)\n")
print(f"{'Airbyte stream':<32} {'records':>8}   {'ferry stream':<32} {'records':>8}")
shown = set()
for a, f in pairs:
    shown.add(a)
    print(f"{a:<32} {records.get(a, 0):>8}   {('zoom.' + f) if f else '—':<32} {ferry(f) if f else '':>8}")
catalog = [s["stream"]["name"] for s in json.load(open(f"{work}/airbyte-catalog.json"))["streams"]]
for a in sorted(set(catalog) | set(records)):
    if a not in shown:
        print(f"{a:<32} {records.get(a, 0):>8}")
for e in errors:
    print(f"Airbyte error: {e}")
EOF
echo
echo "What the simulator served to the peer:"
sed -n '/^Zoom simulator served/,$p' "$work/sandbox-airbyte.out"
echo
echo "What the simulator served to \`ferry read\` (one process, so one token, per stream and partition):"
sed -n '/^Zoom simulator served/,/^  endpoint/p' "$work/sandbox-ferry.out" | sed '$d'
