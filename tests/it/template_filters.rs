//! Every ferry filter, through the public template API.

use ferry::template::{Template, from_json};
use serde_json::{Value as J, json};

fn eval(src: &str, record: J) -> Result<J, String> {
    let ctx = minijinja::context! { record => from_json(&record) };
    Template::compile(src)
        .map_err(|e| e.message)?
        .eval(&ctx)
        .map_err(|e| e.message)
}

fn ok(src: &str, record: J) -> J {
    eval(src, record).unwrap_or_else(|e| panic!("{src}: {e}"))
}

#[test]
fn sf_datetime_reads_every_shape_of_time() {
    let cases = [
        (json!("2026-03-15T14:00:00Z"), "2026-03-15T14:00:00.000Z"),
        (
            json!("2026-03-15T09:00:00-05:00"),
            "2026-03-15T14:00:00.000Z",
        ),
        (
            json!("2026-03-15T15:00:00.25+01:00"),
            "2026-03-15T14:00:00.250Z",
        ),
        (json!("2026-03-15 14:00:00"), "2026-03-15T14:00:00.000Z"),
        (json!("2026-03-15"), "2026-03-15T00:00:00.000Z"),
        (json!(1773583200), "2026-03-15T14:00:00.000Z"),
        (json!(1773583200123_i64), "2026-03-15T14:00:00.123Z"),
        (json!("1773583200"), "2026-03-15T14:00:00.000Z"),
    ];
    for (input, want) in cases {
        assert_eq!(
            ok("{{ record.t | sf_datetime }}", json!({ "t": input })),
            json!(want),
            "input {input}"
        );
    }
}

#[test]
fn sf_datetime_null_in_null_out_and_garbage_is_a_clear_error() {
    assert_eq!(
        ok("{{ record.t | sf_datetime }}", json!({ "t": null })),
        J::Null
    );
    assert_eq!(ok("{{ record.t | sf_datetime }}", json!({})), J::Null);
    assert_eq!(
        ok("{{ record.t | sf_datetime }}", json!({ "t": "" })),
        J::Null
    );
    let e = eval(
        "{{ record.t | sf_datetime }}",
        json!({ "t": "next tuesday" }),
    )
    .unwrap_err();
    assert!(
        e.contains("sf_datetime") && e.contains("next tuesday"),
        "{e}"
    );
    let e = eval("{{ record.t | sf_datetime }}", json!({ "t": true })).unwrap_err();
    assert!(e.contains("sf_datetime"), "{e}");
}

#[test]
fn sf_date_gives_the_utc_day_or_the_day_at_an_offset() {
    assert_eq!(
        ok(
            "{{ record.t | sf_date }}",
            json!({ "t": "2026-03-15T23:30:00Z" })
        ),
        json!("2026-03-15")
    );
    assert_eq!(
        ok(
            "{{ record.t | sf_date }}",
            json!({ "t": "2026-03-15T23:30:00-05:00" })
        ),
        json!("2026-03-16")
    );
    assert_eq!(
        ok(
            "{{ record.t | sf_date('-05:00') }}",
            json!({ "t": "2026-03-16T02:00:00Z" })
        ),
        json!("2026-03-15")
    );
    assert_eq!(
        ok(
            "{{ record.t | sf_date('-05:00') }}",
            json!({ "t": "2026-03-16" })
        ),
        json!("2026-03-16")
    );
    assert_eq!(ok("{{ record.t | sf_date }}", json!({})), J::Null);
    let e = eval(
        "{{ record.t | sf_date('America/New_York') }}",
        json!({ "t": "2026-03-16T02:00:00Z" }),
    )
    .unwrap_err();
    assert!(e.contains("not supported"), "{e}");
}

#[test]
fn email_domain_lowercases_and_rejects_what_is_not_an_address() {
    let cases = [
        (json!("Pat@Contoso.COM"), json!("contoso.com")),
        (json!("  rep@acme.zoom.us "), json!("acme.zoom.us")),
        (json!("weird@name@example.org"), json!("example.org")),
        (json!(""), J::Null),
        (json!("   "), J::Null),
        (json!("no-at-sign"), J::Null),
        (json!("@example.com"), J::Null),
        (json!("pat@"), J::Null),
        (json!("pat@localhost"), J::Null),
        (json!("pat@exa mple.com"), J::Null),
        (json!("pat@-bad.com"), J::Null),
        (J::Null, J::Null),
        (json!(42), J::Null),
    ];
    for (input, want) in cases {
        assert_eq!(
            ok("{{ record.e | email_domain }}", json!({ "e": input })),
            want,
            "input {input}"
        );
    }
}

