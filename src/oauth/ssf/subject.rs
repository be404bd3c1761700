//! Subject identifiers (RFC 9493, and the `complex` form of SSF 1.0 §3):
//! who an event is about. Only the formats a gateway can match with a
//! token's claims become [`Target`]s; the others are read and left alone.

use serde_json::{Map, Value};

use super::Kind;

/// The longest identifier value kept (a `sub`, a session id, an address).
pub const MAX_VALUE_BYTES: usize = 1024;
/// How deep `complex` and `aliases` may nest (a `complex` whose `user` is
/// `aliases` is two).
const MAX_DEPTH: usize = 2;
/// The most identifiers one `aliases` list may hold.
const MAX_ALIASES: usize = 8;

/// Why a subject identifier is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("subject identifier is not an object with a string \"format\"")]
    NotAnIdentifier,
    #[error("subject identifier of format \"{0}\" lacks a member or has a wrong one")]
    BadMember(&'static str),
    #[error("subject identifier nests too deep or lists too many aliases")]
    TooComplex,
}

/// A subject a token's claims can be matched against: a user (`iss_sub`,
/// `opaque`, `email`) or a session or one token (`jwt_id`). `issuer` is
/// the identifier's own `iss` where it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub issuer: Option<String>,
    pub value: String,
}

/// An identifier read: the users it names and the sessions it names
/// (a `complex` with both names one session of one user).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub users: Vec<Target>,
    pub sessions: Vec<Target>,
    /// Identifiers of a format not matched with tokens (`account`, `did`,
    /// `phone_number`, `uri`, a `complex`'s `device`, ...).
    pub unmatched: usize,
}

/// Reads one subject identifier.
pub fn parse(value: &Value) -> Result<Subject, SubjectError> {
    let mut subject = Subject::default();
    read(value, Role::User, 0, &mut subject)?;
    Ok(subject)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Session,
}

fn read(value: &Value, role: Role, depth: usize, out: &mut Subject) -> Result<(), SubjectError> {
    let Value::Object(id) = value else {
        return Err(SubjectError::NotAnIdentifier);
    };
    let Some(Value::String(format)) = id.get("format") else {
        return Err(SubjectError::NotAnIdentifier);
    };
    let target = |kind, issuer: Option<String>, value: String| Target {
        kind: match (role, kind) {
            (Role::Session, Kind::Subject) => Kind::Session,
            (_, kind) => kind,
        },
        issuer,
        value,
    };
    let found = match format.as_str() {
        "iss_sub" => target(
            Kind::Subject,
            Some(text(id, "iss", "iss_sub")?),
            text(id, "sub", "iss_sub")?,
        ),
        "opaque" => target(Kind::Subject, None, text(id, "id", "opaque")?),
        "email" => target(Kind::Email, None, text(id, "email", "email")?),
        "jwt_id" => target(
            Kind::TokenId,
            Some(text(id, "iss", "jwt_id")?),
            text(id, "jti", "jwt_id")?,
        ),
        "complex" => return complex(id, depth, out),
        "aliases" => return aliases(id, role, depth, out),
        _ => {
            out.unmatched += 1;
            return Ok(());
        }
    };
    match (role, found.kind) {
        (_, Kind::TokenId) | (Role::User, _) => out.users.push(found),
        (Role::Session, _) => out.sessions.push(found),
    }
    Ok(())
}

/// SSF 1.0 §3.2's complex subject: `user` and `session` read; the other
/// members (`device`, `application`, `tenant`, ...) are not matched.
fn complex(id: &Map<String, Value>, depth: usize, out: &mut Subject) -> Result<(), SubjectError> {
    if depth >= MAX_DEPTH {
        return Err(SubjectError::TooComplex);
    }
    let mut any = false;
    for (name, member) in id {
        match name.as_str() {
            "format" => continue,
            "user" => read(member, Role::User, depth + 1, out)?,
            "session" => read(member, Role::Session, depth + 1, out)?,
            _ => out.unmatched += 1,
        }
        any = true;
    }
    match any {
        true => Ok(()),
        false => Err(SubjectError::BadMember("complex")),
    }
}

