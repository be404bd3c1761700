//! Poll delivery of SETs (RFC 8936), the plain side: the poll request's
//! JSON body (`maxEvents`, `returnImmediately`, the `ack` of the SETs this
//! receiver processed since the last poll, `setErrs` for those it refused),
//! the transmitter's answer read strictly (`sets`: `jti` → compact SET,
//! `moreAvailable`), and when to poll next ([`Schedule`]: at once while the
//! transmitter has more or acknowledgements are owed, `interval` after the
//! last poll started otherwise, after a doubling backoff while polls fail, with one log line
//! when an outage starts and one when it ends). Each polled SET is then
//! checked by `set::verify` exactly as a pushed one.

use serde_json::{Map, Value};

use super::set::{SetError, MAX_JTI_BYTES};

/// The most SETs one answer may carry (more is a malformed answer).
pub const MAX_SETS: usize = 1000;
/// The first wait after a failed poll; it doubles with each failure.
pub const FIRST_BACKOFF_MS: u64 = 1000;
/// The longest wait after failed polls, unless the interval is longer.
pub const MAX_BACKOFF_MS: u64 = 60_000;

/// What the next poll says: how many SETs it asks for, whether the
/// transmitter may hold it until it has some, and what became of the SETs
/// of the last answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PollRequest<'a> {
    pub max_events: u32,
    pub return_immediately: bool,
    /// `jti`s processed (applied, or seen before), acknowledged.
    pub acks: &'a [String],
    /// `jti`s refused, each with its RFC 8935 error.
    pub errs: &'a [(String, SetError)],
}

impl PollRequest<'_> {
    /// The request's JSON body (RFC 8936 §2.4).
    pub fn body(&self) -> Vec<u8> {
        let mut body = Map::new();
        body.insert("maxEvents".into(), Value::from(self.max_events));
        body.insert(
            "returnImmediately".into(),
            Value::Bool(self.return_immediately),
        );
        if !self.acks.is_empty() {
            let acks = self.acks.iter().map(|j| Value::String(j.clone()));
            body.insert("ack".into(), Value::Array(acks.collect()));
        }
        if !self.errs.is_empty() {
            let mut errs = Map::new();
            for (jti, error) in self.errs {
                let mut object = Map::new();
                object.insert("err".into(), Value::String(error.code.err().into()));
                object.insert(
                    "description".into(),
                    Value::String(error.description.into()),
                );
                errs.insert(jti.clone(), Value::Object(object));
            }
            body.insert("setErrs".into(), Value::Object(errs));
        }
        Value::Object(body).to_string().into_bytes()
    }
}

/// A transmitter's answer to a poll: its SETs by `jti`, and whether it
/// has more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollAnswer {
    pub sets: Vec<(String, String)>,
    pub more_available: bool,
}

/// Why an answer could not be read (a failed poll: nothing is acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerError {
    NotJson,
    NoSets,
    BadMember,
    TooMany,
}

impl AnswerError {
    pub fn describe(self) -> &'static str {
        match self {
            AnswerError::NotJson => "the answer is not a JSON object",
            AnswerError::NoSets => "the answer has no \"sets\" object",
            AnswerError::BadMember => {
                "a SET of the answer is not a string, or its jti is empty or too long"
            }
            AnswerError::TooMany => "the answer has too many SETs",
        }
    }
}

/// Reads a poll's answer (RFC 8936 §2.5). A `jti` key that is empty or
/// longer than a SET's `jti` may be, or a SET that is not a string, makes
/// the whole answer unreadable; each SET is then `set::verify`'s (a SET too
/// large is refused there, like a pushed one).
pub fn parse_answer(body: &[u8]) -> Result<PollAnswer, AnswerError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| AnswerError::NotJson)?;
    let Value::Object(mut object) = value else {
        return Err(AnswerError::NotJson);
    };
    let Some(Value::Object(sets)) = object.remove("sets") else {
        return Err(AnswerError::NoSets);
    };
    if sets.len() > MAX_SETS {
        return Err(AnswerError::TooMany);
    }
    let more_available = match object.remove("moreAvailable") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(more)) => more,
        Some(_) => return Err(AnswerError::BadMember),
    };
    let sets = sets
        .into_iter()
        .map(|(jti, set)| match set {
            Value::String(set) if !jti.is_empty() && jti.len() <= MAX_JTI_BYTES => Ok((jti, set)),
            _ => Err(AnswerError::BadMember),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PollAnswer {
        sets,
        more_available,
    })
}

/// A change the poller's log reports: once when polls start failing, once
/// when they work again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Down,
    Recovered { failures: u32 },
}

/// When to poll next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    interval_ms: u64,
    failures: u32,
}

impl Schedule {
    pub fn new(interval_ms: u64) -> Schedule {
        Schedule {
            interval_ms,
            failures: 0,
        }
    }

    /// After a poll that took `took_ms` answered: at once when the
    /// transmitter has more or the answer brought SETs to acknowledge; else
    /// `interval` after the poll started (at once after a long poll the
    /// transmitter held that long).
    pub fn answered(&mut self, more: bool, owed: bool, took_ms: u64) -> (u64, Option<Note>) {
        let note = (self.failures > 0).then_some(Note::Recovered {
            failures: self.failures,
        });
        self.failures = 0;
        let wait = match more || owed {
            true => 0,
            false => self.interval_ms.saturating_sub(took_ms),
        };
        (wait, note)
    }

