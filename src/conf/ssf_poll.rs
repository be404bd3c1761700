//! `auth_oauth2_token_ssf_poll` (location): the location the Shared
//! Signals receiver polls its transmitter through (RFC 8936), and how.
//! Plain: the glue (`directives/ssf.rs`) reads the bearer file and keeps
//! the server the location is in.

use crate::conf::cache_args::{parse_size, parse_time_ms};

/// The default wait between polls that found nothing.
pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
/// The default number of SETs asked for per poll.
pub const DEFAULT_MAX_EVENTS: u32 = 100;
/// The default room for an answer.
pub const DEFAULT_MAX_SIZE: usize = 512 * 1024;

/// The poll, as worker 0's poller uses it.
#[derive(Debug)]
pub struct SsfPoll {
    /// The location's path: the poll's subrequest goes there.
    pub uri: Vec<u8>,
    /// The server block the location is in (an nginx configuration
    /// context, opaque here): the poll's request belongs to it.
    pub server: *mut core::ffi::c_void,
    pub interval_ms: u64,
    pub max_events: u32,
    pub return_immediately: bool,
    /// The largest answer read.
    pub max_size: usize,
    /// The token sent as `Authorization: Bearer`, if any.
    pub bearer: Option<Vec<u8>>,
}

/// The directive's parameters, the bearer file not read yet.
#[derive(Debug, PartialEq, Eq)]
pub struct PollArgs<'a> {
    pub interval_ms: u64,
    pub max_events: u32,
    pub return_immediately: bool,
    pub max_size: usize,
    pub bearer_file: Option<&'a [u8]>,
}

/// `[interval=TIME] [max_events=N] [return_immediately=on|off]
/// [max_size=SIZE] [bearer_file=FILE]`.
pub fn parse<'a>(args: &[&'a [u8]]) -> Result<PollArgs<'a>, String> {
    let mut parsed = PollArgs {
        interval_ms: DEFAULT_INTERVAL_MS,
        max_events: DEFAULT_MAX_EVENTS,
        return_immediately: true,
        max_size: DEFAULT_MAX_SIZE,
        bearer_file: None,
    };
    let mut seen: Vec<&[u8]> = Vec::new();
    for arg in args {
        let text = String::from_utf8_lossy(arg);
        let Some(eq) = arg.iter().position(|&b| b == b'=') else {
            return Err(format!("has an unknown parameter \"{text}\""));
        };
        let (name, value) = (&arg[..eq], &arg[eq + 1..]);
        if seen.contains(&name) {
            return Err(format!("has \"{}\" twice", String::from_utf8_lossy(name)));
        }
        seen.push(name);
        let invalid = |what: &str| format!("has an invalid \"{text}\" ({what})");
        match name {
            b"interval" => {
                parsed.interval_ms = parse_time_ms(value)
                    .filter(|ms| (1000..=24 * 3600 * 1000).contains(ms))
                    .ok_or_else(|| invalid("a time of 1s to 24h"))?
                    as u64;
            }
            b"max_events" => {
                parsed.max_events = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| invalid("a number of 1 to 1000"))?;
            }
            b"return_immediately" => {
                parsed.return_immediately = match value {
                    b"on" => true,
                    b"off" => false,
                    _ => return Err(invalid("on or off")),
                };
            }
            b"max_size" => {
                parsed.max_size = parse_size(value)
                    .filter(|n| (4096..=16 << 20).contains(n))
                    .ok_or_else(|| invalid("a size of 4k to 16m"))?;
            }
            b"bearer_file" if !value.is_empty() => parsed.bearer_file = Some(value),
            _ => return Err(format!("has an unknown parameter \"{text}\"")),
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<&[u8]> {
        line.split(' ')
            .filter(|a| !a.is_empty())
            .map(str::as_bytes)
            .collect()
    }

    #[test]
    fn the_parameters_and_their_defaults() {
        let a = parse(&args("")).unwrap();
        assert_eq!(
            a,
            PollArgs {
                interval_ms: DEFAULT_INTERVAL_MS,
                max_events: DEFAULT_MAX_EVENTS,
                return_immediately: true,
                max_size: DEFAULT_MAX_SIZE,
                bearer_file: None,
            }
        );
        let a = parse(&args(
            "interval=5s max_events=10 return_immediately=off max_size=64k bearer_file=b",
        ))
        .unwrap();
        assert_eq!(
            (
                a.interval_ms,
                a.max_events,
                a.return_immediately,
                a.max_size
            ),
            (5000, 10, false, 65536)
        );
        assert_eq!(a.bearer_file, Some(&b"b"[..]));
    }

    #[test]
    fn mistakes_are_named() {
        for (line, words) in [
            ("interval=0", "interval"),
            ("interval=2d", "interval"),
            ("max_events=0", "max_events"),
            ("max_events=x", "max_events"),
            ("return_immediately=yes", "on or off"),
            ("max_size=1k", "max_size"),
            ("interval=1s interval=2s", "twice"),
            ("bearer_file=", "unknown"),
            ("on", "unknown"),
            ("x=1", "unknown"),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.contains(words), "{line}: {e}");
        }
    }
}
