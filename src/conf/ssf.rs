//! `auth_oauth2_token_ssf_receiver` (http level): the Shared Signals
//! receiver's stream, its transmitter's keys, the revocation list's zone
//! and how long its entries last. Plain: the glue (`directives/ssf.rs`)
//! reads the files and declares the zone.

use crate::conf::cache_args::{parse_size, parse_time_ms};
use crate::metrics::ssf::SsfIds;
use crate::oauth::jose::jwk::Jwk;
use crate::oauth::ssf::set::Stream;

/// The default age bound of a SET's `iat`.
pub const DEFAULT_MAX_AGE_MS: i64 = 5 * 60 * 1000;
/// The default longest lifetime of a token: how long a revocation is kept.
pub const DEFAULT_TOKEN_LIFETIME_MS: i64 = 24 * 3600 * 1000;
/// The longest age bound accepted: a replayed SET older than the replay
/// store's memory would pass again.
pub const MAX_MAX_AGE_MS: i64 = 24 * 3600 * 1000;

/// Where the transmitter's keys come from. Today a JWK Set file read at
/// configuration time; a set fetched from the transmitter's `jwks_uri`
/// (the JWT issuers' fetch, once it exists) is meant to be a second variant.
#[derive(Debug, Clone)]
pub enum KeySource {
    File { name: String, keys: Vec<Jwk> },
}

impl KeySource {
    pub fn keys(&self) -> &[Jwk] {
        match self {
            KeySource::File { keys, .. } => keys,
        }
    }
}

/// The receiver, as the push page and the verdict stage use it.
#[derive(Debug)]
pub struct SsfReceiver {
    /// The revocation list's zone (an nginx zone, opaque here); it is also
    /// the SETs' replay store.
    pub zone: *mut core::ffi::c_void,
    pub stream: Stream,
    pub keys: KeySource,
    /// How long a revocation is kept: the longest lifetime of a token.
    pub token_lifetime_ms: i64,
    /// SHA-256 of the bearer secret the transmitter must send, if any.
    pub bearer_sha256: Option<[u8; 32]>,
    /// The receiver's series.
    pub metrics: SsfIds,
}

/// The directive's parameters, files not read yet.
#[derive(Debug, PartialEq, Eq)]
pub struct SsfArgs<'a> {
    pub zone_name: Vec<u8>,
    pub zone_size: usize,
    pub issuer: String,
    pub audience: String,
    pub keys_file: &'a [u8],
    pub max_age_ms: i64,
    pub token_lifetime_ms: i64,
    pub bearer_file: Option<&'a [u8]>,
}