    /// After a failed poll: 1 s, doubling, up to the larger of the bound
    /// and the interval; the first failure of an outage is noted.
    pub fn failed(&mut self) -> (u64, Option<Note>) {
        let note = (self.failures == 0).then_some(Note::Down);
        let bound = MAX_BACKOFF_MS.max(self.interval_ms);
        let doubled = FIRST_BACKOFF_MS.saturating_mul(1u64 << self.failures.min(20));
        self.failures = self.failures.saturating_add(1);
        (doubled.min(bound), note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::ssf::set::{self, Code};
    use proptest::prelude::*;

    #[test]
    fn the_request_says_what_to_send_and_what_became_of_the_last_sets() {
        let acks = ["a1".to_string(), "a2".to_string()];
        let errs = [("b1".to_string(), set::REPLAYED)];
        let body = PollRequest {
            max_events: 10,
            return_immediately: true,
            acks: &acks,
            errs: &errs,
        }
        .body();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["maxEvents"], 10);
        assert_eq!(v["returnImmediately"], true);
        assert_eq!(v["ack"], serde_json::json!(["a1", "a2"]));
        assert_eq!(v["setErrs"]["b1"]["err"], "invalid_request");
        assert_eq!(v["setErrs"]["b1"]["description"], set::REPLAYED.description);
        let bare = PollRequest {
            max_events: 1,
            return_immediately: false,
            acks: &[],
            errs: &[],
        }
        .body();
        let v: Value = serde_json::from_slice(&bare).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"maxEvents": 1, "returnImmediately": false})
        );
        assert_eq!(Code::InvalidKey.err(), "invalid_key");
    }

    #[test]
    fn answers_are_read_strictly() {
        let a =
            parse_answer(br#"{"sets":{"j1":"a.b.c","j2":"d.e.f"},"moreAvailable":true}"#).unwrap();
        assert_eq!(
            a.sets,
            vec![
                ("j1".to_string(), "a.b.c".to_string()),
                ("j2".to_string(), "d.e.f".to_string())
            ]
        );
        assert!(a.more_available);
        let empty = parse_answer(br#"{"sets":{}}"#).unwrap();
        assert!(empty.sets.is_empty() && !empty.more_available);
        for (body, error) in [
            (&b"not json"[..], AnswerError::NotJson),
            (b"[]", AnswerError::NotJson),
            (b"{}", AnswerError::NoSets),
            (br#"{"sets":[]}"#, AnswerError::NoSets),
            (br#"{"sets":{"j":1}}"#, AnswerError::BadMember),
            (br#"{"sets":{"":"a.b.c"}}"#, AnswerError::BadMember),
            (
                br#"{"sets":{},"moreAvailable":"yes"}"#,
                AnswerError::BadMember,
            ),
        ] {
            assert_eq!(
                parse_answer(body),
                Err(error),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let long = format!(r#"{{"sets":{{"{}":"x"}}}}"#, "j".repeat(MAX_JTI_BYTES + 1));
        assert_eq!(parse_answer(long.as_bytes()), Err(AnswerError::BadMember));
        let many: Map<String, Value> = (0..=MAX_SETS)
            .map(|i| (format!("j{i}"), Value::String("x".into())))
            .collect();
        let many = serde_json::json!({ "sets": many }).to_string();
        assert_eq!(parse_answer(many.as_bytes()), Err(AnswerError::TooMany));
    }

    #[test]
    fn polls_follow_the_transmitter_and_back_off_when_they_fail() {
        let mut s = Schedule::new(30_000);
        assert_eq!(s.answered(false, false, 0), (30_000, None));
        assert_eq!(s.answered(false, false, 2_000), (28_000, None));
        assert_eq!(s.answered(false, false, 45_000), (0, None));
        assert_eq!(s.answered(true, false, 10), (0, None));
        assert_eq!(s.answered(false, true, 10), (0, None));
        assert_eq!(s.failed(), (1000, Some(Note::Down)));
        assert_eq!(s.failed(), (2000, None));
        assert_eq!(s.failed(), (4000, None));
        for _ in 0..40 {
            s.failed();
        }
        assert_eq!(s.failed(), (60_000, None));
        assert_eq!(
            s.answered(false, false, 0),
            (30_000, Some(Note::Recovered { failures: 44 }))
        );
        assert_eq!(s.failed(), (1000, Some(Note::Down)));
        let mut slow = Schedule::new(300_000);
        for _ in 0..30 {
            slow.failed();
        }
        assert_eq!(slow.failed().0, 300_000);
    }

    proptest! {
        #[test]
        fn any_bytes_are_an_answer_or_an_error(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_answer(&body);
        }

        #[test]
        fn an_answer_round_trips(sets in proptest::collection::btree_map("[a-z0-9-]{1,20}", "[A-Za-z0-9._-]{0,60}", 0..8), more: bool) {
            let object: Map<String, Value> = sets.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            let body = serde_json::json!({"sets": object, "moreAvailable": more}).to_string();
            let answer = parse_answer(body.as_bytes()).unwrap();
            let got: std::collections::BTreeMap<_, _> = answer.sets.into_iter().collect();
            prop_assert_eq!(got, sets);
            prop_assert_eq!(answer.more_available, more);
        }

        #[test]
        fn the_request_carries_every_ack(acks in proptest::collection::vec("[ -~]{1,30}", 0..10), max in 1u32..1000, now: bool) {
            let body = PollRequest { max_events: max, return_immediately: now, acks: &acks, errs: &[] }.body();
            let v: Value = serde_json::from_slice(&body).unwrap();
            let got: Vec<String> = v.get("ack").and_then(Value::as_array).map(|a| a.iter().map(|j| j.as_str().unwrap().to_string()).collect()).unwrap_or_default();
            prop_assert_eq!(got, acks);
            prop_assert_eq!(v["maxEvents"].as_u64(), Some(u64::from(max)));
        }
    }
}
