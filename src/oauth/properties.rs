//! Properties of the parsers that see client and IdP bytes, over generated
//! input: they never panic, and what they remove stays removed.

use proptest::prelude::*;

use crate::oauth::bearer::{self, BearerToken};
use crate::oauth::cache::CachedIntrospection;
use crate::oauth::carriers;
use crate::oauth::claim_rule::ClaimRule;
use crate::oauth::cnf::Confirmation;
use crate::oauth::idp_reply::IdpReply;
use crate::oauth::introspection::{self, ClaimPaths, IntrospectionResult, TokenClaims};
use crate::oauth::named_claims::NamedClaims;
use crate::oauth::trace_context;

/// Query strings and cookie headers built from the characters that matter
/// to their syntax, so that names collide often.
fn query_like() -> impl Strategy<Value = String> {
    "[a-c_%5F+=&.]{0,40}"
}

fn cookie_like() -> impl Strategy<Value = String> {
    "[a-c =;\"]{0,40}"
}

/// Cookie headers as clients send them: duplicates, odd spacing, quoting,
/// empty pairs, pairs without '='. Mostly short pairs and bare ';', so that
/// a header without the withheld cookies, re-joined with "; ", is often
/// exactly as long as the original (a rewrite decided by length fails then).
fn cookie_header() -> impl Strategy<Value = Vec<u8>> {
    let pair = (
        prop_oneof![6 => Just("a"), 2 => Just("t"), 1 => Just("at"), 1 => Just("t2"), 1 => Just("")],
        "[A-Za-z0-9\"]{0,3}",
        prop_oneof![6 => Just("="), 1 => Just(" = "), 1 => Just("")],
    )
        .prop_map(|(name, value, eq)| format!("{name}{eq}{value}"));
    let separator = prop_oneof![8 => Just(";"), 1 => Just("; "), 1 => Just(" ;"), 1 => Just(";;"), 1 => Just(";\t")];
    proptest::collection::vec((pair, separator), 0..40).prop_map(|pairs| {
        pairs
            .into_iter()
            .flat_map(|(pair, sep)| [pair, sep.to_string()])
            .collect::<String>()
            .into_bytes()
    })
}

fn claims() -> impl Strategy<Value = TokenClaims> {
    (
        proptest::option::of(".{0,20}"),
        proptest::option::of(".{0,20}"),
        proptest::option::of(any::<i64>()),
        proptest::collection::vec(proptest::option::of(".{0,10}"), 0..3),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30)),
        confirmation(),
    )
        .prop_map(|(sub, scope, exp, extra, phantom, cnf)| TokenClaims {
            named: NamedClaims::new(sub.as_deref(), scope.as_deref(), None),
            exp,
            checked: extra.clone(),
            extra,
            phantom,
            cnf,
            ..TokenClaims::default()
        })
}

/// Every kind of binding a verdict may carry.
fn confirmation() -> impl Strategy<Value = Confirmation> {
    prop_oneof![
        Just(Confirmation::Unbound),
        Just(Confirmation::Unverifiable),
        (
            proptest::option::of(any::<[u8; 32]>()),
            proptest::option::of(any::<[u8; 32]>())
        )
            .prop_map(|(jkt, x5t_s256)| match (jkt, x5t_s256) {
                (None, None) => Confirmation::Unverifiable,
                (jkt, x5t_s256) => Confirmation::Bound { jkt, x5t_s256 },
            }),
    ]
}

/// A `traceparent` of version 00, valid but for all-zero ids (rare).
fn traceparent() -> impl Strategy<Value = String> {
    "00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}"
}

/// `tracestate` members: valid ones with distinct keys (the index is in
/// the key), and the odd empty one.
fn tracestate_lines() -> impl Strategy<Value = Vec<String>> {
    let member = (
        "[a-z0-9][a-z0-9_*/@-]{0,6}",
        "[ -+\\--<>-~]{0,10}[!-+\\--<>-~]",
        "[ \t]{0,1}",
    );
    proptest::collection::vec(member, 0..12).prop_map(|members| {
        members
            .into_iter()
            .enumerate()
            .map(|(i, (key, value, ows))| match i % 7 {
                6 => ows.to_string(),
                _ => format!("{ows}{key}{i}={value}{ows}"),
            })
            .collect()
    })
}

