//! Templates are evaluated directly over JSON where they can be, and by minijinja
//! otherwise. These tests hold the two to the same answers: every shipped pipeline's tests and
//! a generated world's meetings run with the cross-check on (a difference is an error), the
//! reference pipeline's templates are all covered by the direct path, and random values
//! through a corpus of expressions give the same results (or both fail).

use crate::bench;

use ferry::config::{Expr, LocatedExpr, Pipeline, builtin_catalogs, load_project};
use ferry::engine::testing;
use ferry::sim::world::{Scale, World};
use ferry::template::{self, Template, cross_check};
use proptest::prelude::*;
use serde_json::{Value as J, json};
use std::path::Path;

fn project() -> ferry::config::Project {
    let owned = builtin_catalogs();
    let catalogs: Vec<&dyn ferry::config::StreamCatalog> =
        owned.iter().map(|c| c.as_ref()).collect();
    load_project(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("ferry.yaml"),
        &catalogs,
    )
    .unwrap_or_else(|d| panic!("{}", d.render()))
}

/// Every template a pipeline holds, with where it is.
fn templates(p: &Pipeline) -> Vec<(String, Template)> {
    let mut out = Vec::new();
    let mut add = |place: String, e: &LocatedExpr| {
        if let Expr::Template(t) = &e.value {
            out.push((place, t.clone()));
        }
    };
    for (k, e) in &p.source.params {
        add(format!("source.params.{k}"), e);
    }
    if let Some(w) = &p.source.where_ {
        add("source.where".into(), w);
    }
    for en in &p.enrich {
        for (k, e) in &en.params {
            add(format!("enrich.{}.params.{k}", en.name), e);
        }
        if let Some(w) = &en.when {
            add(format!("enrich.{}.when", en.name), w);
        }
    }
    for l in &p.lookups {
        if let Some(e) = &l.for_each {
            add(format!("lookups.{}.for_each", l.name), e);
        }
        if let Some(e) = &l.skip {
            add(format!("lookups.{}.skip", l.name), e);
        }
        for (i, r) in l.rules.iter().enumerate() {
            for (f, e) in &r.where_ {
                add(format!("lookups.{}.match[{i}].where.{f}", l.name), e);
            }
        }
    }
    for (k, e) in &p.vars {
        add(format!("vars.{k}"), e);
    }
    for s in &p.sinks {
        for (what, e) in [("when", &s.when), ("for_each", &s.for_each), ("id", &s.id)] {
            if let Some(e) = e {
                add(format!("sinks.{}.{what}", s.name), e);
            }
        }
        if let Some(ferry::config::SinkKey::Template(e)) = &s.key {
            add(format!("sinks.{}.key", s.name), e);
        }
        for f in &s.fields {
            add(format!("sinks.{}.fields.{}", s.name, f.name), &f.value);
        }
    }
    out
}

#[test]
fn the_reference_pipeline_is_evaluated_directly_throughout() {
    let project = project();
    let p = project
        .pipeline("meetings-to-events")
        .expect("the reference pipeline");
    let all = templates(p);
    assert!(all.len() > 25, "{} templates", all.len());
    let slow: Vec<&String> = all
        .iter()
        .filter(|(_, t)| !t.is_native())
        .map(|(place, _)| place)
        .collect();
    assert!(slow.is_empty(), "left to minijinja: {slow:?}");
}

#[tokio::test]
async fn shipped_pipeline_tests_and_a_generated_world_agree_both_ways() {
    cross_check(true);
    let project = project();
    let settings = J::Object(project.config.settings.clone());
    let mut ran = 0;
    for p in &project.pipelines {
        for t in &p.tests {
            let out = testing::run_test(p, t, &settings).await;
            assert!(out.passed(), "{}/{}: {:?}", p.name, t.name, out.failures);
            ran += 1;
        }
    }
    assert!(ran >= 9, "{ran} pipeline tests");
    let mut scale = Scale::small();
    scale.meetings = 300;
    let world = World::generate(11, scale);
    let cases = bench::render::synthetic_cases(&world);
    let p = project.pipeline("meetings-to-events").expect("pipeline");
    let (direct_before, _) = template::evaluation_counts();
    let mut sink_records = 0;
    for c in &cases {
        let out = testing::produce(p, c, &settings)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        sink_records += out.iter().map(|(_, r)| r.len()).sum::<usize>();
    }
    let (direct_after, _) = template::evaluation_counts();
    assert!(sink_records > cases.len(), "{sink_records} sink records");
    assert!(direct_after - direct_before > 20 * cases.len() as u64);
}

