#!/usr/bin/env bash
# Runs peer Zoom connectors from PyPI against `ferry sandbox`: Airbyte's source-zoom 1.1.22 and
# Singer's tap-zoom 2.1.1 (singer-io), each on a fresh sandbox over the same seeded world; then
# reads that world with `ferry read`. Prints the record counts side by side and the requests
# the simulator served to each, by rate-limit category and endpoint.
#
# Optional and by hand: not part of `cargo test` or CI. Airbyte needs Python 3.9 or 3.10 (3.11
# crashes on import of its CDK), given as PYTHON=... or found as python3.10 or through pyenv;
# tap-zoom runs on python3 (SINGER_PYTHON=...). PyPI is needed for the first install only;
# offline after that. Everything goes under target/peer/. PEERS="airbyte" runs one.
#
#   bench/peer/run.sh            # 120 meetings, as `ferry sandbox` by default
#   MEETINGS=2000 bench/peer/run.sh
#   LATENCY_MS=100 bench/peer/run.sh   # each answer to the peer 100 ms late, as over a network
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
work="$root/target/peer"
mkdir -p "$work"
meetings=${MEETINGS:-120}
peers=${PEERS:-airbyte singer}
latency_ms=${LATENCY_MS:-0}

# --- Python and the peers ----------------------------------------------------------------
py=${PYTHON:-}
if [ -z "$py" ] && command -v python3.10 >/dev/null 2>&1 && python3.10 -c '' 2>/dev/null; then
  py=python3.10
fi
if [ -z "$py" ] && command -v pyenv >/dev/null 2>&1; then
  v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.|$)' | tail -1 || true)
  [ -n "$v" ] && py="$(pyenv root)/versions/$v/bin/python3.10"
fi
if [[ " $peers " == *" airbyte "* ]] &&
  { [ -z "$py" ] || ! "$py" -c 'import sys; assert sys.version_info[:2] in ((3, 9), (3, 10))' 2>/dev/null; }; then
  echo "error: needs Python 3.9 or 3.10 (set PYTHON=/path/to/python3.10)" >&2
  exit 2
fi
venv="$work/airbyte-venv"
if [[ " $peers " == *" airbyte "* ]]; then
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
fi

singer_venv="$work/singer-venv"
if [[ " $peers " == *" singer "* ]] && [ ! -x "$singer_venv/bin/tap-zoom" ]; then
  echo "Installing tap-zoom 2.1.1 into $singer_venv …" >&2
  "${SINGER_PYTHON:-python3}" -m venv "$singer_venv"
  "$singer_venv/bin/pip" install --quiet --disable-pip-version-check tap-zoom==2.1.1
fi
# tap-zoom's base URL is a class attribute and its token grant is a refresh token at zoom.us:
# run it in its --dev mode (a given access token) with the base URL set before it starts.
cat >"$work/singer-run.py" <<'EOF_PY'
import sys
import tap_zoom.client
tap_zoom.client.ZoomClient.BASE_URL = sys.argv.pop(1).rstrip("/") + "/"
import tap_zoom
tap_zoom.main()
EOF_PY

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

# --- 1. The peers --------------------------------------------------------------------------
: >"$work/timings.txt"
if [[ " $peers " == *" airbyte "* ]]; then
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
echo "airbyte $t0 $t1" >>"$work/timings.txt"
stop_sandbox
fi

