//! An IdP call that gave no usable answer, whatever was asked: the failure
//! every kind of call shares, embedded in each kind's own error
//! (`IdpFailure`, `ExchangeFailure`, and the kinds to come).

use crate::oauth::idp_reply::Transport;

/// The call gave no answer that could be read at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    Timeout,
    Unreachable,
    /// Cut short, or larger than `subrequest_output_buffer_size`.
    Incomplete,
    /// The answer's size and the limit for this kind of answer.
    TooLarge(usize, usize),
    NotJson,
    /// The endpoint's circuit breaker is open: not asked; seconds to wait.
    BreakerOpen(u64),
}

impl CallFailure {
    pub fn from_transport(t: Transport, limit: usize) -> CallFailure {
        match t {
            Transport::Timeout => CallFailure::Timeout,
            Transport::Unreachable => CallFailure::Unreachable,
            Transport::Incomplete => CallFailure::Incomplete,
            Transport::TooLarge(size) => CallFailure::TooLarge(size, limit),
        }
    }

    /// The status the client receives.
    pub fn status(&self) -> u16 {
        match self {
            CallFailure::Timeout => 504,
            CallFailure::BreakerOpen(_) => 503,
            _ => 502,
        }
    }

    /// `Retry-After` for the client: only an open breaker knows one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            CallFailure::BreakerOpen(seconds) => Some(*seconds),
            _ => None,
        }
    }

    /// The log text, after the endpoint's name (`endpoint`) or its
    /// response's (`response`): "introspection endpoint timed out".
    pub fn describe(&self, endpoint: &str, response: &str) -> String {
        match self {
            CallFailure::Timeout => format!("{endpoint} timed out"),
            CallFailure::Unreachable => format!("{endpoint} unreachable or connection failed"),
            CallFailure::Incomplete => {
                format!("{response} incomplete or larger than subrequest_output_buffer_size")
            }
            CallFailure::TooLarge(size, limit) => {
                format!("{response} of {size} bytes exceeds the {limit}-byte limit")
            }
            CallFailure::NotJson => format!("{response} is not a JSON object"),
            CallFailure::BreakerOpen(seconds) => {
                format!("{endpoint} not asked: its circuit breaker is open (retry in {seconds} s)")
            }
        }
    }
}

/// A kind of call's own error, which embeds [`CallFailure`].
pub trait KindFailure: Clone {
    /// The shared failure inside, if this is one.
    fn call(&self) -> Option<&CallFailure>;

    /// Whether the IdP failed rather than answered, so that `stale_if_error`
    /// may serve a cached answer instead: every [`CallFailure`], and
    /// whatever else the kind says.
    fn allows_stale(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_retry_after() {
        assert_eq!(CallFailure::Timeout.status(), 504);
        assert_eq!(CallFailure::BreakerOpen(7).status(), 503);
        assert_eq!(CallFailure::BreakerOpen(7).retry_after(), Some(7));
        for other in [
            CallFailure::Unreachable,
            CallFailure::Incomplete,
            CallFailure::TooLarge(2, 1),
            CallFailure::NotJson,
        ] {
            assert_eq!(other.status(), 502);
            assert_eq!(other.retry_after(), None);
        }
    }

    #[test]
    fn transport_failures_keep_the_limit() {
        assert_eq!(
            CallFailure::from_transport(Transport::TooLarge(9), 8),
            CallFailure::TooLarge(9, 8)
        );
        assert_eq!(
            CallFailure::from_transport(Transport::Timeout, 8),
            CallFailure::Timeout
        );
    }

    #[test]
    fn texts_name_the_endpoint_or_its_response() {
        let text = |f: CallFailure| f.describe("token endpoint", "token endpoint response");
        assert_eq!(text(CallFailure::Timeout), "token endpoint timed out");
        assert_eq!(
            text(CallFailure::TooLarge(10, 5)),
            "token endpoint response of 10 bytes exceeds the 5-byte limit"
        );
        assert_eq!(
            text(CallFailure::BreakerOpen(3)),
            "token endpoint not asked: its circuit breaker is open (retry in 3 s)"
        );
    }
}