/// A corpus of expressions in the shapes pipelines use, over `record.a`, `record.b`,
/// `record.l` and `item`.
const CORPUS: &[&str] = &[
    "{{ record.a }}",
    "{{ record.a.x }}",
    "{{ record.a == record.b }}",
    "{{ record.a != 'x' }}",
    "{{ record.a < record.b }}",
    "{{ record.a >= 2 }}",
    "{{ record.a in record.l }}",
    "{{ record.a not in ['x', 'y', 1] }}",
    "{{ record.a ~ '-' ~ record.b }}",
    "{{ record.a + record.b }}",
    "{{ record.a * 2 }}",
    "{{ -record.a }}",
    "{{ record.a and record.b }}",
    "{{ record.a or record.b }}",
    "{{ not record.a }}",
    "{{ record.a if record.b else omit }}",
    "{{ record.a if record.b }}",
    "{{ record.a is none }}",
    "{{ record.a is defined }}",
    "{{ record.a | default('d') }}",
    "{{ record.a[:3] }}",
    "{{ record.a[1:-1] }}",
    "{{ record.l[0] }}",
    "{{ record.l[-1] }}",
    "{{ record.a['x'] }}",
    "{{ record.l | length }}",
    "{{ record.a | length }}",
    "{{ record.l | first }}",
    "{{ record.l | last }}",
    "{{ record.l | list }}",
    "{{ record.l | join(', ') }}",
    "{{ record.l | unique }}",
    "{{ record.l | unique(attribute='x') }}",
    "{{ record.l | unique(case_sensitive=true) }}",
    "{{ [record.a, record.b, 'A', 'a'] | unique }}",
    "{{ record.l | map(attribute='x') | join('/') }}",
    "{{ record.l | selectattr('x') | list }}",
    "{{ record.l | selectattr('x', 'eq', 'a') | list }}",
    "{{ record.l | selectattr('x', 'in', ['a', 'b']) | first }}",
    "{{ record.l | rejectattr('x') | list }}",
    "{{ record.a | lower }}",
    "{{ record.a | upper }}",
    "{{ record.a | trim }}",
    "{{ record.a | truncate(3) }}",
    "{{ record.a | truncate(4, end='.') }}",
    "{{ record.a | email_domain }}",
    "{{ record.a | sf_datetime }}",
    "{{ record.a | sf_date }}",
    "{{ (record.a | sf_datetime)[:19] > (record.b or '')[:19] }}",
    "{{ loop.index }}:{{ item }}",
    "a={{ record.a }} b={{ record.b }}",
    "{% if record.a %}yes {{ record.b }}{% elif record.l %}list{% else %}no{% endif %}",
    "{%- if record.a -%}  x  {%- endif %}\n",
    "Participants: {{ record.l | map(attribute='x') | join(', ') }}\n",
];

fn scalar() -> impl Strategy<Value = J> {
    prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        (-5i64..5).prop_map(|i| json!(i)),
        (-3.0f64..3.0).prop_map(|f| json!((f * 4.0).round() / 4.0)),
        prop::sample::select(vec![
            "",
            "a",
            "b",
            "x",
            "Ab",
            "2026-03-15T14:00:00Z",
            "pat@Contoso.COM",
            "  pad  ",
            "héllo wörld",
            "1700000000",
        ])
        .prop_map(|s| json!(s)),
    ]
}

