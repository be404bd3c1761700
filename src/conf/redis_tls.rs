//! `auth_oauth2_token_redis_ssl*`: TLS to the Redis tier, set in the
//! location with `auth_oauth2_token_redis_pass` (as `proxy_ssl_*` is for
//! `proxy_pass`). The values, what `nginx -t` refuses of them, and the
//! one setting every connection of the tier takes (the calls', the
//! revocation channel's).

/// The protocols `auth_oauth2_token_redis_ssl_protocols` may name; TLS
/// before 1.2 is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocols {
    pub tls1_2: bool,
    pub tls1_3: bool,
}

impl Default for Protocols {
    fn default() -> Protocols {
        Protocols {
            tls1_2: true,
            tls1_3: true,
        }
    }
}

/// The `auth_oauth2_token_redis_ssl*` values of one location (not
/// inherited). File names are full paths (the glue resolves them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RedisTls {
    pub enabled: Option<bool>,
    pub verify: Option<bool>,
    pub verify_depth: Option<u32>,
    pub trusted_certificate: Option<Vec<u8>>,
    pub name: Option<Vec<u8>>,
    pub server_name: Option<bool>,
    pub certificate: Option<Vec<u8>>,
    pub certificate_key: Option<Vec<u8>>,
    pub protocols: Option<Protocols>,
}

/// The default of `auth_oauth2_token_redis_ssl_verify_depth`, nginx's.
pub const DEFAULT_VERIFY_DEPTH: u32 = 1;

impl RedisTls {
    /// `auth_oauth2_token_redis_ssl on`.
    pub fn on(&self) -> bool {
        self.enabled == Some(true)
    }

    pub fn verifies(&self) -> bool {
        self.verify == Some(true)
    }

    pub fn sends_server_name(&self) -> bool {
        self.server_name == Some(true)
    }

    pub fn depth(&self) -> u32 {
        self.verify_depth.unwrap_or(DEFAULT_VERIFY_DEPTH)
    }

    /// Whether any of the directives is set in this location.
    pub fn is_set(&self) -> bool {
        *self != RedisTls::default()
    }

    /// What a location's values must be, together: `Err` names the
    /// directive at fault (`nginx -t` prints it).
    pub fn check(&self) -> Result<(), String> {
        if !self.on() {
            let given = [
                (self.verify.is_some(), "auth_oauth2_token_redis_ssl_verify"),
                (
                    self.verify_depth.is_some(),
                    "auth_oauth2_token_redis_ssl_verify_depth",
                ),
                (
                    self.trusted_certificate.is_some(),
                    "auth_oauth2_token_redis_ssl_trusted_certificate",
                ),
                (self.name.is_some(), "auth_oauth2_token_redis_ssl_name"),
                (
                    self.server_name.is_some(),
                    "auth_oauth2_token_redis_ssl_server_name",
                ),
                (
                    self.certificate.is_some(),
                    "auth_oauth2_token_redis_ssl_certificate",
                ),
                (
                    self.certificate_key.is_some(),
                    "auth_oauth2_token_redis_ssl_certificate_key",
                ),
                (
                    self.protocols.is_some(),
                    "auth_oauth2_token_redis_ssl_protocols",
                ),
            ];
            if let Some((_, name)) = given.iter().find(|(set, _)| *set) {
                return Err(format!(
                    "\"{name}\" has no effect without \"auth_oauth2_token_redis_ssl on\" in the same location"
                ));
            }
            return Ok(());
        }
        if self.verifies() && self.trusted_certificate.is_none() {
            return Err("\"auth_oauth2_token_redis_ssl_verify on\" needs \"auth_oauth2_token_redis_ssl_trusted_certificate\" (the CA that signed Redis' certificate)".into());
        }
        if !self.verifies() {
            if self.trusted_certificate.is_some() {
                return Err("\"auth_oauth2_token_redis_ssl_trusted_certificate\" has no effect without \"auth_oauth2_token_redis_ssl_verify on\"".into());
            }
            if self.verify_depth.is_some() {
                return Err("\"auth_oauth2_token_redis_ssl_verify_depth\" has no effect without \"auth_oauth2_token_redis_ssl_verify on\"".into());
            }
        }
        match (&self.certificate, &self.certificate_key) {
            (Some(_), None) => Err("\"auth_oauth2_token_redis_ssl_certificate\" needs \"auth_oauth2_token_redis_ssl_certificate_key\"".into()),
            (None, Some(_)) => Err("\"auth_oauth2_token_redis_ssl_certificate_key\" needs \"auth_oauth2_token_redis_ssl_certificate\"".into()),
            _ => Ok(()),
        }
    }
}

