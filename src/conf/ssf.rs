//! `auth_oauth2_token_ssf_receiver` (http level): the Shared Signals
//! receiver's stream, its transmitter's keys, the revocation list's zone
//! and how long its entries last. Plain: the glue (`directives/ssf.rs`)
//! reads the files and declares the zone.

use crate::conf::cache_args::{parse_size, parse_time_ms};
use crate::conf::jwt::parse_keys_request;
use crate::metrics::ssf::SsfIds;
use crate::oauth::jose::jwk::Jwk;
use crate::oauth::jose::verify::KeysFetch;
use crate::oauth::ssf::set::Stream;

/// The default age bound of a SET's `iat`.
pub const DEFAULT_MAX_AGE_MS: i64 = 5 * 60 * 1000;
/// The default longest lifetime of a token: how long a revocation is kept.
pub const DEFAULT_TOKEN_LIFETIME_MS: i64 = 24 * 3600 * 1000;
/// The longest age bound accepted: a replayed SET older than the replay
/// store's memory would pass again.
pub const MAX_MAX_AGE_MS: i64 = 24 * 3600 * 1000;

/// Where the transmitter's keys come from: a JWK Set file read at
/// configuration time, or the set fetched from the transmitter's
/// `jwks_uri` through an internal location, kept and fetched again exactly
/// as a JWT issuer's (`handler/jwks.rs`, in the push location's
/// `auth_oauth2_token_jwt_keys_cache` zone).
#[derive(Debug, Clone)]
pub enum KeySource {
    File {
        name: String,
        keys: Vec<Jwk>,
    },
    /// The internal location's URI; the fetch's names in the keys zone are
    /// the push location's (`LocationConf::ssf_keys`).
    Fetched {
        uri: String,
    },
}

impl KeySource {
    /// The keys read at configuration time; none for a fetched set, whose
    /// keys are had through a request (`pages/ssf_keys.rs`).
    pub fn keys(&self) -> &[Jwk] {
        match self {
            KeySource::File { keys, .. } => keys,
            KeySource::Fetched { .. } => &[],
        }
    }
}

/// The name a fetched transmitter set has among the keys zone's sets (in
/// place of a JWT issuer's name: `KeysFetch::scope`).
pub const KEYS_SCOPE: &str = "Shared Signals transmitter";

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
    /// The SHA-256 thumbprints of the client certificates the transmitter
    /// may present (`client_certificate=`); empty: none asked for.
    pub certificates: Vec<[u8; 32]>,
    /// The index of the tokens' list keys (`index=`), which drops a
    /// revoked subject's cache entries; `None` with `index=off`.
    pub index_zone: Option<*mut core::ffi::c_void>,
    /// The receiver's series.
    pub metrics: SsfIds,
}

/// The fetch of the transmitter's set by a location of `directive` (the
/// push endpoint's or the poll's) in the server block `server` (its
/// identity), whose keys zone is configured or not (`keys_cache`); `None`
/// for a set read from a file.
pub fn location_keys(
    receiver: &SsfReceiver,
    keys_cache: bool,
    server: &[u8; 32],
    directive: &str,
) -> Result<Option<KeysFetch>, String> {
    let KeySource::Fetched { uri } = &receiver.keys else {
        return Ok(None);
    };
    if !keys_cache {
        return Err(format!("\"{directive}\": the transmitter's keys are fetched (keys_request= of \"auth_oauth2_token_ssf_receiver\"), which needs \"auth_oauth2_token_jwt_keys_cache\" here: the set is kept in shared memory"));
    }
    let mut fetch = KeysFetch::at(uri.clone());
    fetch.scope(server, KEYS_SCOPE);
    Ok(Some(fetch))
}

/// The directive's parameters, files not read yet.
#[derive(Debug, PartialEq, Eq)]
pub struct SsfArgs<'a> {
    pub zone_name: Vec<u8>,
    pub zone_size: usize,
    pub issuer: String,
    pub audience: String,
    /// `keys=FILE` or `keys_request=URI`: one of them.
    pub keys: KeysArg<'a>,
    pub max_age_ms: i64,
    pub token_lifetime_ms: i64,
    pub bearer_file: Option<&'a [u8]>,
    /// The index's zone size: the list's by default, `None` with `index=off`.
    pub index_size: Option<usize>,
    /// `client_certificate=`: the thumbprints accepted.
    pub certificates: Vec<[u8; 32]>,
}