fn value() -> impl Strategy<Value = J> {
    let item = prop_oneof![
        scalar(),
        (scalar(), scalar()).prop_map(|(x, y)| json!({ "x": x, "y": y })),
    ];
    prop_oneof![
        3 => scalar(),
        1 => prop::collection::vec(item, 0..4).prop_map(J::Array),
        1 => scalar().prop_map(|x| json!({ "x": x })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn direct_and_minijinja_agree_on_random_values(
        a in value(), b in value(), l in value(), item in scalar(), which in 0..CORPUS.len()
    ) {
        let src = CORPUS[which];
        let t = Template::compile(src).expect("compiles");
        prop_assert!(t.is_native(), "{src} is not covered");
        let ctx = json!({
            "record": { "a": a, "b": b, "l": l },
            "item": item,
            "loop": { "index": 2, "index0": 1, "first": false, "last": true, "length": 2 },
        });
        let direct = t.eval(&ctx).map_err(|e| e.message);
        let slow = t.eval_minijinja(&ctx).map_err(|e| e.message);
        // Read as a condition (`when`, `skip`), directly or from minijinja's value.
        let direct_truthy = t.truthy(&ctx).map_err(|e| e.message);
        let slow_truthy = slow.clone().map(|v| match t.kind() {
            template::TemplateKind::Expression => ferry::config::json_truthy(&v),
            template::TemplateKind::Text => {
                let s = v.as_str().unwrap_or_default().trim();
                !(s.is_empty()
                    || s.eq_ignore_ascii_case("false")
                    || s == "0"
                    || s.eq_ignore_ascii_case("none"))
            }
        });
        match (&direct_truthy, &slow_truthy) {
            (Ok(x), Ok(y)) => prop_assert_eq!(x, y, "truthy {}", src),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "{src}: truthy {direct_truthy:?}, minijinja {slow_truthy:?}"),
        }
        match (&direct, &slow) {
            (Ok(x), Ok(y)) => prop_assert_eq!(x, y, "{}", src),
            (Err(_), Err(_)) => {}
            _ => prop_assert!(false, "{src}: direct {direct:?}, minijinja {slow:?}"),
        }
    }
}

#[test]
fn only_sink_results_a_template_reads_are_kept() {
    let project = project();
    let p = project.pipeline("meetings-to-events").expect("pipeline");
    let read: Vec<&str> = p
        .sinks
        .iter()
        .filter(|s| s.read_later)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(read, ["event", "scheduled_event"]);
    let mut sinks = p.sinks.clone();
    let whole = Template::compile("{{ sinks | length }}").expect("compiles");
    sinks[1].when = Some(LocatedExpr {
        value: Expr::Template(whole),
        pos: sinks[1].pos.clone(),
    });
    ferry::config::mark_sinks_read_later(&mut sinks);
    assert!(
        sinks.iter().all(|s| s.read_later),
        "`sinks` as a whole reads them all"
    );
}

#[test]
fn vars_kept_as_parts_of_the_lookups_read_as_their_copies_would() {
    use ferry::engine::render::{Globals, RecordState};
    use ferry::template::Shared;
    let lookups =
        json!({"a": {"matched": [{"Id": "1", "x": "c"}, {"Id": "2"}, {"Id": "3", "x": "d"}]}});
    let ctx = json!({ "lookups": lookups.clone() });
    let tree = &ctx["lookups"];
    let people = Template::compile("{{ lookups.a.matched | selectattr('x') | list }}").unwrap();
    let first = Template::compile("{{ lookups.a.matched | first }}").unwrap();
    let ids = Template::compile("{{ lookups.a.matched | map(attribute='Id') | list }}").unwrap();
    let made = Template::compile("{{ 'x' ~ (lookups.a.matched | first).Id }}").unwrap();
    let shared = people.eval_shared(&ctx, tree).unwrap();
    assert_eq!(shared, Ok(Shared::Many(vec![vec![0, 0, 0], vec![0, 0, 2]])));
    assert_eq!(shared.unwrap().to_json(tree), people.eval(&ctx).unwrap());
    assert_eq!(
        first.eval_shared(&ctx, tree).unwrap(),
        Ok(Shared::One(vec![0, 0, 0]))
    );
    let id_paths = vec![vec![0, 0, 0, 0], vec![0, 0, 1, 0], vec![0, 0, 2, 0]];
    assert_eq!(
        ids.eval_shared(&ctx, tree).unwrap(),
        Ok(Shared::Many(id_paths))
    );
    // A value made by the template is not a part of the tree.
    assert_eq!(made.eval_shared(&ctx, tree).unwrap(), Err(json!("x1")));

    let g = Globals::new(&json!({}), "t", "p", "2026-01-01T00:00:00Z", true);
    let mut st = RecordState::new(json!({}));
    st.set_lookup("a", lookups["a"].clone());
    let sh = people.eval_shared(&ctx, tree).unwrap().unwrap();
    st.set_var_shared("people", sh);
    st.set_var("n", json!(2));
    let read =
        Template::compile("{{ vars.people | map(attribute='Id') | join(',') }}/{{ vars.n }}")
            .unwrap();
    let whole = Template::compile("{{ vars }}").unwrap();
    assert_eq!(read.eval(&st.scope(&g, None)).unwrap(), json!("1,3/2"));
    let copied = json!({"people": [{"Id": "1", "x": "c"}, {"Id": "3", "x": "d"}], "n": 2});
    assert_eq!(whole.eval(&st.scope(&g, None)).unwrap(), copied);
    assert_eq!(
        read.eval_minijinja(&st.scope(&g, None)).unwrap(),
        json!("1,3/2")
    );
    // Changing the lookups afterwards leaves the vars as they were.
    st.set_lookup("a", json!({"matched": []}));
    assert_eq!(read.eval(&st.scope(&g, None)).unwrap(), json!("1,3/2"));
}
