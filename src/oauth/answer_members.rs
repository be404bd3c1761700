//! The members of an introspection answer read in one pass over its JSON
//! (`oauth/introspection.rs`): the usual ones as they arrive, without a
//! `serde_json::Value` in between, and the whole object for configured
//! claim paths, checked for deciding members given twice as it is read.
//! Each accepts exactly the answers the `Value` readings before it did and
//! gives them the same meaning (their oracle test, in introspection.rs).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// What a member read as it arrives keeps: scalars directly; arrays and
/// objects become the `Value` they are, so that exactly the answers a
/// `Value` accepts are accepted, with the same meaning.
pub(crate) trait Member: Sized {
    fn of_value(value: Value) -> Self;
    fn of_str(text: &str) -> Self;
    fn of_string(text: String) -> Self;
}

struct MemberVisitor<T>(PhantomData<T>);

impl<'de, T: Member> Visitor<'de> for MemberVisitor<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        Ok(T::of_value(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Ok(T::of_value(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok(T::of_value(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Ok(T::of_value(Value::from(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok(T::of_str(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<T, E> {
        Ok(T::of_string(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::of_value(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(T::of_value)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(T::of_value)
    }
}

/// `Deserialize` for a [`Member`], through [`MemberVisitor`].
macro_rules! member_deserialize {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(MemberVisitor(PhantomData))
            }
        }
    )*};
}
member_deserialize!(Active, ClaimText, NumericDate);

/// `active`: its boolean, or `None` for any other value.
pub(crate) struct Active(pub Option<bool>);

impl Member for Active {
    fn of_value(value: Value) -> Self {
        Active(value.as_bool())
    }
    fn of_str(_: &str) -> Self {
        Active(None)
    }
    fn of_string(_: String) -> Self {
        Active(None)
    }
}

/// A claim kept as text ([`claim_text`], a string moved); whether it was a JSON
/// string matters to the revocation marks.
pub(crate) enum ClaimText {
    String(String),
    Other(Option<String>),
}

impl ClaimText {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            ClaimText::String(text) => Some(text),
            ClaimText::Other(_) => None,
        }
    }

    /// The claim as variable text: a string as it is, another value rendered.
    pub(crate) fn as_text(&self) -> Option<&str> {
        match self {
            ClaimText::String(text) => Some(text),
            ClaimText::Other(text) => text.as_deref(),
        }
    }
}

impl Member for ClaimText {
    fn of_value(value: Value) -> Self {
        match value {
            Value::String(text) => ClaimText::String(text),
            other => ClaimText::Other(claim_text(&other)),
        }
    }
    fn of_str(text: &str) -> Self {
        ClaimText::String(text.to_owned())
    }
    fn of_string(text: String) -> Self {
        ClaimText::String(text)
    }
}

/// [`numeric_date`] of a member as it arrives.
pub(crate) struct NumericDate(pub Option<i64>);

impl Member for NumericDate {
    fn of_value(value: Value) -> Self {
        NumericDate(numeric_date(&value))
    }
    fn of_str(text: &str) -> Self {
        NumericDate(text.parse().ok())
    }
    fn of_string(text: String) -> Self {
        NumericDate(text.parse().ok())
    }
}

/// The members that decide a verdict (`introspection::DecidingMembers`),
/// by their JSON names.
pub(crate) const DECIDING: [&str; 12] = [
    "active",
    "jwt",
    "sub",
    "scope",
    "client_id",
    "exp",
    "cnf",
    "iss",
    "iat",
    "sid",
    "email",
    "jti",
];

/// A JSON object read in one pass as a map is, refused when a deciding
/// member is given twice: the answers that read as a map and as
/// `introspection::DecidingMembers` both.
struct DecidingMap(Map<String, Value>);

impl<'de> Deserialize<'de> for DecidingMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(DecidingMapVisitor)
    }
}

struct DecidingMapVisitor;

impl<'de> Visitor<'de> for DecidingMapVisitor {
    type Value = DecidingMap;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<DecidingMap, A::Error> {
        let (mut map, mut seen) = (Map::new(), 0u16);
        while let Some((name, value)) = access.next_entry::<String, Value>()? {
            if let Some(i) = DECIDING.iter().position(|member| *member == name) {
                if seen & 1 << i != 0 {
                    return Err(de::Error::custom("a deciding member given twice"));
                }
                seen |= 1 << i;
            }
            map.insert(name, value);
        }
        Ok(DecidingMap(map))
    }
}

/// The members of a JSON object `body` none of whose [`DECIDING`] members
/// is given twice; `None` for anything else.
pub(crate) fn deciding_map(body: &[u8]) -> Option<Map<String, Value>> {
    from_json(body).ok().map(|DecidingMap(map)| map)
}

/// `serde_json::from_slice`, faster: a body that is UTF-8 throughout (as
/// answers are) is checked once, not string by string. Either way the same
/// documents are read the same way: only where the bytes are checked
/// differs, and a string in a member nobody reads is still not checked.
pub(crate) fn from_json<'de, T: Deserialize<'de>>(body: &'de [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// Strings as they are, other JSON values as compact JSON text, null as absent.
pub(crate) fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// RFC 7519 NumericDate: seconds, possibly fractional; a numeric string is tolerated.
pub(crate) fn numeric_date(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}