/// `zone=NAME:SIZE issuer=URL audience=URI keys=FILE [max_age=TIME]
/// [token_lifetime=TIME] [bearer_file=FILE]`.
pub fn parse<'a>(args: &[&'a [u8]]) -> Result<SsfArgs<'a>, String> {
    let mut zone = None;
    let (mut issuer, mut audience, mut keys_file, mut bearer_file) = (None, None, None, None);
    let (mut max_age_ms, mut token_lifetime_ms) = (DEFAULT_MAX_AGE_MS, DEFAULT_TOKEN_LIFETIME_MS);
    for arg in args {
        let text = String::from_utf8_lossy(arg);
        let Some(eq) = arg.iter().position(|&b| b == b'=') else {
            return Err(format!("has an unknown parameter \"{text}\""));
        };
        let (name, value) = (&arg[..eq], &arg[eq + 1..]);
        let utf8 = || {
            String::from_utf8(value.to_vec())
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or(format!("has an empty or non-UTF-8 \"{text}\""))
        };
        let time = |max: i64| {
            parse_time_ms(value)
                .filter(|ms| (1000..=max).contains(ms))
                .ok_or(format!(
                    "has an invalid \"{text}\" (a time of 1s to {}s)",
                    max / 1000
                ))
        };
        let fresh = |seen: bool| match seen {
            true => Err(format!("has \"{}\" twice", String::from_utf8_lossy(name))),
            false => Ok(()),
        };
        match name {
            b"zone" => {
                fresh(zone.is_some())?;
                let bad = || "has an invalid \"zone\": NAME:SIZE, such as ssf:1m".to_string();
                let colon = value.iter().rposition(|&b| b == b':').ok_or_else(bad)?;
                let size = parse_size(&value[colon + 1..]).ok_or_else(bad)?;
                if colon == 0 {
                    return Err(bad());
                }
                zone = Some((value[..colon].to_vec(), size));
            }
            b"issuer" => {
                fresh(issuer.is_some())?;
                issuer = Some(utf8()?);
            }
            b"audience" => {
                fresh(audience.is_some())?;
                audience = Some(utf8()?);
            }
            b"keys" if !value.is_empty() => {
                fresh(keys_file.is_some())?;
                keys_file = Some(value);
            }
            b"bearer_file" if !value.is_empty() => {
                fresh(bearer_file.is_some())?;
                bearer_file = Some(value);
            }
            b"max_age" => max_age_ms = time(MAX_MAX_AGE_MS)?,
            b"token_lifetime" => token_lifetime_ms = time(366 * 24 * 3600 * 1000)?,
            _ => return Err(format!("has an unknown parameter \"{text}\"")),
        }
    }
    let (zone_name, zone_size) = zone.ok_or("needs a \"zone=NAME:SIZE\" parameter")?;
    Ok(SsfArgs {
        zone_name,
        zone_size,
        issuer: issuer.ok_or("needs an \"issuer=\" parameter (the transmitter's iss)")?,
        audience: audience.ok_or("needs an \"audience=\" parameter (this receiver's aud)")?,
        keys_file: keys_file
            .ok_or("needs a \"keys=FILE\" parameter (the transmitter's JWK Set)")?,
        max_age_ms,
        token_lifetime_ms,
        bearer_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<&[u8]> {
        line.split(' ').map(str::as_bytes).collect()
    }

    #[test]
    fn the_parameters_and_their_defaults() {
        let a = parse(&args(
            "zone=ssf:1m issuer=https://idp audience=https://gw keys=t.jwks",
        ))
        .unwrap();
        assert_eq!(a.zone_name, b"ssf");
        assert_eq!(a.zone_size, 1 << 20);
        assert_eq!(
            (a.issuer.as_str(), a.audience.as_str()),
            ("https://idp", "https://gw")
        );
        assert_eq!(a.keys_file, b"t.jwks");
        assert_eq!(a.max_age_ms, DEFAULT_MAX_AGE_MS);
        assert_eq!(a.token_lifetime_ms, DEFAULT_TOKEN_LIFETIME_MS);
        assert_eq!(a.bearer_file, None);
        let a = parse(&args(
            "zone=s:64k issuer=i audience=a keys=k max_age=1m token_lifetime=2h bearer_file=b",
        ))
        .unwrap();
        assert_eq!((a.max_age_ms, a.token_lifetime_ms), (60_000, 7_200_000));
        assert_eq!(a.bearer_file, Some(&b"b"[..]));
    }

    #[test]
    fn mistakes_are_named() {
        for (line, words) in [
            ("issuer=i audience=a keys=k", "zone=NAME:SIZE"),
            ("zone=s:1m audience=a keys=k", "issuer="),
            ("zone=s:1m issuer=i keys=k", "audience="),
            ("zone=s:1m issuer=i audience=a", "keys=FILE"),
            ("zone=s issuer=i audience=a keys=k", "invalid \"zone\""),
            ("zone=:1m issuer=i audience=a keys=k", "invalid \"zone\""),
            ("zone=s:1m issuer=i audience=a keys=k max_age=2d", "max_age"),
            ("zone=s:1m issuer=i audience=a keys=k max_age=0", "max_age"),
            ("zone=s:1m issuer= audience=a keys=k", "empty"),
            ("zone=s:1m issuer=i issuer=j audience=a keys=k", "twice"),
            ("zone=s:1m issuer=i audience=a keys=k x=1", "unknown"),
            ("zone=s:1m issuer=i audience=a keys=k on", "unknown"),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.contains(words), "{line}: {e}");
        }
    }
}
