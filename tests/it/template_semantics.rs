//! Typed evaluation, omit, text rendering and the spec's missing-value rules, including the
//! `vars` of the reference pipeline with zero, one Contact, one Lead, one Account-only match.

use ferry::template::{OMIT_MARKER, Template, TemplateKind, from_json, is_omit};
use serde_json::{Value as J, json};

/// A context of root names as JSON: templates take the direct path where they can.
fn ctx(v: J) -> J {
    v
}

/// Evaluates both ways (directly over JSON, and by minijinja over the converted context)
/// and insists they agree before returning the value.
fn eval(src: &str, c: &J) -> J {
    let t = Template::compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    let direct = t.eval(c).unwrap_or_else(|e| panic!("{src}: {e}"));
    let slow = t
        .eval(&from_json(c))
        .unwrap_or_else(|e| panic!("{src}: {e}"));
    assert_eq!(
        direct, slow,
        "{src}: direct and minijinja evaluation differ"
    );
    direct
}

#[test]
fn a_single_expression_keeps_its_type() {
    let c = ctx(
        json!({ "record": { "n": 3, "f": 1.5, "ok": true, "l": [1, 2],
        "o": { "a": "x" }, "s": "text", "nothing": null } }),
    );
    assert_eq!(eval("{{ record.n }}", &c), json!(3));
    assert_eq!(eval("{{ record.f }}", &c), json!(1.5));
    assert_eq!(eval("{{ record.ok }}", &c), json!(true));
    assert_eq!(eval("{{ record.l }}", &c), json!([1, 2]));
    assert_eq!(eval("{{ record.o }}", &c), json!({ "a": "x" }));
    assert_eq!(eval("{{ record.s }}", &c), json!("text"));
    assert_eq!(eval("{{ record.nothing }}", &c), J::Null);
    assert_eq!(eval("{{ none }}", &c), J::Null);
    assert_eq!(eval("{{ record.n * 2 }}", &c), json!(6));
    assert_eq!(eval("{{ record.n > 2 }}", &c), json!(true));
    assert_eq!(eval("{{ record.l | length }}", &c), json!(2));
    assert_eq!(eval("  {{ record.n }}  ", &c), json!(3));
    assert_eq!(eval("{{ record.l[1] }}", &c), json!(2));
    assert_eq!(eval("{{ record.l.0 }}", &c), json!(1));
    assert_eq!(
        Template::compile("{{ record.n }}").unwrap().kind(),
        TemplateKind::Expression
    );
    assert_eq!(
        Template::compile("n={{ record.n }}").unwrap().kind(),
        TemplateKind::Text
    );
}

#[test]
fn text_renders_null_as_empty_and_booleans_in_lower_case() {
    let c = ctx(json!({ "record": { "n": 3, "ok": true, "no": false, "nothing": null } }));
    assert_eq!(eval("n={{ record.n }}", &c), json!("n=3"));
    assert_eq!(
        eval(
            "a{{ none }}b{{ record.nothing }}c{{ record.missing.deeper }}d",
            &c
        ),
        json!("abcd")
    );
    assert_eq!(
        eval("{{ record.ok }}/{{ record.no }}", &c),
        json!("true/false")
    );
    assert_eq!(eval("{{ true }} {{ false }}", &c), json!("true false"));
    assert_eq!(
        eval("{% if record.ok %}yes{% else %}no{% endif %}", &c),
        json!("yes")
    );
}

#[test]
fn omit_marks_a_field_to_leave_out() {
    let c = ctx(json!({ "record": { "x": "v", "y": false } }));
    assert!(is_omit(&eval("{{ omit }}", &c)));
    assert!(is_omit(&eval("{{ record.x if record.y else omit }}", &c)));
    assert_eq!(
        eval("{{ record.x if not record.y else omit }}", &c),
        json!("v")
    );
    assert!(is_omit(&eval(
        "{% if not record.y %}{{ omit }}{% endif %}",
        &c
    )));
    // Inside other text, omit prints nothing rather than a control character.
    let text = eval("a{{ omit }}b", &c);
    assert_eq!(text, json!("ab"));
    assert!(!text.as_str().unwrap().contains(OMIT_MARKER));
    assert!(!is_omit(&json!("omit")));
}

