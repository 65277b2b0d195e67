//! Chat templates are code from whoever published the model: rendering one is bounded in
//! time (fuel) and memory (every value built and the output are capped), and loading one
//! only compiles it.

use mixtral_tokenizer::chat::Message;
use mixtral_tokenizer::{ChatTemplate, Error, RenderLimits};
use std::time::{Duration, Instant};

/// Renders `source` over one user message; the error, and how long it took.
fn render(source: &str, limits: RenderLimits) -> (Result<String, Error>, Duration) {
    let template = ChatTemplate::new(source, "<s>", "</s>")
        .unwrap_or_else(|e| panic!("{source}: {e}"))
        .with_limits(limits);
    let start = Instant::now();
    let out = template.render(&[Message::user("hi")], true);
    (out, start.elapsed())
}

/// `source` fails on a limit, fast (a hang guard, not a benchmark: each takes milliseconds).
fn assert_stopped(source: &str, limits: RenderLimits, needle: &str) {
    let (out, took) = render(source, limits);
    match out {
        Err(e @ Error::TemplateLimit { .. }) => {
            assert!(e.to_string().contains(needle), "{source}: {e}");
            assert!(
                e.to_string().starts_with("chat template (inline): "),
                "names it: {e}"
            );
        }
        other => panic!("{source}: expected a limit error, got {other:?}"),
    }
    assert!(took < Duration::from_secs(2), "{source}: took {took:?}");
}

const BOMBS: [(&str, &str); 11] = [
    // Widths in format strings.
    (
        "{{ '%999999999s' | format(messages[0].content) }}",
        "byte limit",
    ),
    (
        "{{ '{:>999999999}'.format(messages[0].content) }}",
        "byte limit",
    ),
    // The 21-byte bomb, its count only known when rendering.
    ("{{ 'x' * (messages | length * 100000000) }}", "byte limit"),
    (
        "{% set s = namespace(x='x') %}{% for i in range(40) %}{% set s.x = s.x ~ s.x %}{% endfor %}{{ s.x }}",
        "byte limit",
    ),
    (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "instructions",
    ),
    // Doubling without a loop or a namespace.
    (
        "{% set x = 'x' * 1000 %}{% set x = x + x %}{% set x = x + x %}{% set x = x + x %}\
         {% set x = x + x %}{% set x = x + x %}{% set x = x + x %}{% set x = x + x %}\
         {% set x = x + x %}{% set x = x + x %}{% set x = x + x %}{% set x = x + x %}\
         {% set x = x + x %}{% set x = x + x %}{% set x = x + x %}{{ x }}",
        "byte limit",
    ),
    ("{{ ('x\n' * 1000) | indent(10000000) }}", "byte limit"),
    (
        "{{ ('ab' * 1000).replace('a', 'a' * 10000) }}",
        "byte limit",
    ),
    (
        "{{ ('ab' * 1000) | replace('a', 'a' * 10000) }}",
        "byte limit",
    ),
    ("{{ (['abcd' * 1000] * 100000) | join(',') }}", "byte limit"),
    // Small values, printed without end.
    (
        "{% for i in range(100000) %}{{ messages[0].content * 1000 }}{% endfor %}",
        "byte limit",
    ),
];

#[test]
fn template_bombs_stop_on_a_limit_quickly() {
    for (source, needle) in BOMBS {
        assert_stopped(source, RenderLimits::default(), needle);
    }
}

#[test]
fn raw_text_in_a_loop_counts_against_the_output_cap() {
    let source = format!(
        "{{% for i in range(100000) %}}{}{{% endfor %}}",
        "y".repeat(1000)
    );
    assert_stopped(&source, RenderLimits::default(), "rendered text");
}

#[test]
fn the_output_cap_is_the_engines_to_set() {
    // 100 KB of output: over a 64 KiB cap (a 1,024-token model), under a 4 MiB one.
    let source = "{% for i in range(100) %}{{ 'z' * 1000 }}{% endfor %}";
    let small = RenderLimits::for_context(1024);
    assert_eq!(small.max_output_bytes, 64 << 10);
    assert_stopped(source, small, "byte limit");
    let (out, _) = render(source, RenderLimits::for_context(32768));
    assert_eq!(out.unwrap().len(), 100_000);
    // Fuel too.
    let loop_ = "{% for i in range(1000) %}.{% endfor %}";
    assert_stopped(loop_, RenderLimits::new(500, 1 << 20), "instructions");
    assert_eq!(
        render(loop_, RenderLimits::new(100_000, 1 << 20))
            .0
            .unwrap()
            .len(),
        1000
    );
}

