//! Where the Redis tier's primary is, as Redis Sentinel says (plain): each
//! worker keeps one connection to a sentinel of the list, asks it
//! `SENTINEL get-master-addr-by-name <name>` and then listens on its
//! `+switch-master` channel. A plain state machine that `cargo test`
//! drives without sockets, as `redis/subscription.rs` is for the
//! revocation channel; `redis/sentinel_watch.rs` is the glue.
//!
//! ```text
//! Timer      -> connect to the current sentinel
//! Connected  -> send AUTH <password> (when the sentinels have one),
//!               SENTINEL get-master-addr-by-name <name>, then
//!               SUBSCRIBE +switch-master (one pipeline); the sentinel has
//!               REPLY_DEADLINE_MS to answer both
//! Received   -> AUTH's +OK; the address ([ip, port]): the primary; SUBSCRIBE's
//!               confirmation; then every "+switch-master" message for
//!               <name>: the new primary
//! Watch      -> the answers are late: a failure
//! Reask      -> a call to the primary failed (no connection, -READONLY):
//!               ask again, on the next sentinel (at most every REASK_MS)
//! Failed     -> close; the next sentinel after the backoff (100 ms,
//!               doubling up to 5 s; back to 100 ms once subscribed)
//! ```
//!
//! A sentinel that does not know the name (a nil answer), answers with an
//! error, garbage, or an address that is not an IP address and port, is a
//! failure: the next sentinel is asked. The primary last learnt stays in
//! use meanwhile: sentinels that are down say nothing about the primary.
//! Nothing a sentinel says makes a call write anywhere but to an address
//! a sentinel named as the primary.

use core::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::redis::resp::{self, Limits, Progress, Push, Reader, Reply};

/// The channel on which sentinels announce a new primary.
pub const SWITCH_CHANNEL: &[u8] = b"+switch-master";
/// The first wait before the next sentinel after a failure.
pub const FIRST_BACKOFF_MS: u64 = 100;
/// The longest: each failure in a row doubles the wait up to this.
pub const MAX_BACKOFF_MS: u64 = 5000;
/// The least time between two re-asks a failed call causes.
pub const REASK_MS: i64 = 500;
/// How long a sentinel has to answer the question and the `SUBSCRIBE`.
pub const REPLY_DEADLINE_MS: u64 = 3000;
/// The longest payload kept: "name ip port ip port" (a name up to 200
/// bytes and two IPv6 addresses fit).
pub const MAX_PAYLOAD: usize = 512;

/// What happened (the glue's events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// Time to connect: at start, and when a `RetryAfter` timer fires.
    Timer,
    /// The connection asked for by `Connect` is open.
    Connected,
    /// Bytes from the sentinel.
    Received(&'a [u8]),
    /// The connection failed (the glue's words, for the log).
    Failed(String),
    /// The timer of a `Watch` action fired.
    Watch,
    /// A call to the primary failed in a way that may mean it moved.
    Reask,
}

/// What the glue must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a connection to sentinel number `n` of the list.
    Connect(usize),
    Send(Vec<u8>),
    Close,
    /// The primary is at this address (sent when it changes).
    Primary(SocketAddr),
    Log(Note),
    /// `Watch` after so many ms (replaces a watch already armed; the
    /// glue drops it with the connection).
    Watch(u64),
    /// `Timer` again after so many ms.
    RetryAfter(u64),
}

/// What is worth a line in the error log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The first primary learnt, or a new one (`from` the old one).
    Primary {
        from: Option<SocketAddr>,
        to: SocketAddr,
    },
    /// A sentinel could not tell (its index and why).
    Failed { sentinel: usize, why: String },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Primary { from: None, to } => {
                write!(f, "sentinel: the Redis tier's primary is {to}")
            }
            Note::Primary { from: Some(from), to } => {
                write!(f, "sentinel: the Redis tier's primary moved from {from} to {to}")
            }
            Note::Failed { sentinel, why } => write!(
                f,
                "sentinel: sentinel {} of the upstream could not tell the primary: {why}; asking the next",
                sentinel + 1
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No connection; a `RetryAfter` (or the first `Timer`) is pending.
    Idle,
    Connecting,
    /// `AUTH` and the question are sent; `AUTH`'s answer is due.
    Authenticating,
    /// The question is sent; its answer is due.
    Asked,
    /// The answer is in; SUBSCRIBE's confirmation is due.
    Subscribing,
    /// Listening for `+switch-master`.
    Subscribed,
}