#[test]
fn missing_values_are_null_and_chain() {
    let c = ctx(json!({
        "record": { "nothing": null, "empty": [], "objs": [{ "a": 1 }, { "b": 2 }] },
        "vars": { "who": null },
        "lookups": { "owner": null }
    }));
    for src in [
        "{{ record.nothing.x }}",
        "{{ record.nothing.x.y }}",
        "{{ record.missing.x.y }}",
        "{{ vars.who.Id }}",
        "{{ lookups.owner.Id }}",
        "{{ record.empty | first }}",
        "{{ (record.empty | first).Id }}",
        "{{ record.nothing | first }}",
        "{{ record.nothing | last }}",
        "{{ record.nothing[0] }}",
        "{{ record.missing['a'] }}",
    ] {
        assert_eq!(eval(src, &c), J::Null, "{src}");
    }
    assert_eq!(eval("{{ record.nothing | length }}", &c), json!(0));
    assert_eq!(eval("{{ record.missing | length }}", &c), json!(0));
    assert_eq!(eval("{{ 'x' in record.nothing }}", &c), json!(false));
    assert_eq!(eval("{{ record.nothing | default('d') }}", &c), json!("d"));
    assert_eq!(
        eval("{{ record.missing.x | default('d') }}", &c),
        json!("d")
    );
    assert_eq!(eval("{{ record.nothing is none }}", &c), json!(true));
    assert_eq!(
        eval("{{ record.nothing | selectattr('a') | list }}", &c),
        json!([])
    );
    assert_eq!(
        eval("{{ record.objs | map(attribute='a') | list }}", &c),
        json!([1, null])
    );
    assert_eq!(
        eval(
            "{{ record.objs | selectattr('zz', 'in', ['x']) | list }}",
            &c
        ),
        json!([])
    );
    assert_eq!(
        eval("{{ record.objs | map(attribute='a') | join(',') }}", &c),
        json!("1,")
    );
    let t = Template::compile("{% if record.missing %}x{% endif %}").unwrap();
    assert!(!t.truthy(&c).unwrap());
    let t = Template::compile("{{ vars.who.Id }}").unwrap();
    assert!(!t.truthy(&c).unwrap());
}

/// The reference pipeline's `vars`, evaluated in order, each seeing the ones above it.
fn reference_vars(matched: J) -> (J, J, J) {
    let people = Template::compile(
        "{{ lookups.attendees.matched | selectattr('sobject', 'in', ['Contact', 'Lead']) | list }}",
    )
    .unwrap();
    let who = Template::compile("{{ vars.people | first }}").unwrap();
    let what = Template::compile(
        "{{ none if vars.who.sobject == 'Lead' else (vars.who.AccountId or \
         (lookups.attendees.matched | selectattr('sobject', 'eq', 'Account') | first).Id) }}",
    )
    .unwrap();
    let mut root = json!({ "lookups": { "attendees": { "matched": matched } }, "vars": {} });
    let p = people.eval(&from_json(&root)).unwrap();
    root["vars"]["people"] = p.clone();
    let w = who.eval(&from_json(&root)).unwrap();
    root["vars"]["who"] = w.clone();
    let wt = what.eval(&from_json(&root)).unwrap();
    root["vars"]["what"] = wt.clone();
    let who_id = Template::compile("{{ vars.who.Id }}")
        .unwrap()
        .eval(&from_json(&root))
        .unwrap();
    assert_eq!(who_id, w.get("Id").cloned().unwrap_or(J::Null));
    (p, who_id, wt)
}

#[test]
fn reference_vars_with_no_match() {
    let (people, who, what) = reference_vars(json!([]));
    assert_eq!(people, json!([]));
    assert_eq!(who, J::Null);
    assert_eq!(what, J::Null);
}

