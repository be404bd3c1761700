//! Arguments of `auth_oauth2_token_introspect_cache zone=NAME:SIZE
//! [max_ttl=TIME] [negative_ttl=TIME] [stale_if_error=TIME]`, in nginx's
//! size and time syntax.

use crate::oauth::cache::CachePolicy;

#[derive(Debug, PartialEq, Eq)]
pub struct CacheArgs {
    pub zone_name: Vec<u8>,
    pub zone_size: usize,
    pub policy: CachePolicy,
}

/// `auth_oauth2_token_exchange_cache` takes no `negative_ttl`: failed exchanges are never cached.
pub fn parse_exchange(args: &[&[u8]]) -> Result<CacheArgs, String> {
    if let Some(arg) = args.iter().find(|a| a.starts_with(b"negative_ttl=")) {
        return Err(format!(
            "has an unknown parameter \"{}\"",
            String::from_utf8_lossy(arg)
        ));
    }
    parse(args)
}

pub fn parse(args: &[&[u8]]) -> Result<CacheArgs, String> {
    let mut zone = None;
    let mut policy = CachePolicy::default();
    for arg in args {
        let text = String::from_utf8_lossy(arg);
        if let Some(v) = arg.strip_prefix(b"zone=") {
            let colon = v
                .iter()
                .rposition(|&b| b == b':')
                .ok_or_else(|| format!("needs \"zone=NAME:SIZE\", not \"{text}\""))?;
            let (name, size) = (&v[..colon], &v[colon + 1..]);
            if name.is_empty() {
                return Err(format!("has an empty zone name in \"{text}\""));
            }
            let size = parse_size(size)
                .ok_or_else(|| format!("has an invalid zone size in \"{text}\""))?;
            zone = Some((name.to_vec(), size));
        } else if let Some(v) = arg.strip_prefix(b"max_ttl=") {
            policy.max_ttl_ms =
                parse_time_ms(v).ok_or_else(|| format!("has an invalid time in \"{text}\""))?;
        } else if let Some(v) = arg.strip_prefix(b"refresh=") {
            policy.refresh_pct = v
                .strip_suffix(b"%")
                .and_then(|p| std::str::from_utf8(p).ok()?.parse::<u8>().ok())
                .filter(|p| (1..=99).contains(p))
                .ok_or_else(|| {
                    format!("needs a share like \"refresh=80%\" (1-99%), not \"{text}\"")
                })?;
        } else if let Some(v) = arg.strip_prefix(b"stale_if_error=") {
            policy.stale_if_error_ms =
                parse_time_ms(v).ok_or_else(|| format!("has an invalid time in \"{text}\""))?;
        } else if let Some(v) = arg.strip_prefix(b"negative_ttl=") {
            policy.negative_ttl_ms =
                parse_time_ms(v).ok_or_else(|| format!("has an invalid time in \"{text}\""))?;
        } else {
            return Err(format!("has an unknown parameter \"{text}\""));
        }
    }
    let (zone_name, zone_size) = zone.ok_or("needs a \"zone=NAME:SIZE\" parameter")?;
    Ok(CacheArgs {
        zone_name,
        zone_size,
        policy,
    })
}

/// `1024`, `64k`, `10m`, `1g` (case-insensitive), as nginx's `ngx_parse_size`.
pub fn parse_size(s: &[u8]) -> Option<usize> {
    let (digits, scale) = match s.last()?.to_ascii_lowercase() {
        b'k' => (&s[..s.len() - 1], 1usize << 10),
        b'm' => (&s[..s.len() - 1], 1 << 20),
        b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    number(digits)?.checked_mul(scale)
}

/// nginx time syntax in milliseconds: `500ms`, `30s`, `5m`, `1h`, `1d`, `1w`,
/// a bare number of seconds, or several parts like `1m30s`.
pub fn parse_time_ms(s: &[u8]) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let value = number(&rest[..digits])? as i64;
        rest = &rest[digits..];
        let unit_len = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
        let scale = match &rest[..unit_len] {
            b"ms" => 1,
            b"" | b"s" => 1000,
            b"m" => 60_000,
            b"h" => 3_600_000,
            b"d" => 86_400_000,
            b"w" => 604_800_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(value.checked_mul(scale)?)?;
    }
    Some(total)
}