fn exposed_claims_are_header_safe(claims: &TokenClaims) -> bool {
    claims
        .named
        .all()
        .into_iter()
        .chain(claims.extra.iter().map(Option::as_deref))
        .flatten()
        .all(crate::oauth::claims::is_header_safe)
}

proptest! {
    #[test]
    fn a_removed_query_parameter_is_not_found_again(args in query_like(), name in "[a-c_]{1,3}") {
        let kept = carriers::query_without(args.as_bytes(), name.as_bytes());
        prop_assert_eq!(carriers::query_value(&kept, name.as_bytes()), None);
        prop_assert!(!kept.starts_with(b"&") && !kept.ends_with(b"&"));
    }

    #[test]
    fn a_removed_cookie_is_not_found_again(header in cookie_like(), name in "[a-c]{1,2}") {
        let kept = carriers::cookie_without(header.as_bytes(), name.as_bytes());
        prop_assert_eq!(carriers::cookie_value(&kept, name.as_bytes()), None);
    }

    #[test]
    fn no_withheld_cookie_survives_the_rewrite(header in cookie_header()) {
        let withheld = carriers::Withheld {
            cookies: vec![&b"t"[..], b"at"],
            ..carriers::Withheld::default()
        };
        let upstream = match withheld.edit_header(b"Cookie", &header) {
            carriers::HeaderEdit::Keep => header.clone(),
            carriers::HeaderEdit::Rewrite(rest) => rest,
            carriers::HeaderEdit::Remove => Vec::new(),
        };
        for name in [&b"t"[..], b"at"] {
            prop_assert_eq!(carriers::cookie_value(&upstream, name), None);
        }
        // The other cookies reach the upstream, in order.
        let others = |h: &[u8]| carriers::cookie_without(&carriers::cookie_without(h, b"t"), b"at");
        prop_assert_eq!(others(&header), others(&upstream));
    }

    #[test]
    fn no_withheld_query_parameter_survives(args in query_like(), path in "/[a-z%0-9]{0,8}") {
        let withheld = carriers::Withheld {
            queries: vec![&b"a"[..], b"b_c"],
            ..carriers::Withheld::default()
        };
        let kept = withheld.query(args.as_bytes());
        let upstream_args = kept.clone().unwrap_or_else(|| args.clone().into_bytes());
        for name in [&b"a"[..], b"b_c"] {
            prop_assert_eq!(carriers::query_value(&upstream_args, name), None);
        }
        let uri = carriers::uri_with_args(format!("{path}?{args}").as_bytes(), &upstream_args);
        prop_assert!(uri.starts_with(path.as_bytes()));
        prop_assert_eq!(&uri[path.len()..], match upstream_args.is_empty() {
            true => Vec::new(),
            false => [&b"?"[..], &upstream_args].concat(),
        });
    }

    #[test]
    fn a_present_token_is_a_b64token(value in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let BearerToken::Present(t) = bearer::from_authorization(&[&value]) {
            prop_assert!(bearer::is_b64token(t));
        }
        if let BearerToken::Present(t) = carriers::raw_token(&value) {
            prop_assert!(bearer::is_b64token(t));
        }
    }

    #[test]
    fn idp_answers_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..200),
        status in prop_oneof![Just(200usize), Just(204), Just(401), Just(500)],
        content_type in prop_oneof![
            Just("application/json"),
            Just("application/jwt"),
            Just("application/token-introspection+jwt"),
            Just("text/html")
        ],
    ) {
        let paths =
            ClaimPaths { rendered: vec!["a.b".into()], checked: vec!["c".into()], marks: false };
        let reply = IdpReply::new(0, status, &body).with_content_type(content_type.as_bytes());
        if let Ok(IntrospectionResult::Active(claims)) = introspection::interpret(reply, &paths) {
            prop_assert!(exposed_claims_are_header_safe(&claims));
        }
        if let Ok(IntrospectionResult::Active(claims)) = introspection::interpret_phantom(reply, &paths) {
            prop_assert!(exposed_claims_are_header_safe(&claims));
            prop_assert!(claims.phantom.is_some_and(|jwt| bearer::is_b64token(&jwt)));
        }
    }

    #[test]
    fn string_claims_with_any_characters_never_reach_a_variable_unsafe(
        sub in "\\PC{0,4}[\\x00-\\x1f\\x7f]?\\PC{0,4}",
        name in "[\\x00-\\x7f]{0,8}",
    ) {
        let paths = ClaimPaths { rendered: vec!["name".into()], checked: vec![], marks: false };
        let body = serde_json::json!({"active": true, "sub": sub, "name": name}).to_string();
        match introspection::interpret(IdpReply::new(0, 200, body.as_bytes()), &paths) {
            Ok(IntrospectionResult::Active(claims)) => prop_assert!(exposed_claims_are_header_safe(&claims)),
            Ok(IntrospectionResult::Inactive) => prop_assert!(false, "active answer read as inactive"),
            Err(failure) => prop_assert!(matches!(failure, introspection::IdpFailure::UnsafeClaim(_))),
        }
    }

    #[test]
    fn cache_entries_round_trip(claims in claims(), junk in proptest::collection::vec(any::<u8>(), 0..60)) {
        let result = IntrospectionResult::Active(claims);
        prop_assert_eq!(CachedIntrospection::decode(&CachedIntrospection::encode(&result)), Some(result));
        let _ = CachedIntrospection::decode(&junk);
    }

    #[test]
    fn claim_rules_never_panic(json in ".{0,30}", values in proptest::collection::vec("[a-z0-9]{1,4}", 1..3)) {
        for kind in ["string", "integer", "boolean", "array", "delimited"] {
            let mut args: Vec<&[u8]> = vec![b"c", kind.as_bytes()];
            args.extend(values.iter().map(|v| v.as_bytes()));
            if let Ok(rule) = ClaimRule::parse(&args) {
                let _ = rule.is_met_by_json(Some(&json));
            }
        }
    }

    #[test]
    fn valid_trace_contexts_go_through_unchanged(tp in traceparent(), lines in tracestate_lines()) {
        let ids_zero = tp[3..35].bytes().all(|b| b == b'0') || tp[36..52].bytes().all(|b| b == b'0');
        prop_assert_eq!(trace_context::is_valid_traceparent(tp.as_bytes()), !ids_zero);
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        let forward = trace_context::to_forward(&[tp.as_bytes()], &lines);
        prop_assert_eq!(forward.is_some(), !ids_zero);
        if let Some(forward) = forward {
            prop_assert_eq!(forward.traceparent, tp.as_bytes());
            let joined = lines.join(&b","[..]);
            let has_member = joined.contains(&b'=');
            prop_assert_eq!(forward.tracestate.as_deref(), has_member.then_some(&joined[..]));
        }
    }

    #[test]
    fn a_traceparent_with_one_byte_changed_is_refused(tp in traceparent(), at in 0usize..55, byte in any::<u8>()) {
        let mut changed = tp.clone().into_bytes();
        let dash = matches!(at, 2 | 35 | 52);
        let same_class = changed[at] != byte && match dash {
            true => byte == b'-',
            false => byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte),
        };
        changed[at] = byte;
        if !same_class && changed != tp.as_bytes() {
            prop_assert!(!trace_context::is_valid_traceparent(&changed));
        }
    }

    #[test]
    fn whatever_the_client_sends_what_goes_on_is_small_and_printable(
        tp in prop_oneof![traceparent().prop_map(String::into_bytes), proptest::collection::vec(any::<u8>(), 50..60)],
        lines in prop_oneof![
            tracestate_lines().prop_map(|lines| lines.into_iter().map(String::into_bytes).collect::<Vec<_>>()),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..4),
        ],
        insert in proptest::option::of((any::<usize>(), any::<usize>(), any::<u8>())),
    ) {
        // A valid list with one byte slipped in somewhere, now and then.
        let mut lines = lines;
        if let Some((line, at, byte)) = insert.filter(|_| !lines.is_empty()) {
            let count = lines.len();
            let line = &mut lines[line % count];
            line.insert(at % (line.len() + 1), byte);
        }
        let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        if let Some(forward) = trace_context::to_forward(&[&tp], &lines) {
            prop_assert!(trace_context::is_valid_traceparent(forward.traceparent));
            prop_assert!(forward.traceparent.iter().all(|b| (0x21..=0x7e).contains(b)));
            if let Some(state) = forward.tracestate {
                prop_assert!(state.len() <= trace_context::MAX_TRACESTATE_BYTES);
                prop_assert!(state.iter().all(|b| *b == b'\t' || (0x20..=0x7e).contains(b)));
                prop_assert!(trace_context::tracestate_members(&state).is_some_and(|n| n > 0));
            }
        }
    }
}