/// One worker's watch over the primary.
#[derive(Debug)]
pub struct Watch {
    name: Vec<u8>,
    /// `AUTH <password>`, RESP-encoded, or empty.
    auth: Vec<u8>,
    sentinels: usize,
    /// The sentinel asked now (or next).
    current: usize,
    state: State,
    reader: Reader,
    backoff_ms: u64,
    primary: Option<SocketAddr>,
    last_reask_ms: Option<i64>,
}

impl Watch {
    /// A watch over the primary called `name` by `sentinels` sentinels
    /// (at least one), which take `auth` (`AUTH <password>`, RESP) first
    /// when it is not empty.
    pub fn new(name: &[u8], sentinels: usize, auth: &[u8]) -> Watch {
        Watch {
            name: name.to_vec(),
            auth: auth.to_vec(),
            sentinels: sentinels.max(1),
            current: 0,
            state: State::Idle,
            reader: Reader::new(Limits::pubsub(MAX_PAYLOAD)),
            backoff_ms: FIRST_BACKOFF_MS,
            primary: None,
            last_reask_ms: None,
        }
    }

    /// The primary last learnt.
    pub fn primary(&self) -> Option<SocketAddr> {
        self.primary
    }

    /// What to do about `event` at `now_ms`.
    pub fn handle(&mut self, now_ms: i64, event: Event<'_>) -> Vec<Action> {
        match event {
            Event::Timer if self.state == State::Idle => {
                self.state = State::Connecting;
                vec![Action::Connect(self.current)]
            }
            Event::Timer => Vec::new(),
            Event::Connected if self.state == State::Connecting => {
                self.state = if self.auth.is_empty() {
                    State::Asked
                } else {
                    State::Authenticating
                };
                self.reader.reset();
                let mut out = self.auth.clone();
                resp::command(
                    &mut out,
                    &[b"SENTINEL", b"get-master-addr-by-name", &self.name],
                );
                resp::command(&mut out, &[b"SUBSCRIBE", SWITCH_CHANNEL]);
                vec![Action::Send(out), Action::Watch(REPLY_DEADLINE_MS)]
            }
            Event::Connected => Vec::new(),
            Event::Received(bytes) => self.received(bytes),
            Event::Failed(why) => self.fail(why),
            Event::Watch
                if matches!(
                    self.state,
                    State::Authenticating | State::Asked | State::Subscribing
                ) =>
            {
                self.fail(format!("no answer within {REPLY_DEADLINE_MS} ms"))
            }
            Event::Watch => Vec::new(),
            Event::Reask => {
                let recent = self
                    .last_reask_ms
                    .is_some_and(|at| now_ms.saturating_sub(at) < REASK_MS);
                // Already asking, or asked a moment ago: the answer is coming.
                if recent || !matches!(self.state, State::Subscribing | State::Subscribed) {
                    return Vec::new();
                }
                self.last_reask_ms = Some(now_ms);
                self.current = (self.current + 1) % self.sentinels;
                self.state = State::Connecting;
                vec![Action::Close, Action::Connect(self.current)]
            }
        }
    }

    fn received(&mut self, mut bytes: &[u8]) -> Vec<Action> {
        let mut actions = Vec::new();
        if matches!(self.state, State::Idle | State::Connecting) {
            return actions;
        }
        while !bytes.is_empty() {
            let (used, progress) = self.reader.read(bytes);
            bytes = &bytes[used..];
            let reply = match progress {
                Progress::More => break,
                Progress::Garbage => {
                    actions.extend(self.fail("unreadable bytes".into()));
                    return actions;
                }
                Progress::Reply(reply) => reply,
            };
            let step = match self.state {
                State::Authenticating => match &reply {
                    Reply::Status(ok) if ok.as_slice() == b"OK" => {
                        self.state = State::Asked;
                        Ok(())
                    }
                    Reply::Error(text) => Err(format!("AUTH refused: -{}", resp::error_kind(text))),
                    _ => Err(format!("unexpected reply to AUTH: {}", shape(&reply))),
                },
                State::Asked => self.answer(&reply, &mut actions),
                State::Subscribing => match resp::push(&reply) {
                    Some(Push::Subscribed(channel)) if channel == SWITCH_CHANNEL => {
                        self.state = State::Subscribed;
                        self.backoff_ms = FIRST_BACKOFF_MS;
                        Ok(())
                    }
                    _ => Err(format!("unexpected reply to SUBSCRIBE: {}", shape(&reply))),
                },
                State::Subscribed => match resp::push(&reply) {
                    Some(Push::Message { channel, payload }) if channel == SWITCH_CHANNEL => {
                        if let Some(to) = payload.and_then(|p| switched(p, &self.name)) {
                            self.learn(to, &mut actions);
                        }
                        Ok(())
                    }
                    Some(_) => Ok(()),
                    None => Err(format!("unexpected reply: {}", shape(&reply))),
                },
                State::Idle | State::Connecting => Ok(()),
            };
            if let Err(why) = step {
                actions.extend(self.fail(why));
                return actions;
            }
        }
        actions
    }