fn number(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_is_a_share() {
        let args: Vec<&[u8]> = vec![b"zone=z:1m", b"refresh=80%"];
        assert_eq!(parse(&args).unwrap().policy.refresh_pct, 80);
        for bad in [
            &b"refresh=80"[..],
            b"refresh=0%",
            b"refresh=100%",
            b"refresh=x%",
        ] {
            let args: Vec<&[u8]> = vec![b"zone=z:1m", bad];
            assert!(parse(&args).unwrap_err().contains("refresh=80%"));
        }
    }

    #[test]
    fn stale_if_error_is_a_time() {
        let args: Vec<&[u8]> = vec![b"zone=z:1m", b"max_ttl=1s", b"stale_if_error=30s"];
        assert_eq!(parse(&args).unwrap().policy.stale_if_error_ms, 30_000);
        let args: Vec<&[u8]> = vec![b"zone=z:1m", b"stale_if_error=30s"];
        assert_eq!(
            parse_exchange(&args).unwrap().policy.stale_if_error_ms,
            30_000
        );
        let args: Vec<&[u8]> = vec![b"zone=z:1m", b"stale_if_error=soon"];
        assert!(parse(&args).unwrap_err().contains("invalid time"));
    }

    #[test]
    fn full_directive() {
        let a = parse(&[b"zone=tokens:10m", b"max_ttl=60s", b"negative_ttl=5s"]).unwrap();
        assert_eq!(a.zone_name, b"tokens");
        assert_eq!(a.zone_size, 10 << 20);
        assert_eq!(
            a.policy,
            CachePolicy {
                max_ttl_ms: 60_000,
                refresh_pct: 0,
                stale_if_error_ms: 0,
                negative_ttl_ms: 5_000
            }
        );
    }

    #[test]
    fn defaults() {
        let a = parse(&[b"zone=z:1m"]).unwrap();
        assert_eq!(
            a.policy,
            CachePolicy {
                max_ttl_ms: 300_000,
                refresh_pct: 0,
                stale_if_error_ms: 0,
                negative_ttl_ms: 0
            }
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(parse(&[]).unwrap_err().contains("zone=NAME:SIZE"));
        assert!(parse(&[b"zone=z"]).unwrap_err().contains("zone=NAME:SIZE"));
        assert!(parse(&[b"zone=:1m"])
            .unwrap_err()
            .contains("empty zone name"));
        assert!(parse(&[b"zone=z:big"])
            .unwrap_err()
            .contains("invalid zone size"));
        assert!(parse(&[b"zone=z:1m", b"max_ttl=soon"])
            .unwrap_err()
            .contains("invalid time"));
        assert!(parse(&[b"zone=z:1m", b"ttl=5"])
            .unwrap_err()
            .contains("unknown parameter \"ttl=5\""));
    }

    #[test]
    fn exchange_cache_has_no_negative_ttl() {
        assert!(parse_exchange(&[b"zone=x:1m", b"max_ttl=60s"]).is_ok());
        assert!(parse_exchange(&[b"zone=x:1m", b"negative_ttl=5s"])
            .unwrap_err()
            .contains("unknown parameter"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(b"4096"), Some(4096));
        assert_eq!(parse_size(b"64k"), Some(65536));
        assert_eq!(parse_size(b"10M"), Some(10 << 20));
        assert_eq!(parse_size(b"1g"), Some(1 << 30));
        assert_eq!(parse_size(b"k"), None);
        assert_eq!(parse_size(b"-1m"), None);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time_ms(b"0"), Some(0));
        assert_eq!(parse_time_ms(b"30"), Some(30_000));
        assert_eq!(parse_time_ms(b"500ms"), Some(500));
        assert_eq!(parse_time_ms(b"5m"), Some(300_000));
        assert_eq!(parse_time_ms(b"1h"), Some(3_600_000));
        assert_eq!(parse_time_ms(b"1m30s"), Some(90_000));
        assert_eq!(parse_time_ms(b""), None);
        assert_eq!(parse_time_ms(b"1x"), None);
        assert_eq!(parse_time_ms(b"s"), None);
    }
}
