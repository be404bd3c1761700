//! What can go wrong with the shared tier, and the error-log lines about
//! it: at most one per kind every 10 s per worker, never per request, never
//! a token, key name or password.

use core::cell::RefCell;

use ngx::ffi::{ngx_log_t, NGX_LOG_ERR};

use ngx::http::HttpModuleMainConf;

use crate::metrics::{Catalogue, SharedFailure};
use crate::module::Module;
use crate::redis::resp::{self, Reply};
use crate::resilience::log_gate::LogGate;

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
    /// A value that did not open (the caller's to report).
    Undecryptable,
    /// The subrequest could not run (no memory, a URI that is not a
    /// location with `auth_oauth2_token_redis_pass`, ...): nginx's status.
    Internal(u16),
}

/// The kinds, one log gate slot each.
const KINDS: usize = 6;

/// Seconds between two lines about one kind of failure.
const LOG_INTERVAL_S: u64 = 10;

impl Failure {
    fn slot(&self) -> usize {
        match self {
            Failure::Connect => 0,
            Failure::Timeout => 1,
            Failure::Protocol => 2,
            Failure::ErrorReply(_) => 3,
            Failure::Undecryptable => 4,
            Failure::Internal(_) => 5,
        }
    }

    /// The log line's kind and detail.
    fn describe(&self) -> (&'static str, String) {
        match self {
            Failure::Connect => ("connect", "no connection to the server".into()),
            Failure::Timeout => ("timeout", "no answer within the timeouts".into()),
            Failure::Protocol => (
                "protocol",
                "unreadable replies, or larger than auth_oauth2_token_redis_buffer_size".into(),
            ),
            Failure::ErrorReply(kind) => ("error reply", format!("-{kind}")),
            Failure::Undecryptable => (
                "undecryptable value",
                "a value that does not open with the fleet keys".into(),
            ),
            Failure::Internal(status) => (
                "internal",
                format!("the subrequest ended with status {status}"),
            ),
        }
    }
}

thread_local! {
    /// This worker's gate (nginx runs the module on one thread per worker).
    static GATE: RefCell<LogGate<KINDS>> = RefCell::new(LogGate::default());
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Logs `failure` at `error`, unless a line about the same kind was logged
/// by this worker in the last 10 s.
pub fn note_failure(log: *mut ngx_log_t, failure: &Failure) {
    count(failure);
    let allowed = GATE.with(|gate| {
        gate.borrow_mut()
            .allow(failure.slot(), now_s(), LOG_INTERVAL_S)
    });
    if !allowed || log.is_null() {
        return;
    }
    let (kind, detail) = failure.describe();
    ngx::ngx_log_error!(
        NGX_LOG_ERR,
        log,
        "auth_oauth2_token: shared cache (Redis) {kind}: {detail}; requests go on to the IdP"
    );
}

/// Counts `failure` in `oauth2_token_shared_cache_failures_total`.
fn count(failure: &Failure) {
    let kind = match failure {
        Failure::Connect => SharedFailure::Connect,
        Failure::Timeout => SharedFailure::Timeout,
        Failure::Protocol => SharedFailure::Protocol,
        Failure::ErrorReply(_) => SharedFailure::ErrorReply,
        Failure::Undecryptable => SharedFailure::Undecryptable,
        Failure::Internal(_) => SharedFailure::Internal,
    };
    // SAFETY: a worker's cycle is set up before any request or event runs;
    // the main conf lives as long as the cycle.
    if let Some(main) = unsafe { Module::main_conf(&*ngx::ffi::ngx_cycle) } {
        main.counters.add(Catalogue::shared_failure(kind), 1);
    }
}

/// The failure an `-ERR` reply to the caller's own commands stands for,
/// `None` for any other reply: `note_failure(log, &f)` logs it.
pub fn error_reply(reply: &Reply) -> Option<Failure> {
    match reply {
        Reply::Error(text) => Some(Failure::ErrorReply(resp::error_kind(text).to_owned())),
        _ => None,
    }
}