/// RFC 9493 §3.2.2: several identifiers of one subject.
fn aliases(
    id: &Map<String, Value>,
    role: Role,
    depth: usize,
    out: &mut Subject,
) -> Result<(), SubjectError> {
    let Some(Value::Array(list)) = id.get("identifiers") else {
        return Err(SubjectError::BadMember("aliases"));
    };
    if depth >= MAX_DEPTH || list.len() > MAX_ALIASES {
        return Err(SubjectError::TooComplex);
    }
    if list.is_empty() {
        return Err(SubjectError::BadMember("aliases"));
    }
    for member in list {
        // RFC 9493 §3.2.2: an alias is never itself `aliases`.
        if member.get("format").and_then(Value::as_str) == Some("aliases") {
            return Err(SubjectError::BadMember("aliases"));
        }
        read(member, role, depth + 1, out)?;
    }
    Ok(())
}

fn text(id: &Map<String, Value>, name: &str, format: &'static str) -> Result<String, SubjectError> {
    match id.get(name) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_VALUE_BYTES => Ok(s.clone()),
        _ => Err(SubjectError::BadMember(format)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(kind: Kind, issuer: Option<&str>, value: &str) -> Target {
        Target {
            kind,
            issuer: issuer.map(str::to_string),
            value: value.to_string(),
        }
    }

    #[test]
    fn the_simple_formats_name_a_user_or_a_token() {
        let s = parse(&json!({"format": "iss_sub", "iss": "https://idp", "sub": "alice"})).unwrap();
        assert_eq!(s.users, [user(Kind::Subject, Some("https://idp"), "alice")]);
        let s = parse(&json!({"format": "opaque", "id": "x1"})).unwrap();
        assert_eq!(s.users, [user(Kind::Subject, None, "x1")]);
        let s = parse(&json!({"format": "email", "email": "a@example.com"})).unwrap();
        assert_eq!(s.users, [user(Kind::Email, None, "a@example.com")]);
        let s = parse(&json!({"format": "jwt_id", "iss": "i", "jti": "t1"})).unwrap();
        assert_eq!(s.users, [user(Kind::TokenId, Some("i"), "t1")]);
        assert!(s.sessions.is_empty());
    }

    #[test]
    fn a_complex_subject_names_a_session_of_a_user() {
        let s = parse(&json!({
            "format": "complex",
            "user": {"format": "iss_sub", "iss": "i", "sub": "alice"},
            "session": {"format": "opaque", "id": "s-1"},
            "device": {"format": "opaque", "id": "d"}
        }))
        .unwrap();
        assert_eq!(s.users, [user(Kind::Subject, Some("i"), "alice")]);
        assert_eq!(s.sessions, [user(Kind::Session, None, "s-1")]);
        assert_eq!(s.unmatched, 1);
    }

    #[test]
    fn aliases_name_every_identifier_they_list() {
        let s = parse(&json!({"format": "aliases", "identifiers": [
            {"format": "email", "email": "a@x"},
            {"format": "phone_number", "phone_number": "+1"},
            {"format": "opaque", "id": "a"}
        ]}))
        .unwrap();
        assert_eq!(s.users.len(), 2);
        assert_eq!(s.unmatched, 1);
    }

    #[test]
    fn other_formats_are_read_and_left_alone() {
        let s = parse(&json!({"format": "account", "uri": "acct:a@x"})).unwrap();
        assert_eq!(
            s,
            Subject {
                unmatched: 1,
                ..Subject::default()
            }
        );
    }

    #[test]
    fn malformed_identifiers_are_refused() {
        for bad in [
            json!("alice"),
            json!({"sub": "alice"}),
            json!({"format": 1}),
            json!({"format": "iss_sub", "sub": "alice"}),
            json!({"format": "iss_sub", "iss": "i", "sub": ""}),
            json!({"format": "iss_sub", "iss": "i", "sub": 7}),
            json!({"format": "opaque"}),
            json!({"format": "email", "email": null}),
            json!({"format": "jwt_id", "jti": "x"}),
            json!({"format": "complex"}),
            json!({"format": "complex", "user": "alice"}),
            json!({"format": "aliases", "identifiers": []}),
            json!({"format": "aliases", "identifiers": [{"format": "aliases", "identifiers": []}]}),
            json!({"format": "opaque", "id": "x".repeat(MAX_VALUE_BYTES + 1)}),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
        let deep = json!({"format": "complex", "user": {"format": "complex",
            "user": {"format": "complex", "user": {"format": "opaque", "id": "a"}}}});
        assert_eq!(parse(&deep), Err(SubjectError::TooComplex));
        let many: Vec<Value> = (0..9)
            .map(|i| json!({"format": "opaque", "id": i.to_string()}))
            .collect();
        assert_eq!(
            parse(&json!({"format": "aliases", "identifiers": many})),
            Err(SubjectError::TooComplex)
        );
    }
}
