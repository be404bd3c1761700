//! What can go wrong with a call to the Redis tier (plain): the kinds, what
//! the error log says about each, which metric counts it, and how a call
//! that ended without replies is told apart by nginx's codes. The log lines
//! themselves (at most one per kind every 10 s per worker, never a token,
//! key name or password) are written by `redis/call.rs`.

use crate::metrics::SharedFailure;
use crate::redis::resp::{self, Reply};

/// Why a Redis call gave no answer. Each is a miss for the request, which
/// goes on to the IdP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection (refused, unreachable, closed before the replies).
    Connect,
    /// Connect, send or read timeout.
    Timeout,
    /// Garbage, or replies larger than `auth_oauth2_token_redis_buffer_size`.
    Protocol,
    /// `AUTH` or `SELECT` failed, or the caller reports an `-ERR` reply to
    /// its own commands: the error's first word (`NOAUTH`, `WRONGPASS`,
    /// `READONLY`, `OOM`, ...).
    ErrorReply(String),
    /// A value that did not open, or opened to an answer that fails the
    /// checks a fresh one gets (the caller's to report).
    Undecryptable,
    /// Redis Cluster sent the call elsewhere once too often, or somewhere
    /// not to follow (another slot, an address that is not an IP address
    /// and port): `redis/cluster.rs`.
    Redirected,
    /// The subrequest could not run (no memory, a URI that is not a
    /// location with `auth_oauth2_token_redis_pass`, ...): nginx's status.
    Internal(u16),
    /// Redis' certificate failed the checks of
    /// `auth_oauth2_token_redis_ssl_verify` (why, in OpenSSL's words, or
    /// the name it does not carry): nothing was sent on the connection.
    Tls(String),
}

/// How many kinds there are: one log gate slot each.
pub const KINDS: usize = 8;

/// Seconds between two log lines about one kind of failure.
pub const LOG_INTERVAL_S: u64 = 10;

/// nginx's `NGX_HTTP_BAD_GATEWAY` and `NGX_HTTP_GATEWAY_TIME_OUT` (the glue
/// checks that they agree).
pub const BAD_GATEWAY: isize = 502;
pub const GATEWAY_TIME_OUT: isize = 504;

impl Failure {
    /// The failure of a call whose subrequest ended without replies:
    /// whether the module's deadline passed, the code nginx finalized the
    /// subrequest with, and the subrequest's status.
    pub fn of_ending(deadline_passed: bool, rc: isize, status: usize) -> Failure {
        match rc {
            _ if deadline_passed => Failure::Timeout,
            GATEWAY_TIME_OUT => Failure::Timeout,
            BAD_GATEWAY => Failure::Connect,
            rc if rc >= 300 => Failure::Internal(u16::try_from(rc).unwrap_or(500)),
            _ if status >= 300 => Failure::Internal(u16::try_from(status).unwrap_or(500)),
            _ => Failure::Internal(500),
        }
    }

    /// The failure an `-ERR` reply to the caller's own commands stands for,
    /// `None` for any other reply.
    pub fn of_reply(reply: &Reply) -> Option<Failure> {
        match reply {
            Reply::Error(text) => Some(Failure::ErrorReply(resp::error_kind(text).to_owned())),
            _ => None,
        }
    }

    /// Its slot in the log gate, below [`KINDS`].
    pub fn slot(&self) -> usize {
        match self {
            Failure::Connect => 0,
            Failure::Timeout => 1,
            Failure::Protocol => 2,
            Failure::ErrorReply(_) => 3,
            Failure::Undecryptable => 4,
            Failure::Internal(_) => 5,
            Failure::Tls(_) => 6,
            Failure::Redirected => 7,
        }
    }

    /// Its label in `oauth2_token_shared_cache_failures_total`.
    pub fn metric(&self) -> SharedFailure {
        match self {
            Failure::Connect => SharedFailure::Connect,
            Failure::Timeout => SharedFailure::Timeout,
            Failure::Protocol => SharedFailure::Protocol,
            Failure::ErrorReply(_) => SharedFailure::ErrorReply,
            Failure::Undecryptable => SharedFailure::Undecryptable,
            Failure::Internal(_) => SharedFailure::Internal,
            Failure::Tls(_) => SharedFailure::Tls,
            Failure::Redirected => SharedFailure::Redirect,
        }
    }