#[test]
fn reference_vars_when_the_lookup_itself_is_missing() {
    let people = Template::compile(
        "{{ lookups.attendees.matched | selectattr('sobject', 'in', ['Contact', 'Lead']) | list }}",
    )
    .unwrap();
    let c = ctx(json!({ "lookups": { "attendees": null } }));
    assert_eq!(people.eval(&c).unwrap(), json!([]));
    let when = Template::compile("{{ lookups.attendees.matched | length > 0 }}").unwrap();
    assert!(!when.truthy(&c).unwrap());
}

#[test]
fn reference_vars_with_one_contact() {
    let (people, who, what) = reference_vars(json!([
        { "sobject": "Contact", "Id": "003A", "AccountId": "001A", "item": { "user_email": "pat@contoso.com" } }
    ]));
    assert_eq!(people.as_array().unwrap().len(), 1);
    assert_eq!(who, json!("003A"));
    assert_eq!(what, json!("001A"));
}

#[test]
fn reference_vars_with_one_lead() {
    let (people, who, what) = reference_vars(json!([
        { "sobject": "Lead", "Id": "00QL", "Company": "Contoso" }
    ]));
    assert_eq!(people.as_array().unwrap().len(), 1);
    assert_eq!(who, json!("00QL"));
    // Salesforce allows no What when the Who is a Lead.
    assert_eq!(what, J::Null);
}

#[test]
fn reference_vars_with_only_an_account() {
    let (people, who, what) = reference_vars(json!([
        { "sobject": "Account", "Id": "001X", "Name": "Contoso" }
    ]));
    assert_eq!(people, json!([]));
    assert_eq!(who, J::Null);
    assert_eq!(what, json!("001X"));
}

#[test]
fn reference_vars_contact_without_account_falls_back_to_an_account_match() {
    let (_, who, what) = reference_vars(json!([
        { "sobject": "Contact", "Id": "003B", "AccountId": null },
        { "sobject": "Account", "Id": "001Y" }
    ]));
    assert_eq!(who, json!("003B"));
    assert_eq!(what, json!("001Y"));
}

#[test]
fn reference_description_renders_cleanly() {
    let t = Template::compile(
        "Participants: {{ record.participants | map(attribute='name') | join(', ') }}\n\
         {% if lookups.attendees.unmatched %}Not in Salesforce: {{ lookups.attendees.unmatched | map(attribute='user_email') | join(', ') }}{% endif %}\n\
         {% if record.summary %}Summary: {{ record.summary.summary_overview }}{% endif %}",
    )
    .unwrap();
    let c = ctx(json!({
        "record": { "participants": [{ "name": "Pat" }, { "name": "Rep" }], "summary": null },
        "lookups": { "attendees": { "unmatched": [{ "user_email": "sam@unknown.example" }] } }
    }));
    assert_eq!(
        t.eval(&c).unwrap(),
        json!("Participants: Pat, Rep\nNot in Salesforce: sam@unknown.example\n")
    );
}

#[test]
fn eval_value_results_chain_like_missing_values() {
    let c = ctx(json!({ "record": {} }));
    let v = Template::compile("{{ none }}")
        .unwrap()
        .eval_value(&from_json(&c))
        .unwrap();
    let next =
        Template::compile("{{ vars.what.Id }}|{{ 'x' in vars.what }}|{{ vars.what | length }}")
            .unwrap();
    let c2 = minijinja::context! { vars => minijinja::context! { what => v } };
    assert_eq!(next.eval(&c2).unwrap(), json!("|false|0"));
}

#[test]
fn unknown_filters_and_syntax_errors_are_reported() {
    let e = Template::compile("{{ record.x | no_such_filter }}")
        .and_then(|t| t.eval(&ctx(json!({ "record": {} }))))
        .unwrap_err();
    assert!(
        e.message.contains("no_such_filter") || e.message.contains("unknown filter"),
        "{}",
        e.message
    );
    assert!(Template::compile("{{ record.a + }}").is_err());
}

#[test]
fn undeclared_variables_name_the_paths_read() {
    let t = Template::compile("{{ record.topic | truncate(240) }} {{ vars.who.Id }}").unwrap();
    let vars = t.undeclared_variables();
    assert!(vars.contains("record.topic"), "{vars:?}");
    assert!(vars.contains("vars.who.Id"), "{vars:?}");
}