#[test]
fn truncate_counts_characters_not_bytes() {
    assert_eq!(
        ok(
            "{{ record.s | truncate(5) }}",
            json!({ "s": "Hello world" })
        ),
        json!("Hello")
    );
    assert_eq!(
        ok(
            "{{ record.s | truncate(20) }}",
            json!({ "s": "Hello world" })
        ),
        json!("Hello world")
    );
    // Multi-byte letters: 5 characters, 10 bytes.
    assert_eq!(
        ok("{{ record.s | truncate(3) }}", json!({ "s": "ÄÖÜäö" })),
        json!("ÄÖÜ")
    );
    assert_eq!(
        ok(
            "{{ record.s | truncate(2) }}",
            json!({ "s": "日本語のテキスト" })
        ),
        json!("日本")
    );
    // A 4-byte emoji is one character.
    assert_eq!(
        ok("{{ record.s | truncate(3) }}", json!({ "s": "ab😀cd" })),
        json!("ab😀")
    );
    assert_eq!(
        ok("{{ record.s | truncate(2) }}", json!({ "s": "ab😀cd" })),
        json!("ab")
    );
}

#[test]
fn truncate_never_splits_what_a_reader_sees_as_one_character() {
    // e + combining acute accent: cutting between them would leave a bare "e".
    assert_eq!(
        ok("{{ record.s | truncate(2) }}", json!({ "s": "ae\u{301}x" })),
        json!("a")
    );
    // Thumbs up with a skin tone modifier.
    assert_eq!(
        ok("{{ record.s | truncate(2) }}", json!({ "s": "a👍🏽b" })),
        json!("a")
    );
    // Family emoji joined with ZWJ: never leave a dangling joiner or half a family.
    let out = ok("{{ record.s | truncate(3) }}", json!({ "s": "x👨‍👩‍👧" }));
    assert_eq!(out, json!("x"));
    // A flag is two regional indicators.
    assert_eq!(
        ok("{{ record.s | truncate(2) }}", json!({ "s": "a🇩🇪" })),
        json!("a")
    );
    assert_eq!(
        ok("{{ record.s | truncate(3) }}", json!({ "s": "a🇩🇪b" })),
        json!("a🇩🇪")
    );
    // The result is always valid UTF-8 of at most n characters for every n.
    let s = "Zoom: Ünïcödé 😀👍🏽🇩🇪 日本 e\u{301}";
    for n in 0..s.chars().count() + 2 {
        let out = ok(
            &format!("{{{{ record.s | truncate({n}) }}}}"),
            json!({ "s": s }),
        );
        let out = out.as_str().unwrap();
        assert!(out.chars().count() <= n, "n={n}: {out}");
        assert!(s.starts_with(out));
    }
}

#[test]
fn truncate_appends_end_within_the_limit() {
    assert_eq!(
        ok(
            "{{ record.s | truncate(10, end='…') }}",
            json!({ "s": "Quarterly business review" })
        ),
        json!("Quarterly…")
    );
    assert_eq!(
        ok(
            "{{ record.s | truncate(8, end='...') }}",
            json!({ "s": "Hello world" })
        ),
        json!("Hello...")
    );
    assert_eq!(
        ok(
            "{{ record.s | truncate(8, '...') }}",
            json!({ "s": "Hello world" })
        ),
        json!("Hello...")
    );
    assert_eq!(
        ok(
            "{{ record.s | truncate(20, end='...') }}",
            json!({ "s": "Hello world" })
        ),
        json!("Hello world")
    );
    assert_eq!(ok("{{ record.s | truncate(5) }}", json!({})), J::Null);
    assert_eq!(
        ok(
            "Subject: {{ record.s | truncate(4) }}",
            json!({ "s": "Demo day" })
        ),
        json!("Subject: Demo")
    );
}

#[test]
fn minutes_rounds_seconds_to_whole_minutes() {
    for (secs, want) in [
        (json!(90), json!(2)),
        (json!(89), json!(1)),
        (json!(0), json!(0)),
        (json!(3600), json!(60)),
        (json!(149.9), json!(2)),
        (json!("120"), json!(2)),
        (J::Null, J::Null),
    ] {
        assert_eq!(
            ok("{{ record.d | minutes }}", json!({ "d": secs })),
            want,
            "input {secs}"
        );
    }
    assert!(eval("{{ record.d | minutes }}", json!({ "d": "soon" })).is_err());
}