    /// The answer to `get-master-addr-by-name`.
    fn answer(&mut self, reply: &Reply, actions: &mut Vec<Action>) -> Result<(), String> {
        let to = master_addr(reply)?;
        self.state = State::Subscribing;
        self.learn(to, actions);
        Ok(())
    }

    fn learn(&mut self, to: SocketAddr, actions: &mut Vec<Action>) {
        if self.primary == Some(to) {
            return;
        }
        let from = self.primary.replace(to);
        actions.push(Action::Primary(to));
        actions.push(Action::Log(Note::Primary { from, to }));
    }

    fn fail(&mut self, why: String) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::Idle {
            return actions;
        }
        actions.push(Action::Close);
        actions.push(Action::Log(Note::Failed {
            sentinel: self.current,
            why,
        }));
        self.state = State::Idle;
        self.current = (self.current + 1) % self.sentinels;
        actions.push(Action::RetryAfter(self.backoff_ms));
        self.backoff_ms = (self.backoff_ms * 2).min(MAX_BACKOFF_MS);
        actions
    }
}

/// The address in an answer to `SENTINEL get-master-addr-by-name`:
/// `[ip, port]`; a nil answer means the sentinel does not know the name.
pub fn master_addr(reply: &Reply) -> Result<SocketAddr, String> {
    match reply {
        Reply::Array(Some(items)) => match items.as_slice() {
            [Reply::Bulk(Some(ip)), Reply::Bulk(Some(port))] => address(ip, port),
            _ => Err(format!("unexpected answer: {}", shape(reply))),
        },
        Reply::Array(None) | Reply::Bulk(None) => Err("it does not know the name".into()),
        Reply::Error(text) => Err(format!("error reply -{}", resp::error_kind(text))),
        _ => Err(format!("unexpected answer: {}", shape(reply))),
    }
}

/// The new primary in a `+switch-master` payload for `name`:
/// `<name> <old ip> <old port> <new ip> <new port>`; `None` for another
/// name or a payload of another shape.
pub fn switched(payload: &[u8], name: &[u8]) -> Option<SocketAddr> {
    let words: Vec<&[u8]> = payload.split(|b| *b == b' ').collect();
    match words.as_slice() {
        [n, _, _, ip, port] if *n == name => address(ip, port).ok(),
        _ => None,
    }
}

/// An IP address and a port, as sentinels write them. A host name is
/// refused: the module does not resolve names at run time.
fn address(ip: &[u8], port: &[u8]) -> Result<SocketAddr, String> {
    let ip: IpAddr = core::str::from_utf8(ip)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("an address that is not an IP address")?;
    let port: u16 = core::str::from_utf8(port)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .filter(|p| *p != 0)
        .ok_or("an invalid port")?;
    Ok(SocketAddr::new(ip, port))
}

