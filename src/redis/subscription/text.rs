//! The revocation channel's log lines: why it went down (`Trouble`) and
//! what `Note` says, after the module's `auth_oauth2_token: ` prefix.

use core::fmt;

use super::{Delivery, Note, Trouble, MAX_AGE_MS, MAX_AHEAD_MS, MAX_MESSAGE, REPLY_DEADLINE_MS};

impl fmt::Display for Trouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trouble::CannotConnect(server) => write!(f, "cannot connect to {server}"),
            Trouble::ConnectTimedOut => f.write_str("connect timed out"),
            Trouble::CannotSend => f.write_str("cannot send"),
            Trouble::CannotWaitToSend => f.write_str("cannot wait to send"),
            Trouble::RefusedOrReset => f.write_str("connection refused or reset"),
            Trouble::ClosedByServer => f.write_str("closed by the server"),
            Trouble::CannotRead => f.write_str("cannot read"),
            Trouble::CannotWaitToRead => f.write_str("cannot wait to read"),
            Trouble::Unreadable => f.write_str("unreadable replies"),
            Trouble::ErrorReply(kind) => write!(f, "-{kind}"),
            Trouble::UnexpectedPreambleReply => f.write_str("unexpected reply to AUTH or SELECT"),
            Trouble::UnexpectedSubscribeReply => f.write_str("unexpected reply to SUBSCRIBE"),
            Trouble::UnexpectedReply => f.write_str("a reply pub/sub does not send"),
            Trouble::HandshakeUnanswered => write!(
                f,
                "no answer to the handshake (AUTH, SELECT, SUBSCRIBE) within {} ms",
                REPLY_DEADLINE_MS
            ),
            Trouble::PingUnanswered => {
                write!(f, "no answer to PING within {} ms", REPLY_DEADLINE_MS)
            }
            Trouble::Tls(why) => write!(f, "TLS: {why}"),
            Trouble::Redirected(to) => write!(
                f,
                "the revocation list's slot sent to {} more than {} times in a row",
                to.to(),
                crate::redis::cluster::MAX_REDIRECTIONS
            ),
        }
    }
}

/// The line, after the module's `auth_oauth2_token: ` prefix.
impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Subscribed => f.write_str("revocation channel subscribed"),
            Note::SubscribedAgain => f.write_str("revocation channel subscribed again"),
            Note::Down(trouble) => write!(
                f,
                "revocation channel down ({trouble}); purges from other gateways reach this gateway when its cached entries expire (max_ttl)"
            ),
            Note::Refused { what, more } => {
                f.write_str("revocation channel: ignored ")?;
                match what {
                    Delivery::Applied => f.write_str("a message")?,
                    Delivery::Oversized => write!(
                        f,
                        "a message over {MAX_MESSAGE} bytes (no purge message is that long)"
                    )?,
                    Delivery::Unopened => f.write_str(
                        "a message that does not open with this gateway's keys (another key_file, a new key not yet in old_key_file, a gateway of an older version, or not a purge message)",
                    )?,
                    Delivery::Stale => write!(
                        f,
                        "a purge message older than {} s or more than {} s ahead of this gateway's clock (a replay, or clocks apart)",
                        MAX_AGE_MS / 1000,
                        MAX_AHEAD_MS / 1000
                    )?,
                    Delivery::Replayed => {
                        f.write_str("a purge message applied before (a replay)")?
                    }
                }
                if *more > 0 {
                    write!(f, "; {more} more of this kind since the last such line")?;
                }
                Ok(())
            }
        }
    }
}