/// `auth_oauth2_token_redis_ssl_protocols TLSv1.2 TLSv1.3`: each at most once.
pub fn parse_protocols(args: &[&[u8]]) -> Result<Protocols, String> {
    let mut p = Protocols {
        tls1_2: false,
        tls1_3: false,
    };
    for &arg in args {
        let slot = match arg {
            b"TLSv1.2" => &mut p.tls1_2,
            b"TLSv1.3" => &mut p.tls1_3,
            b"SSLv2" | b"SSLv3" | b"TLSv1" | b"TLSv1.1" => {
                return Err(format!(
                    "refuses \"{}\": the Redis tier speaks TLSv1.2 or TLSv1.3",
                    String::from_utf8_lossy(arg)
                ))
            }
            _ => {
                return Err(format!(
                    "has an unknown protocol \"{}\" (TLSv1.2, TLSv1.3)",
                    String::from_utf8_lossy(arg)
                ))
            }
        };
        if core::mem::replace(slot, true) {
            return Err(format!("names \"{}\" twice", String::from_utf8_lossy(arg)));
        }
    }
    Ok(p)
}

/// `auth_oauth2_token_redis_ssl_verify_depth N`: 1 to 100.
pub fn parse_depth(arg: &[u8]) -> Result<u32, String> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| (1..=100).contains(n))
        .ok_or_else(|| "needs a depth from 1 to 100".into())
}

/// `auth_oauth2_token_redis_ssl_name NAME`: the name Redis' certificate
/// must carry (and the SNI name): a DNS name or an IP address, no port.
pub fn parse_name(arg: &[u8]) -> Result<Vec<u8>, String> {
    let ok = !arg.is_empty()
        && arg.len() <= 253
        && arg
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'));
    let ipv6 = arg.len() > 2
        && arg.len() <= 41
        && arg[0] == b'['
        && arg[arg.len() - 1] == b']'
        && arg[1..arg.len() - 1]
            .iter()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
    if ok || ipv6 {
        Ok(arg.to_vec())
    } else {
        Err("needs a host name or an IP address, without a port".into())
    }
}

/// The tier's TLS: every location with `auth_oauth2_token_redis_pass`
/// must say the same (the revocation channel takes it too, and TLS
/// sessions of one upstream are shared). `None` without TLS.
pub fn tier_setting<'a>(
    locations: impl IntoIterator<Item = &'a RedisTls>,
) -> Result<Option<&'a RedisTls>, String> {
    let mut first: Option<&RedisTls> = None;
    for tls in locations {
        match first {
            None => first = Some(tls),
            Some(seen) if seen != tls => {
                return Err("\"auth_oauth2_token_redis_ssl*\" must be the same in every location with \"auth_oauth2_token_redis_pass\" (the revocation channel uses them too)".into())
            }
            Some(_) => {}
        }
    }
    Ok(first.filter(|t| t.on()))
}

/// The tier's TLS as the glue keeps it once the context is made: the
/// `ngx_ssl_t` (opaque here), the name checked in Redis' certificate
/// (the `_ssl_name`, or the upstream's host), and whether to send it
/// (SNI) and check the certificate.
#[derive(Debug)]
pub struct TierTls {
    pub ssl: *mut core::ffi::c_void,
    pub name: Vec<u8>,
    pub server_name: bool,
    pub verify: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> RedisTls {
        RedisTls {
            enabled: Some(true),
            ..RedisTls::default()
        }
    }