/// What kind of reply it was, for the log (never its bytes).
fn shape(reply: &Reply) -> &'static str {
    match reply {
        Reply::Status(_) => "a status",
        Reply::Error(_) => "an error",
        Reply::Integer(_) => "an integer",
        Reply::Bulk(_) => "a string",
        Reply::Array(_) => "an array",
        Reply::Skipped(_) => "a long string",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }
    fn arr(items: &[String]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", items.len());
        for i in items {
            out.push_str(i);
        }
        out.into_bytes()
    }
    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    const SUBSCRIBED: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n";

    /// A watch of 3 sentinels, connected and subscribed, primary 10.0.0.1:6379.
    fn subscribed() -> Watch {
        let mut w = Watch::new(b"mymaster", 3, b"");
        assert_eq!(w.handle(0, Event::Timer), vec![Action::Connect(0)]);
        let sent = w.handle(0, Event::Connected);
        let Action::Send(bytes) = &sent[0] else {
            panic!("{sent:?}")
        };
        assert_eq!(sent[1], Action::Watch(REPLY_DEADLINE_MS));
        assert_eq!(
            resp::read_commands(bytes, 2),
            vec![
                vec![
                    b"SENTINEL".to_vec(),
                    b"get-master-addr-by-name".to_vec(),
                    b"mymaster".to_vec()
                ],
                vec![b"SUBSCRIBE".to_vec(), b"+switch-master".to_vec()],
            ]
        );
        let mut bytes = arr(&[bulk("10.0.0.1"), bulk("6379")]);
        bytes.extend_from_slice(SUBSCRIBED);
        let a = w.handle(0, Event::Received(&bytes));
        assert_eq!(a[0], Action::Primary(addr("10.0.0.1:6379")));
        assert_eq!(w.primary(), Some(addr("10.0.0.1:6379")));
        assert_eq!(w.state, State::Subscribed);
        w
    }

    fn message(payload: &str) -> Vec<u8> {
        arr(&[bulk("message"), bulk("+switch-master"), bulk(payload)])
    }

    #[test]
    fn asks_then_follows_switch_master() {
        let mut w = subscribed();
        // Another master's switch changes nothing.
        let other = message("othermaster 10.0.0.1 6379 10.0.0.9 6379");
        assert_eq!(w.handle(1, Event::Received(&other)), vec![]);
        let ours = message("mymaster 10.0.0.1 6379 10.0.0.2 6380");
        let a = w.handle(2, Event::Received(&ours));
        assert_eq!(
            a,
            vec![
                Action::Primary(addr("10.0.0.2:6380")),
                Action::Log(Note::Primary {
                    from: Some(addr("10.0.0.1:6379")),
                    to: addr("10.0.0.2:6380")
                })
            ]
        );
        // The same news twice: nothing.
        assert_eq!(w.handle(3, Event::Received(&ours)), vec![]);
    }

    #[test]
    fn replies_split_anywhere() {
        let mut w = Watch::new(b"m", 1, b"");
        w.handle(0, Event::Timer);
        w.handle(0, Event::Connected);
        let mut bytes = arr(&[bulk("::1"), bulk("7000")]);
        bytes.extend_from_slice(SUBSCRIBED);
        let mut actions = Vec::new();
        for b in bytes.chunks(1) {
            actions.extend(w.handle(0, Event::Received(b)));
        }
        assert_eq!(actions[0], Action::Primary(addr("[::1]:7000")));
        assert_eq!(w.state, State::Subscribed);
    }

    #[test]
    fn a_sentinel_that_cannot_tell_is_left_for_the_next() {
        for answer in [
            b"*-1\r\n".to_vec(),
            b"-ERR unknown\r\n".to_vec(),
            arr(&[bulk("redis.internal"), bulk("6379")]),
            arr(&[bulk("10.0.0.1"), bulk("0")]),
            arr(&[bulk("10.0.0.1"), bulk("70000")]),
            arr(&[bulk("10.0.0.1"), bulk("+1")]),
            arr(&[bulk("10.0.0.1")]),
            b":1\r\n".to_vec(),
            b"\x00garbage\r\n".to_vec(),
        ] {
            let mut w = Watch::new(b"m", 2, b"");
            w.handle(0, Event::Timer);
            w.handle(0, Event::Connected);
            let a = w.handle(0, Event::Received(&answer));
            assert_eq!(a[0], Action::Close, "{answer:?}");
            assert!(matches!(
                a[1],
                Action::Log(Note::Failed { sentinel: 0, .. })
            ));
            assert_eq!(a[2], Action::RetryAfter(FIRST_BACKOFF_MS));
            assert_eq!(w.primary(), None);
            assert_eq!(w.handle(100, Event::Timer), vec![Action::Connect(1)]);
        }
    }

    #[test]
    fn the_primary_stays_while_sentinels_fail_and_the_backoff_grows() {
        let mut w = subscribed();
        let mut waits = Vec::new();
        for _ in 0..8 {
            let a = w.handle(0, Event::Failed("refused".into()));
            let Some(Action::RetryAfter(ms)) = a.last() else {
                panic!("{a:?}")
            };
            waits.push(*ms);
            assert!(matches!(w.handle(0, Event::Timer)[0], Action::Connect(_)));
        }
        // Subscribed once: the first failure waits the least.
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(w.primary(), Some(addr("10.0.0.1:6379")));
    }

    #[test]
    fn a_failed_call_asks_the_next_sentinel_at_most_every_reask_ms() {
        let mut w = subscribed();
        assert_eq!(
            w.handle(1000, Event::Reask),
            vec![Action::Close, Action::Connect(1)]
        );
        // Asking already: nothing more.
        assert_eq!(w.handle(1001, Event::Reask), vec![]);
        w.handle(1002, Event::Connected);
        let mut bytes = arr(&[bulk("10.0.0.2"), bulk("6379")]);
        bytes.extend_from_slice(SUBSCRIBED);
        w.handle(1003, Event::Received(&bytes));
        assert_eq!(w.primary(), Some(addr("10.0.0.2:6379")));
        assert_eq!(w.handle(1100, Event::Reask), vec![]);
        assert_eq!(
            w.handle(1000 + REASK_MS, Event::Reask),
            vec![Action::Close, Action::Connect(2)]
        );
    }

    #[test]
    fn unexpected_pushes_fail_the_link_but_pongs_do_not() {
        let mut w = subscribed();
        let pong = arr(&[bulk("pong"), bulk("")]);
        assert_eq!(w.handle(0, Event::Received(&pong)), vec![]);
        let a = w.handle(0, Event::Received(b"+OK\r\n"));
        assert_eq!(a[0], Action::Close);
        // A long payload is read past.
        let mut w = subscribed();
        let long = message(&"x".repeat(MAX_PAYLOAD + 1));
        assert_eq!(w.handle(0, Event::Received(&long)), vec![]);
    }

    #[test]
    fn a_silent_sentinel_is_left_for_the_next() {
        let mut w = Watch::new(b"m", 2, b"");
        w.handle(0, Event::Timer);
        w.handle(0, Event::Connected);
        let a = w.handle(3000, Event::Watch);
        assert_eq!(a[0], Action::Close);
        assert!(
            matches!(&a[1], Action::Log(Note::Failed { sentinel: 0, why }) if why.contains("no answer"))
        );
        assert_eq!(w.handle(3100, Event::Timer), vec![Action::Connect(1)]);
        // Answered in time: the watch changes nothing.
        let mut w = subscribed();
        assert_eq!(w.handle(3000, Event::Watch), vec![]);
    }

    #[test]
    fn auth_comes_first_and_its_refusal_is_a_failure() {
        let mut auth = Vec::new();
        resp::command(&mut auth, &[b"AUTH", b"pw"]);
        let mut w = Watch::new(b"m", 2, &auth);
        w.handle(0, Event::Timer);
        let sent = w.handle(0, Event::Connected);
        let Action::Send(bytes) = &sent[0] else {
            panic!("{sent:?}")
        };
        assert_eq!(
            resp::read_commands(bytes, 3)[0],
            vec![b"AUTH".to_vec(), b"pw".to_vec()]
        );
        let mut ok = b"+OK\r\n".to_vec();
        ok.extend(arr(&[bulk("10.0.0.1"), bulk("1")]));
        ok.extend_from_slice(SUBSCRIBED);
        assert_eq!(
            w.handle(0, Event::Received(&ok))[0],
            Action::Primary(addr("10.0.0.1:1"))
        );
        assert_eq!(w.state, State::Subscribed);

        let mut w = Watch::new(b"m", 2, &auth);
        w.handle(0, Event::Timer);
        w.handle(0, Event::Connected);
        let a = w.handle(0, Event::Received(b"-WRONGPASS invalid password\r\n"));
        assert_eq!(a[0], Action::Close);
        assert!(
            matches!(&a[1], Action::Log(Note::Failed { why, .. }) if why == "AUTH refused: -WRONGPASS")
        );
    }

    #[test]
    fn switch_payloads() {
        assert_eq!(
            switched(b"m 1.2.3.4 1 5.6.7.8 2", b"m"),
            Some(addr("5.6.7.8:2"))
        );
        for bad in [
            &b"m 1.2.3.4 1 5.6.7.8"[..],
            b"m 1.2.3.4 1 host 2",
            b"mm 1.2.3.4 1 5.6.7.8 2",
            b"m 1.2.3.4 1 5.6.7.8 2 extra",
            b"",
        ] {
            assert_eq!(switched(bad, b"m"), None, "{bad:?}");
        }
    }
}