/// A certificate's SHA-256 thumbprint as an operator writes it: 43
/// base64url characters (RFC 8705's `x5t#S256`), or 64 hex digits, pairs
/// maybe separated by colons (`openssl x509 -fingerprint -sha256`).
pub fn parse_thumbprint(text: &[u8]) -> Option<[u8; 32]> {
    use base64::Engine;
    if text.len() == 43 {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        return bytes.try_into().ok();
    }
    let digits: Vec<u8> = text.iter().copied().filter(|&b| b != b':').collect();
    let colons = text.len() - digits.len();
    if digits.len() != 64 || (colons != 0 && colons != 31) {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Where the directive takes the transmitter's keys from.
#[derive(Debug, PartialEq, Eq)]
pub enum KeysArg<'a> {
    File(&'a [u8]),
    Request(String),
}

/// `zone=NAME:SIZE issuer=URL audience=URI (keys=FILE | keys_request=URI)
/// [max_age=TIME] [token_lifetime=TIME] [bearer_file=FILE] [index=SIZE|off]
/// [client_certificate=THUMBPRINT[,THUMBPRINT...]]`.
pub fn parse<'a>(args: &[&'a [u8]]) -> Result<SsfArgs<'a>, String> {
    let mut zone = None;
    let (mut issuer, mut audience, mut keys, mut bearer_file) = (None, None, None, None);
    let (mut max_age_ms, mut token_lifetime_ms) = (DEFAULT_MAX_AGE_MS, DEFAULT_TOKEN_LIFETIME_MS);
    let mut index = None;
    let mut certificates: Option<Vec<[u8; 32]>> = None;
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
            b"keys" | b"keys_request" if keys.is_some() => {
                return Err("takes one of \"keys=\" and \"keys_request=\", once".into());
            }
            b"keys" if !value.is_empty() => keys = Some(KeysArg::File(value)),
            b"keys_request" => keys = Some(KeysArg::Request(parse_keys_request(value)?)),
            b"bearer_file" if !value.is_empty() => {
                fresh(bearer_file.is_some())?;
                bearer_file = Some(value);
            }
            b"index" => {
                fresh(index.is_some())?;
                index = Some(match value {
                    b"off" => None,
                    size => Some(parse_size(size).ok_or(format!(
                        "has an invalid \"{text}\" (a size, such as 1m, or off)"
                    ))?),
                });
            }
            b"client_certificate" => {
                fresh(certificates.is_some())?;
                let list = value
                    .split(|&b| b == b',')
                    .map(parse_thumbprint)
                    .collect::<Option<Vec<_>>>()
                    .ok_or(format!("has an invalid \"{text}\" (SHA-256 thumbprints: 43 base64url characters or 64 hex digits, comma-separated)"))?;
                certificates = Some(list);
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
        keys: keys.ok_or(
            "needs a \"keys=FILE\" or \"keys_request=URI\" parameter (the transmitter's JWK Set)",
        )?,
        max_age_ms,
        token_lifetime_ms,
        bearer_file,
        index_size: index.unwrap_or(Some(zone_size)),
        certificates: certificates.unwrap_or_default(),
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
        assert_eq!(a.keys, KeysArg::File(b"t.jwks"));
        assert_eq!(a.max_age_ms, DEFAULT_MAX_AGE_MS);
        assert_eq!(a.token_lifetime_ms, DEFAULT_TOKEN_LIFETIME_MS);
        assert_eq!(a.bearer_file, None);
        assert_eq!(a.index_size, Some(1 << 20));
        let a = parse(&args(
            "zone=s:64k issuer=i audience=a keys=k max_age=1m token_lifetime=2h bearer_file=b",
        ))
        .unwrap();
        assert_eq!((a.max_age_ms, a.token_lifetime_ms), (60_000, 7_200_000));
        assert_eq!(a.bearer_file, Some(&b"b"[..]));
        assert_eq!(a.index_size, Some(64 << 10));
        let a = parse(&args("zone=s:64k issuer=i audience=a keys=k index=off")).unwrap();
        assert_eq!(a.index_size, None);
        let a = parse(&args("zone=s:64k issuer=i audience=a keys=k index=2m")).unwrap();
        assert_eq!(a.index_size, Some(2 << 20));
        let a = parse(&args(
            "zone=s:64k issuer=i audience=a keys_request=/_ssf_jwks",
        ))
        .unwrap();
        assert_eq!(a.keys, KeysArg::Request("/_ssf_jwks".into()));
    }

    #[test]
    fn a_fetched_set_needs_a_keys_zone_and_is_named_per_server() {
        let receiver = |keys| SsfReceiver {
            zone: core::ptr::null_mut(),
            stream: Stream {
                issuer: "i".into(),
                audience: "a".into(),
                max_age_s: 60,
            },
            keys,
            token_lifetime_ms: DEFAULT_TOKEN_LIFETIME_MS,
            bearer_sha256: None,
            certificates: Vec::new(),
            index_zone: None,
            metrics: crate::metrics::Catalogue::default().ssf(),
        };
        let file = receiver(KeySource::File {
            name: "f".into(),
            keys: Vec::new(),
        });
        let push = "auth_oauth2_token_ssf_push";
        assert!(location_keys(&file, false, &[0; 32], push)
            .unwrap()
            .is_none());
        let fetched = receiver(KeySource::Fetched { uri: "/_j".into() });
        let e = location_keys(&fetched, false, &[0; 32], "auth_oauth2_token_ssf_poll").unwrap_err();
        assert!(e.contains("auth_oauth2_token_jwt_keys_cache"), "{e}");
        assert!(e.starts_with("\"auth_oauth2_token_ssf_poll\""), "{e}");
        let one = location_keys(&fetched, true, &[1; 32], push)
            .unwrap()
            .unwrap();
        let other = location_keys(&fetched, true, &[2; 32], push)
            .unwrap()
            .unwrap();
        assert_eq!(one.uri, "/_j");
        assert_ne!(one.set_key, other.set_key);
        assert_ne!(one.set_key, one.fetching_key);
    }

    #[test]
    fn thumbprints_in_base64url_or_hex() {
        let digest: [u8; 32] = core::array::from_fn(|i| (i * 7 + 1) as u8);
        let b64 = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
        };
        let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
        let colons: Vec<String> = digest.iter().map(|b| format!("{b:02x}")).collect();
        for text in [b64.clone(), hex.clone(), colons.join(":")] {
            assert_eq!(parse_thumbprint(text.as_bytes()), Some(digest), "{text}");
        }
        for bad in [&hex[1..], &b64[1..], "zz", "", &colons.join(":")[1..]] {
            assert_eq!(parse_thumbprint(bad.as_bytes()), None, "{bad}");
        }
        let line = format!("zone=s:1m issuer=i audience=a keys=k client_certificate={b64},{hex}");
        assert_eq!(
            parse(&args(&line)).unwrap().certificates,
            vec![digest, digest]
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (line, words) in [
            ("issuer=i audience=a keys=k", "zone=NAME:SIZE"),
            ("zone=s:1m audience=a keys=k", "issuer="),
            ("zone=s:1m issuer=i keys=k", "audience="),
            ("zone=s:1m issuer=i audience=a", "keys=FILE"),
            (
                "zone=s:1m issuer=i audience=a keys=k keys_request=/j",
                "one of",
            ),
            (
                "zone=s:1m issuer=i audience=a keys_request=/j keys_request=/j",
                "one of",
            ),
            (
                "zone=s:1m issuer=i audience=a keys_request=jwks",
                "internal location",
            ),
            (
                "zone=s:1m issuer=i audience=a keys_request=",
                "internal location",
            ),
            ("zone=s issuer=i audience=a keys=k", "invalid \"zone\""),
            ("zone=:1m issuer=i audience=a keys=k", "invalid \"zone\""),
            ("zone=s:1m issuer=i audience=a keys=k max_age=2d", "max_age"),
            ("zone=s:1m issuer=i audience=a keys=k max_age=0", "max_age"),
            ("zone=s:1m issuer= audience=a keys=k", "empty"),
            ("zone=s:1m issuer=i issuer=j audience=a keys=k", "twice"),
            ("zone=s:1m issuer=i audience=a keys=k x=1", "unknown"),
            ("zone=s:1m issuer=i audience=a keys=k on", "unknown"),
            ("zone=s:1m issuer=i audience=a keys=k index=no", "index"),
            (
                "zone=s:1m issuer=i audience=a keys=k client_certificate=abc",
                "thumbprints",
            ),
            (
                "zone=s:1m issuer=i audience=a keys=k client_certificate=",
                "thumbprints",
            ),
            (
                "zone=s:1m issuer=i audience=a keys=k index=off index=1m",
                "twice",
            ),
        ] {
            let e = parse(&args(line)).unwrap_err();
            assert!(e.contains(words), "{line}: {e}");
        }
    }
}