#[test]
fn loading_a_bomb_only_compiles_it() {
    let start = Instant::now();
    for (source, _) in BOMBS {
        ChatTemplate::new(source, "<s>", "</s>").unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn constants_that_would_fold_into_huge_values_are_refused_at_load() {
    // minijinja folds constant expressions while compiling, before any render-time guard:
    // these are measured, not built (each would take 100 MB to 32 EB).
    let tree = vec!["('x' * 99999999)"; 16].join(" ~ ");
    for source in [
        "{{ 'x' * 100000000 }}".to_string(),
        "{{ 'x' * (1000 * 1000 * 100) }}".to_string(),
        format!("{{{{ {tree} }}}}"),
        "{{ 1 in [0] * 10**18 }}".to_string(),
        "{% if x %}{{ ['ab'] * 10000000 }}{% endif %}".to_string(),
    ] {
        let start = Instant::now();
        match ChatTemplate::new(source.as_str(), "<s>", "</s>") {
            Err(e @ Error::TemplateLimit { .. }) => {
                assert!(e.to_string().contains("constant expressions"), "{e}")
            }
            other => panic!("{source}: expected a limit error, got {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{source}");
    }
    // Small constants fold as before.
    let (out, _) = render("{{ 'ab' * 3 ~ 'c' }}", RenderLimits::default());
    assert_eq!(out.unwrap(), "abababc");
}

#[test]
fn guarded_operations_keep_their_meaning() {
    let source = "{{ 1 + 2 }}|{{ 'a' + 'b' }}|{{ 'ab' * 3 }}|{{ 3 * 'c' }}|{{ 2 * 3.5 }}|\
                  {{ ([1] + [2, 3]) | join('-') }}|{{ [0] * 3 }}|{{ 'x' ~ 1 ~ none }}|\
                  {{ 'a b' | replace(' ', '_') }}|{{ 'a\nb' | indent(2) }}|{{ 'a-b'.replace('-', '+') }}|\
                  {{ {'k': 'v'} | tojson }}|{{ {'k': [1]} | tojson(indent=2) }}|\
                  {{ '%3s|%-4d' | format('a', 7) }}|{{ '{:>4}'.format('b') }}|{% set ns = namespace(n=0) %}\
                  {% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}|\
                  {% macro twice(s) %}{{ s ~ s }}{% endmacro %}{{ twice('ok') }}|\
                  {{ raise_exception is defined }}";
    let (out, _) = render(source, RenderLimits::default());
    // As minijinja renders it unguarded.
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |_: String| ());
    let messages = vec![serde_json::json!({"role": "user", "content": "hi"})];
    let plain = env
        .render_str(source, minijinja::context! { messages => messages })
        .unwrap();
    assert_eq!(out.unwrap(), plain);
    assert_eq!(
        plain,
        "3|ab|ababab|ccc|7.0|1-2-3|[0, 0, 0]|x1None|a_b|a\n  b|a+b|{\"k\":\"v\"}|\
         {\n  \"k\": [\n    1\n  ]\n}|  a|7   |   b|1|okok|True"
    );
}

#[test]
fn a_template_may_not_call_the_guards() {
    let err = ChatTemplate::new("{{ __mixtral_guard_concat }}", "<s>", "</s>").unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
}

#[test]
fn a_namespace_stored_in_a_namespace_is_refused() {
    // Each makes a reference cycle minijinja would never free: memory lost per request.
    for source in [
        "{% set ns = namespace() %}{% set ns.me = ns %}",
        "{% set ns = namespace() %}{% set ns.s = ns, 1 %}",
        "{% set ns = namespace() %}{% set ns.m = {'a': [1, ns]} %}",
        "{% set a = namespace() %}{% set b = namespace() %}{% set a.b = b %}{% set b.a = a %}",
    ] {
        assert_stopped(source, RenderLimits::default(), "namespace");
    }
}

#[test]
fn namespaces_still_hold_lists_maps_and_strings() {
    // What Hugging Face templates store: flags, strings, lists of message maps.
    let source = "{% set ns = namespace(seen=[], flag=false, last='') %}\
                  {% for m in messages %}{% set ns.seen = ns.seen + [m] %}\
                  {% set ns.last = m.content %}{% set ns.flag = true %}{% endfor %}\
                  {{ ns.seen | length }}|{{ ns.seen[0].role }}|{{ ns.last }}|{{ ns.flag }}";
    let (out, _) = render(source, RenderLimits::default());
    assert_eq!(out.unwrap(), "1|user|hi|True");
}