    #[test]
    fn checks_name_the_directive_at_fault() {
        assert_eq!(RedisTls::default().check(), Ok(()));
        assert_eq!(on().check(), Ok(()));
        let off_with_verify = RedisTls {
            verify: Some(true),
            ..RedisTls::default()
        };
        assert!(off_with_verify
            .check()
            .unwrap_err()
            .contains("\"auth_oauth2_token_redis_ssl_verify\" has no effect"));
        let explicitly_off = RedisTls {
            enabled: Some(false),
            certificate: Some(b"/c.pem".to_vec()),
            ..RedisTls::default()
        };
        assert!(explicitly_off
            .check()
            .unwrap_err()
            .contains("auth_oauth2_token_redis_ssl_certificate\" has no effect"));
        let verify_no_ca = RedisTls {
            verify: Some(true),
            ..on()
        };
        assert!(verify_no_ca
            .check()
            .unwrap_err()
            .contains("needs \"auth_oauth2_token_redis_ssl_trusted_certificate\""));
        let ca_no_verify = RedisTls {
            trusted_certificate: Some(b"/ca.pem".to_vec()),
            ..on()
        };
        assert!(ca_no_verify.check().is_err());
        let depth_no_verify = RedisTls {
            verify_depth: Some(2),
            ..on()
        };
        assert!(depth_no_verify.check().is_err());
        let verified = RedisTls {
            verify: Some(true),
            verify_depth: Some(2),
            trusted_certificate: Some(b"/ca.pem".to_vec()),
            ..on()
        };
        assert_eq!(verified.check(), Ok(()));
        let cert_no_key = RedisTls {
            certificate: Some(b"/c.pem".to_vec()),
            ..on()
        };
        assert!(cert_no_key
            .check()
            .unwrap_err()
            .contains("needs \"auth_oauth2_token_redis_ssl_certificate_key\""));
        let key_no_cert = RedisTls {
            certificate_key: Some(b"/c.key".to_vec()),
            ..on()
        };
        assert!(key_no_cert.check().is_err());
        let mutual = RedisTls {
            certificate: Some(b"/c.pem".to_vec()),
            certificate_key: Some(b"/c.key".to_vec()),
            ..on()
        };
        assert_eq!(mutual.check(), Ok(()));
    }

    #[test]
    fn protocols() {
        assert_eq!(
            parse_protocols(&[b"TLSv1.3"]),
            Ok(Protocols {
                tls1_2: false,
                tls1_3: true
            })
        );
        assert_eq!(
            parse_protocols(&[b"TLSv1.2", b"TLSv1.3"]),
            Ok(Protocols::default())
        );
        assert!(parse_protocols(&[b"TLSv1.1"])
            .unwrap_err()
            .contains("refuses \"TLSv1.1\""));
        assert!(parse_protocols(&[b"TLSv1.3", b"TLSv1.3"])
            .unwrap_err()
            .contains("twice"));
        assert!(parse_protocols(&[b"tls13"])
            .unwrap_err()
            .contains("unknown"));
    }

    #[test]
    fn depth_and_name() {
        assert_eq!(parse_depth(b"2"), Ok(2));
        for bad in [&b""[..], b"0", b"101", b"-1", b"x", b"99999999999"] {
            assert!(parse_depth(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_name(b"redis.internal"),
            Ok(b"redis.internal".to_vec())
        );
        assert_eq!(parse_name(b"10.0.0.5"), Ok(b"10.0.0.5".to_vec()));
        assert_eq!(parse_name(b"[::1]"), Ok(b"[::1]".to_vec()));
        for bad in [&b""[..], b"redis:6379", b"a b", b"$host", b"[::1", b"x\n"] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_tier_takes_one_setting() {
        let plain = RedisTls::default();
        assert_eq!(tier_setting([&plain, &plain]), Ok(None));
        assert_eq!(tier_setting(core::iter::empty()), Ok(None));
        let tls = on();
        assert_eq!(tier_setting([&tls, &tls]), Ok(Some(&tls)));
        assert!(tier_setting([&tls, &plain]).is_err());
        let named = RedisTls {
            name: Some(b"a".to_vec()),
            ..on()
        };
        assert!(tier_setting([&tls, &named]).is_err());
    }
}