    /// The error-log line about it (its words are the historical ones:
    /// tests and operators' alerts look for "shared cache (Redis)").
    pub fn log_line(&self) -> String {
        let (kind, detail) = match self {
            Failure::Connect => ("connect", "no connection to the server".into()),
            Failure::Timeout => ("timeout", "no answer within the timeouts".into()),
            Failure::Protocol => (
                "protocol",
                "unreadable replies, or larger than auth_oauth2_token_redis_buffer_size".into(),
            ),
            Failure::ErrorReply(kind) => ("error reply", format!("-{kind}")),
            Failure::Undecryptable => (
                "undecryptable value",
                "a value that does not open with the fleet keys, or fails the checks of a fresh answer".into(),
            ),
            Failure::Redirected => (
                "redirect",
                "Redis Cluster redirected the call more than 3 times, or to no usable node".into(),
            ),
            Failure::Internal(status) => (
                "internal",
                format!("the subrequest ended with status {status}"),
            ),
            Failure::Tls(why) => ("tls", format!("Redis' certificate: {why}")),
        };
        format!(
            "auth_oauth2_token: shared cache (Redis) {kind}: {detail}; requests go on to the IdP"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_ended_without_replies() {
        let cases = [
            // The module's deadline passed: whatever nginx says next.
            ((true, 0, 0), Failure::Timeout),
            ((true, 502, 0), Failure::Timeout),
            ((true, 500, 200), Failure::Timeout),
            // nginx's upstream gave up.
            ((false, 504, 0), Failure::Timeout),
            ((false, 502, 0), Failure::Connect),
            ((false, 502, 404), Failure::Connect),
            // Anything else is the subrequest's own trouble.
            ((false, 500, 0), Failure::Internal(500)),
            ((false, 404, 0), Failure::Internal(404)),
            ((false, 300, 0), Failure::Internal(300)),
            ((false, 70_000, 0), Failure::Internal(500)),
            ((false, 0, 404), Failure::Internal(404)),
            ((false, -1, 503), Failure::Internal(503)),
            ((false, 0, 70_000), Failure::Internal(500)),
            ((false, 0, 200), Failure::Internal(500)),
            ((false, -1, 0), Failure::Internal(500)),
        ];
        for ((passed, rc, status), expected) in cases {
            assert_eq!(
                Failure::of_ending(passed, rc, status),
                expected,
                "deadline passed {passed}, rc {rc}, status {status}"
            );
        }
    }

    #[test]
    fn error_replies_are_failures_and_other_replies_are_not() {
        assert_eq!(
            Failure::of_reply(&Reply::Error(b"READONLY You can't write".to_vec())),
            Some(Failure::ErrorReply("READONLY".into()))
        );
        assert_eq!(
            Failure::of_reply(&Reply::Error(b"lower case".to_vec())),
            Some(Failure::ErrorReply("ERR".into()))
        );
        for reply in [
            Reply::Integer(1),
            Reply::Status(b"OK".to_vec()),
            Reply::Bulk(None),
            Reply::Array(None),
        ] {
            assert_eq!(Failure::of_reply(&reply), None);
        }
    }

    #[test]
    fn every_kind_has_its_own_slot_metric_and_line() {
        let all = [
            Failure::Connect,
            Failure::Timeout,
            Failure::Protocol,
            Failure::ErrorReply("OOM".into()),
            Failure::Undecryptable,
            Failure::Internal(500),
            Failure::Tls("certificate has expired".into()),
            Failure::Redirected,
        ];
        let mut slots: Vec<usize> = all.iter().map(Failure::slot).collect();
        slots.dedup();
        assert_eq!(slots, (0..KINDS).collect::<Vec<_>>());
        let metrics: Vec<SharedFailure> = all.iter().map(Failure::metric).collect();
        assert_eq!(
            metrics,
            [
                SharedFailure::Connect,
                SharedFailure::Timeout,
                SharedFailure::Protocol,
                SharedFailure::ErrorReply,
                SharedFailure::Undecryptable,
                SharedFailure::Internal,
                SharedFailure::Tls,
                SharedFailure::Redirect,
            ]
        );
        assert_eq!(
            Failure::Tls("certificate has expired".into()).log_line(),
            "auth_oauth2_token: shared cache (Redis) tls: Redis' certificate: certificate has expired; requests go on to the IdP"
        );
        assert_eq!(
            Failure::ErrorReply("OOM".into()).log_line(),
            "auth_oauth2_token: shared cache (Redis) error reply: -OOM; requests go on to the IdP"
        );
        assert_eq!(
            Failure::Internal(404).log_line(),
            "auth_oauth2_token: shared cache (Redis) internal: the subrequest ended with status 404; requests go on to the IdP"
        );
    }
}