#[test]
fn unique_keeps_the_first_and_ignores_case() {
    assert_eq!(
        ok(
            "{{ record.l | unique }}",
            json!({ "l": ["a@x.com", "A@X.com", "b@x.com"] })
        ),
        json!(["a@x.com", "b@x.com"])
    );
    let people = json!({ "l": [
        { "name": "Pat", "user_email": "pat@contoso.com" },
        { "name": "Pat again", "user_email": "PAT@contoso.com" },
        { "name": "Dial-in 1" },
        { "name": "Dial-in 2", "user_email": null },
        { "name": "Sam", "user_email": "sam@x.com" }
    ]});
    assert_eq!(
        ok(
            "{{ record.l | unique(attribute='user_email') | map(attribute='name') | list }}",
            people
        ),
        json!(["Pat", "Dial-in 1", "Dial-in 2", "Sam"])
    );
    assert_eq!(
        ok(
            "{{ record.l | unique(attribute='Id') | map(attribute='Id') | list }}",
            json!({ "l": [{ "Id": "003A" }, { "Id": "003B" }, { "Id": "003A" }] })
        ),
        json!(["003A", "003B"])
    );
    assert_eq!(
        ok(
            "{{ record.l | unique(attribute='a.b') | length }}",
            json!({ "l": [
            { "a": { "b": 1 } }, { "a": { "b": 1 } }, { "a": { "b": 2 } } ] })
        ),
        json!(2)
    );
    assert_eq!(
        ok("{{ record.missing | unique(attribute='x') }}", json!({})),
        json!([])
    );
    assert_eq!(
        ok(
            "{{ record.l | unique(case_sensitive=true) }}",
            json!({ "l": ["a", "A", "a"] })
        ),
        json!(["a", "A"])
    );
}

#[test]
fn sha256_is_hex() {
    assert_eq!(
        ok("{{ record.s | sha256 }}", json!({ "s": "abc" })),
        json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    assert_eq!(ok("{{ record.s | sha256 }}", json!({})), J::Null);
    let a = ok("{{ record.o | sha256 }}", json!({ "o": { "a": 1 } }));
    assert_eq!(a.as_str().unwrap().len(), 64);
}

#[test]
fn json_is_compact_and_does_not_escape_html() {
    assert_eq!(
        ok(
            "{{ record.o | json }}",
            json!({ "o": { "a": 1, "b": "<x> & 'y'" } })
        ),
        json!(r#"{"a":1,"b":"<x> & 'y'"}"#)
    );
    assert_eq!(ok("{{ record.o | json }}", json!({})), json!("null"));
    assert_eq!(
        ok("{{ record.o | json }}", json!({ "o": [1, null, true] })),
        json!("[1,null,true]")
    );
}

#[test]
fn filter_help_documents_every_filter() {
    for f in [
        "sf_datetime",
        "sf_date",
        "email_domain",
        "truncate",
        "minutes",
        "unique",
        "sha256",
        "json",
        "zoom_datetime",
        "omit",
    ] {
        assert!(
            ferry::template::filter_help().contains(f),
            "{f} undocumented"
        );
    }
}

#[test]
fn zoom_datetime_gives_zooms_start_time_format_in_utc() {
    let cases = [
        (json!("2026-03-15T14:00:00Z"), "2026-03-15T14:00:00Z"),
        (json!("2026-03-15T09:00:00-05:00"), "2026-03-15T14:00:00Z"),
        // Zoom's format has whole seconds: fractions are cut, not rounded into the next one.
        (
            json!("2026-03-15T15:00:59.999+01:00"),
            "2026-03-15T14:00:59Z",
        ),
        (json!("2026-03-15 14:00:00"), "2026-03-15T14:00:00Z"),
        (json!("2026-03-15"), "2026-03-15T00:00:00Z"),
        (json!(1773583200), "2026-03-15T14:00:00Z"),
        (json!(1773583200123_i64), "2026-03-15T14:00:00Z"),
    ];
    let t = Template::compile("{{ record.t | zoom_datetime }}").unwrap();
    // The native evaluator computes it: the same answer as minijinja, without it.
    assert!(t.is_native());
    for (input, want) in cases {
        let record = json!({ "t": input });
        assert_eq!(
            ok("{{ record.t | zoom_datetime }}", record.clone()),
            json!(want),
            "{input}"
        );
        let scope = json!({ "record": record });
        let (direct0, slow0) = ferry::template::evaluation_counts();
        assert_eq!(t.eval(&scope).unwrap(), json!(want), "native, {input}");
        let (direct1, slow1) = ferry::template::evaluation_counts();
        assert_eq!((direct1 - direct0, slow1 - slow0), (1, 0), "{input}");
    }
    assert_eq!(
        ok("{{ record.t | zoom_datetime }}", json!({ "t": null })),
        J::Null
    );
    assert_eq!(ok("{{ record.t | zoom_datetime }}", json!({})), J::Null);
    let e = eval("{{ record.t | zoom_datetime }}", json!({ "t": "soon" })).unwrap_err();
    assert!(e.contains("zoom_datetime") && e.contains("soon"), "{e}");
}