if [[ " $peers " == *" singer "* ]]; then
start_sandbox "$work/sandbox-singer.out" "$latency_ms"
out="$work/sandbox-singer.out"
base=$(field "Zoom simulator" "$out")
token=$("$singer_venv/bin/python" - "$(field "token URL" "$out")" "$(field account_id "$out")" \
  "$(field client_id "$out")" "$(field client_secret "$out")" <<'EOF_PY'
import base64, json, sys, urllib.request
url, account, cid, secret = sys.argv[1:]
req = urllib.request.Request(f"{url}?grant_type=account_credentials&account_id={account}", method="POST")
req.add_header("Authorization", "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode())
print(json.load(urllib.request.urlopen(req))["access_token"])
EOF_PY
)
cat >"$work/singer-config.json" <<EOF_JSON
{"client_id": "$(field client_id "$out")", "client_secret": "$(field client_secret "$out")",
 "refresh_token": "unused in --dev mode", "access_token": "$token"}
EOF_JSON
"$singer_venv/bin/python" "$work/singer-run.py" "$base" --config "$work/singer-config.json" --dev --discover \
  >"$work/singer-catalog.json" 2>"$work/singer-discover.err"
"$singer_venv/bin/python" - "$work" <<'EOF_PY'
import json, sys
work = sys.argv[1]
catalog = json.load(open(f"{work}/singer-catalog.json"))
for stream in catalog["streams"]:
    for m in stream["metadata"]:
        if m["breadcrumb"] == []:
            m["metadata"]["selected"] = True
json.dump(catalog, open(f"{work}/singer-catalog.json", "w"))
EOF_PY
echo "Running tap-zoom 2.1.1 (all streams) against $base …" >&2
s0=$(date +%s.%N)
"$singer_venv/bin/python" "$work/singer-run.py" "$base" --config "$work/singer-config.json" --dev \
  --catalog "$work/singer-catalog.json" >"$work/singer-read.jsonl" 2>"$work/singer-read.err" \
  || echo "(tap-zoom exited $?)" >&2
s1=$(date +%s.%N)
echo "singer $s0 $s1" >>"$work/timings.txt"
stop_sandbox
fi

# --- 2. ferry over the same world -----------------------------------------------------------
start_sandbox "$work/sandbox-ferry.out" 0
days=$(sed -n 's/.* over \([0-9]*\) days.*/\1/p' "$work/sandbox-ferry.out" | head -1)
since=$(date -u -d "$((days + 1)) days ago" +%Y-%m-%dT00:00:00Z)
read_stream() { "$ferry" read --config "$work/sandbox/ferry.yaml" "$@"; }
f0=$(date +%s.%N)
read_stream zoom.users >"$work/ferry-users.jsonl"
read_stream zoom.webinars --param user_id=all >"$work/ferry-webinars.jsonl"
read_stream zoom.past_meetings --param user_id=all --since "$since" >"$work/ferry-past_meetings.jsonl"
: >"$work/ferry-past_meeting_participants.jsonl"
for uuid in $(python3 -c 'import json,sys; [print(json.loads(l)["uuid"]) for l in open(sys.argv[1])]' "$work/ferry-past_meetings.jsonl"); do
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
done < <(python3 -c 'import json,sys; [print(json.loads(l)["id"], json.loads(l)["uuid"]) for l in open(sys.argv[1])]' "$work/ferry-webinars.jsonl")
f1=$(date +%s.%N)
stop_sandbox

# --- 3. Report -------------------------------------------------------------------------------
python3 - "$work" "$f0" "$f1" <<'EOF_PY'
import collections, json, os, sys
work, f0, f1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
timings = {l.split()[0]: float(l.split()[2]) - float(l.split()[1]) for l in open(f"{work}/timings.txt")}

def peer_records(name):
    counts, errors = collections.Counter(), []
    path = f"{work}/{name}-read.jsonl"
    if not os.path.exists(path):
        return None, []
    for line in open(path):
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("type") == "RECORD":
            counts[msg.get("stream") or msg["record"]["stream"]] += 1
        elif msg.get("type") == "TRACE" and msg["trace"].get("type") == "ERROR":
            errors.append(msg["trace"]["error"].get("message", ""))
    return counts, errors

def ferry(name):
    return sum(1 for _ in open(f"{work}/ferry-{name}.jsonl")) if name else None

airbyte, airbyte_errors = peer_records("airbyte")
singer, _ = peer_records("singer")
# (Airbyte stream, tap-zoom stream, ferry stream)
rows = [
    ("users", "users", "users"),
    ("meetings", "meetings", None),
    ("meeting_registrants", "meeting_registrants", None),
    ("meeting_polls", "meeting_polls", None),
    ("meeting_poll_results", "meeting_poll_results", None),
    ("meeting_registration_questions", "meeting_questions", None),
    ("report_meetings", "report_meetings", "past_meetings"),
    ("report_meeting_participants", "report_meeting_participants", "past_meeting_participants"),
    ("webinars", "webinars", "webinars"),
    ("webinar_panelists", "webinar_panelists", "webinar_panelists"),
    ("webinar_registrants", "webinar_registrants", "webinar_registrants"),
    ("webinar_absentees", "webinar_absentees", "webinar_absentees"),
    ("webinar_polls", "webinar_polls", None),
    ("webinar_poll_results", "webinar_poll_results", None),
    ("webinar_qna_results", "webinar_qna_results", None),
    ("webinar_registration_questions", "webinar_questions", None),
    ("webinar_tracking_sources", "webinar_tracking_sources", None),
    ("report_webinars", "report_webinars", None),
    ("report_webinar_participants", "report_webinar_participants", "past_webinar_participants"),
]
def cell(counts, key):
    return "" if counts is None or key is None else str(counts.get(key, 0))
print()
if airbyte is not None:
    print(f"airbyte-source-zoom 1.1.22: {sum(airbyte.values())} records in {timings['airbyte']:.1f} s")
if singer is not None:
    print(f"tap-zoom 2.1.1:             {sum(singer.values())} records in {timings['singer']:.1f} s")
print(f"ferry read:                 {sum(ferry(f) for *_, f in rows if f)} records in {f1 - f0:.1f} s "
      "(one process per stream and partition)\n")
print(f"{'stream (Airbyte name)':<32} {'Airbyte':>8} {'tap-zoom':>9}   {'ferry stream':<32} {'ferry':>6}")
for a, t, f in rows:
    print(f"{a:<32} {cell(airbyte, a):>8} {cell(singer, t):>9}   "
          f"{('zoom.' + f) if f else '—':<32} {ferry(f) if f else '':>6}")
for e in airbyte_errors:
    print(f"Airbyte error: {e}")
EOF_PY
for p in airbyte singer; do
  [ -f "$work/sandbox-$p.out" ] && [[ " $peers " == *" $p "* ]] || continue
  echo
  echo "What the simulator served to $p:"
  sed -n '/^Zoom simulator served/,$p' "$work/sandbox-$p.out"
done
echo
echo "What the simulator served to \`ferry read\` (one process, so one token, per stream and partition):"
sed -n '/^Zoom simulator served/,/^  endpoint/p' "$work/sandbox-ferry.out" | sed '$d'
