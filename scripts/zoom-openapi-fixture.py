#!/usr/bin/env python3
"""Rebuilds tests/fixtures/zoom-openapi-responses.json from Zoom's published OpenAPI specs.

For each GET endpoint the simulator serves, the 200 response schema is kept with only
`type`, `properties`, `required` and `items` ($ref and allOf resolved), which is what
tests/it/zoom_openapi.rs checks the simulator's answers against.

Usage: scripts/zoom-openapi-fixture.py SPEC_DIR > tests/fixtures/zoom-openapi-responses.json
where SPEC_DIR holds ZoomMeetingAPISpec.json, ZoomPhoneAPISpec.json and ZoomUsersAPISpec-2026.json.
"""
import json
import sys

SPECS = ["ZoomMeetingAPISpec.json", "ZoomPhoneAPISpec.json", "ZoomUsersAPISpec-2026.json"]

# Every endpoint the simulator serves (spec path spelling).
PATHS = [
    "/users",
    "/users/{userId}",
    "/users/{userId}/meetings",
    "/users/{userId}/recordings",
    "/users/{userId}/webinars",
    "/meetings/{meetingId}",
    "/meetings/{meetingId}/polls",
    "/meetings/{meetingId}/recordings",
    "/meetings/{meetingId}/registrants",
    "/meetings/{meetingId}/registrants/questions",
    "/past_meetings/{meetingId}",
    "/past_meetings/{meetingId}/instances",
    "/past_meetings/{meetingId}/participants",
    "/past_meetings/{meetingId}/polls",
    "/report/users/{userId}/meetings",
    "/report/meetings/{meetingId}",
    "/report/meetings/{meetingId}/participants",
    "/webinars/{webinarId}",
    "/webinars/{webinarId}/panelists",
    "/webinars/{webinarId}/polls",
    "/webinars/{webinarId}/registrants",
    "/webinars/{webinarId}/registrants/questions",
    "/webinars/{webinarId}/tracking_sources",
    "/past_webinars/{WebinarUUID}/absentees",
    "/past_webinars/{webinarId}/participants",
    "/past_webinars/{webinarId}/polls",
    "/past_webinars/{webinarId}/qa",
    "/report/webinars/{webinarId}",
    "/report/webinars/{webinarId}/participants",
    "/phone/call_history",
    "/phone/recordings",
    "/phone/users",
    "/phone/voice_mails",
    # Per-user endpoints of privacy requests (ferry subject export).
    "/users/{userId}/settings",
    "/phone/users/{userId}",
    "/phone/users/{userId}/settings",
    "/phone/users/{userId}/call_history",
    "/phone/users/{userId}/voice_mails",
    "/phone/users/{userId}/recordings",
]


def resolve(spec, s):
    while isinstance(s, dict) and "$ref" in s:
        node = spec
        for part in s["$ref"].lstrip("#/").split("/"):
            node = node[part]
        s = node
    return s


def simplify(spec, s):
    s = resolve(spec, s)
    if not isinstance(s, dict):
        return {}
    if "allOf" in s:
        merged = {"properties": {}, "required": []}
        for sub in s["allOf"]:
            t = simplify(spec, sub)
            merged["properties"].update(t.get("properties", {}))
            merged["required"] += t.get("required", [])
            for k in ("type", "items"):
                if k in t:
                    merged[k] = t[k]
        rest = simplify(spec, {k: v for k, v in s.items() if k != "allOf"})
        merged["properties"].update(rest.get("properties", {}))
        if not merged["properties"]:
            del merged["properties"]
        for k in ("type", "items"):
            if k in rest:
                merged[k] = rest[k]
        merged["required"] += rest.get("required", [])
        return merged
    out = {}
    if "type" in s:
        out["type"] = s["type"]
    if "properties" in s:
        out["properties"] = {k: simplify(spec, v) for k, v in s["properties"].items()}
    if "required" in s or "properties" in s:
        out["required"] = s.get("required", [])
    if "items" in s:
        out["items"] = simplify(spec, s["items"])
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    specs = []
    for name in SPECS:
        with open(f"{sys.argv[1]}/{name}") as f:
            specs.append(json.load(f))
    out = {}
    for path in PATHS:
        spec = next((s for s in specs if path in s["paths"]), None)
        if spec is None:
            sys.exit(f"{path}: in none of the specs")
        op = spec["paths"][path]["get"]
        resp = resolve(spec, op["responses"]["200"])
        schema = resp.get("content", {}).get("application/json", {}).get("schema", {})
        out[path] = simplify(spec, schema)
    print(json.dumps(out, sort_keys=True, indent=0), end="")


if __name__ == "__main__":
    main()
