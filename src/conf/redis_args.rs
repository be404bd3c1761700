//! `auth_oauth2_token_redis` and the `auth_oauth2_token_redis_*` location
//! directives: their arguments, checked before nginx starts.

/// The default key prefix (the purge channel is `<prefix>purge`).
pub const DEFAULT_PREFIX: &[u8] = b"oauth2:";

/// What `auth_oauth2_token_redis` says; the files are read by the glue.
#[derive(Debug, PartialEq, Eq)]
pub struct RedisArgs<'a> {
    /// An upstream name or `host:port`, as `memcached_pass` takes it.
    pub server: &'a [u8],
    pub key_file: &'a [u8],
    pub old_key_file: Option<&'a [u8]>,
    pub password_file: Option<&'a [u8]>,
    pub user: Option<Vec<u8>>,
    pub database: u32,
    pub prefix: Vec<u8>,
    /// `sentinel=NAME`: the server is the sentinels (Redis Sentinel), and
    /// the tier's server is the primary they name NAME.
    pub sentinel: Option<Vec<u8>>,
    /// `sentinel_password_file=PATH`: the sentinels' password (`AUTH`).
    pub sentinel_password_file: Option<&'a [u8]>,
    /// `cluster`: the server is a Redis Cluster's seed nodes.
    pub cluster: bool,
}

/// `<server> key_file=PATH [old_key_file=PATH] [password_file=PATH]
/// [user=NAME] [database=N] [prefix=STRING] [sentinel=NAME]
/// [sentinel_password_file=PATH] [cluster]`.
pub fn parse<'a>(args: &[&'a [u8]]) -> Result<RedisArgs<'a>, String> {
    let (&server, params) = args.split_first().ok_or("needs a server")?;
    if server.is_empty() || server.contains(&b'=') {
        return Err("needs an upstream name or host:port first".into());
    }
    let mut key_file = None;
    let mut old_key_file = None;
    let mut password_file = None;
    let mut user = None;
    let mut database = None;
    let mut prefix = None;
    let mut sentinel = None;
    let mut sentinel_password_file = None;
    let mut cluster = false;
    for &param in params {
        if param == b"cluster" {
            if cluster {
                return Err("sets \"cluster\" twice".into());
            }
            cluster = true;
            continue;
        }
        let text = String::from_utf8_lossy(param);
        let (name, value) = match param.iter().position(|b| *b == b'=') {
            Some(at) => (&param[..at], &param[at + 1..]),
            None => return Err(format!("has an unknown parameter \"{text}\"")),
        };
        let name_text = String::from_utf8_lossy(name);
        let duplicate = || format!("sets \"{name_text}\" twice");
        match name {
            b"key_file" | b"old_key_file" | b"password_file" | b"sentinel_password_file" => {
                if value.is_empty() {
                    return Err(format!("needs a file name in \"{name_text}=\""));
                }
                let slot = match name {
                    b"key_file" => &mut key_file,
                    b"old_key_file" => &mut old_key_file,
                    b"password_file" => &mut password_file,
                    _ => &mut sentinel_password_file,
                };
                if slot.replace(value).is_some() {
                    return Err(duplicate());
                }
            }
            b"user" => {
                if value.is_empty() || value.iter().any(|b| !b.is_ascii_graphic()) {
                    return Err(
                        "needs a user name without spaces or control characters in \"user=\""
                            .into(),
                    );
                }
                if user.replace(value.to_vec()).is_some() {
                    return Err(duplicate());
                }
            }
            b"database" => {
                let n = std::str::from_utf8(value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|n| *n <= i32::MAX as u32)
                    .ok_or("has an invalid number in \"database=\"")?;
                if database.replace(n).is_some() {
                    return Err(duplicate());
                }
            }
            b"prefix" => {
                if value.is_empty() || value.iter().any(|b| !b.is_ascii_graphic()) {
                    return Err(
                        "needs a prefix without spaces or control characters in \"prefix=\"".into(),
                    );
                }
                if prefix.replace(value.to_vec()).is_some() {
                    return Err(duplicate());
                }
            }
            b"sentinel" => {
                if value.is_empty()
                    || value.len() > 200
                    || value.iter().any(|b| !b.is_ascii_graphic())
                {
                    return Err("needs a master name (up to 200 bytes, no spaces or control characters) in \"sentinel=\"".into());
                }
                if sentinel.replace(value.to_vec()).is_some() {
                    return Err(duplicate());
                }
            }
            _ => return Err(format!("has an unknown parameter \"{name_text}=\"")),
        }
    }
    Ok(RedisArgs {
        server,
        key_file: key_file.ok_or("needs a \"key_file=PATH\" parameter (the fleet secret)")?,
        old_key_file,
        password_file: if user.is_some() && password_file.is_none() {
            return Err("has \"user=\" without \"password_file=\"".into());
        } else {
            password_file
        },
        user,
        database: database.unwrap_or(0),
        prefix: prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_vec()),
        sentinel_password_file: if sentinel.is_none() && sentinel_password_file.is_some() {
            return Err("has \"sentinel_password_file=\" without \"sentinel=\"".into());
        } else {
            sentinel_password_file
        },
        sentinel,
        cluster,
    })
    .and_then(refuse_in_cluster)
}

/// What a Redis Cluster does not take: another topology, a database
/// other than 0, and a second key (its names would be in other slots than
/// the current key's, and a read or purge would span two).
fn refuse_in_cluster(args: RedisArgs<'_>) -> Result<RedisArgs<'_>, String> {
    if !args.cluster {
        return Ok(args);
    }
    if args.sentinel.is_some() {
        return Err("takes \"cluster\" or \"sentinel=\", not both".into());
    }
    if args.database != 0 {
        return Err(
            "has \"database=\" with \"cluster\" (a Redis Cluster has database 0 only)".into(),
        );
    }
    if args.old_key_file.is_some() {
        return Err("has \"old_key_file=\" with \"cluster\" (a token's names under two keys are in two slots; rotate by changing key_file on every gateway: entries written under the old key become misses)".into());
    }
    if args.prefix.contains(&b'{') {
        return Err("has a \"prefix=\" with \"{\" with \"cluster\" (a hash tag would put every name in one slot)".into());
    }
    Ok(args)
}

/// The fleet secret of a key file: its bytes without trailing whitespace.
pub fn fleet_secret(contents: &[u8]) -> &[u8] {
    let end = contents
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &contents[..end]
}

/// `auth_oauth2_token_redis_next_upstream error | timeout | off ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextUpstream {
    pub error: bool,
    pub timeout: bool,
}

impl Default for NextUpstream {
    fn default() -> Self {
        NextUpstream {
            error: true,
            timeout: true,
        }
    }
}

pub fn parse_next_upstream(args: &[&[u8]]) -> Result<NextUpstream, String> {
    let mut next = NextUpstream {
        error: false,
        timeout: false,
    };
    let mut off = false;
    for &arg in args {
        match arg {
            b"error" => next.error = true,
            b"timeout" => next.timeout = true,
            b"off" => off = true,
            _ => {
                return Err(format!(
                    "has an invalid value \"{}\": use error, timeout or off",
                    String::from_utf8_lossy(arg)
                ))
            }
        }
    }
    if off && (next.error || next.timeout) {
        return Err("takes \"off\" alone".into());
    }
    Ok(next)
}

/// A timeout of `auth_oauth2_token_redis_*_timeout`, in milliseconds.
pub fn parse_timeout(arg: &[u8]) -> Result<u64, String> {
    super::cache_args::parse_time_ms(arg)
        .and_then(|ms| u64::try_from(ms).ok())
        .filter(|ms| (1..=u64::from(u32::MAX)).contains(ms))
        .ok_or("needs a time, like 500ms or 2s".into())
}

/// `auth_oauth2_token_redis_buffer_size`: at least 1k, at most 1m.
pub fn parse_buffer_size(arg: &[u8]) -> Result<usize, String> {
    super::cache_args::parse_size(arg)
        .filter(|n| (1024..=1 << 20).contains(n))
        .ok_or("needs a size from 1k to 1m".into())
}

/// The longest tenant id (`auth_oauth2_token_shared_cache_tenant`).
pub const MAX_TENANT_BYTES: usize = 128;

/// `auth_oauth2_token_shared_cache_tenant ID`: letters, digits and
/// `-._:/@`, at most [`MAX_TENANT_BYTES`]; it is part of every cache key.
pub fn parse_tenant(arg: &[u8]) -> Result<Vec<u8>, String> {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || b"-._:/@".contains(b);
    if arg.is_empty() || arg.len() > MAX_TENANT_BYTES || !arg.iter().all(allowed) {
        return Err(format!(
            "needs an id of 1 to {MAX_TENANT_BYTES} letters, digits and \"-._:/@\""
        ));
    }
    Ok(arg.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_and_full() {
        let a = parse(&[b"redis", b"key_file=k"]).unwrap();
        assert_eq!(a.server, b"redis");
        assert_eq!(a.key_file, b"k");
        assert_eq!(a.database, 0);
        assert_eq!(a.prefix, DEFAULT_PREFIX);
        let a = parse(&[
            b"127.0.0.1:6379",
            b"key_file=k",
            b"old_key_file=o",
            b"password_file=p",
            b"user=gw",
            b"database=3",
            b"prefix=fleet1:",
        ])
        .unwrap();
        assert_eq!(a.old_key_file, Some(&b"o"[..]));
        assert_eq!(a.password_file, Some(&b"p"[..]));
        assert_eq!(a.user.as_deref(), Some(&b"gw"[..]));
        assert_eq!(a.database, 3);
        assert_eq!(a.prefix, b"fleet1:");
        assert_eq!(a.sentinel, None);
        let a = parse(&[b"sentinels", b"key_file=k", b"sentinel=mymaster"]).unwrap();
        assert_eq!(a.sentinel.as_deref(), Some(&b"mymaster"[..]));
        let a = parse(&[
            b"sentinels",
            b"key_file=k",
            b"sentinel=m",
            b"sentinel_password_file=sp",
        ])
        .unwrap();
        assert_eq!(a.sentinel_password_file, Some(&b"sp"[..]));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |args: &[&[u8]]| parse(args).unwrap_err();
        assert!(err(&[b"r"]).contains("key_file"));
        assert!(err(&[b"r", b"key_file=k", b"key_file=j"]).contains("twice"));
        assert!(err(&[b"r", b"key_file=k", b"colour=red"]).contains("unknown"));
        assert!(err(&[b"r", b"key_file=k", b"bare"]).contains("unknown"));
        assert!(err(&[b"r", b"key_file=k", b"database=x"]).contains("database"));
        assert!(err(&[b"r", b"key_file=k", b"database=-1"]).contains("database"));
        assert!(err(&[b"r", b"key_file=k", b"database=99999999999"]).contains("database"));
        assert!(err(&[b"r", b"key_file=k", b"user=gw"]).contains("password_file"));
        assert!(err(&[b"r", b"key_file="]).contains("file name"));
        assert!(err(&[b"r", b"key_file=k", b"prefix="]).contains("prefix"));
        assert!(err(&[b"key_file=k"]).contains("upstream"));
        assert!(err(&[b"r", b"key_file=k", b"sentinel="]).contains("sentinel"));
        assert!(err(&[b"r", b"key_file=k", b"sentinel=a\x01"]).contains("sentinel"));
        let long = [&b"sentinel="[..], &[b'm'; 201]].concat();
        assert!(err(&[b"r", b"key_file=k", &long]).contains("sentinel"));
        assert!(err(&[b"r", b"key_file=k", b"sentinel=a", b"sentinel=b"]).contains("twice"));
        assert!(err(&[b"r", b"key_file=k", b"sentinel_password_file=p"]).contains("without"));
    }

    #[test]
    fn secrets_lose_trailing_whitespace_only() {
        assert_eq!(fleet_secret(b"ab cd \n\r\n"), b"ab cd");
        assert_eq!(fleet_secret(b"\n"), b"");
    }

    #[test]
    fn location_values() {
        assert_eq!(
            parse_next_upstream(&[b"error"]).unwrap(),
            NextUpstream {
                error: true,
                timeout: false
            }
        );
        assert_eq!(
            parse_next_upstream(&[b"off"]).unwrap(),
            NextUpstream {
                error: false,
                timeout: false
            }
        );
        assert!(parse_next_upstream(&[b"off", b"error"]).is_err());
        assert!(parse_next_upstream(&[b"http_500"]).is_err());
        assert_eq!(parse_timeout(b"500ms"), Ok(500));
        assert_eq!(parse_timeout(b"2s"), Ok(2000));
        assert!(parse_timeout(b"0").is_err());
        assert!(parse_timeout(b"x").is_err());
        assert_eq!(parse_buffer_size(b"16k"), Ok(16384));
        assert!(parse_buffer_size(b"10").is_err());
    }

    #[test]
    fn tenant_ids() {
        for ok in [
            &b"acme"[..],
            b"fleet-1.eu:prod/api@2026",
            &[b'a'; MAX_TENANT_BYTES],
        ] {
            assert_eq!(parse_tenant(ok), Ok(ok.to_vec()));
        }
        for bad in [
            &b""[..],
            b"a b",
            b"a\"b",
            b"a;b",
            b"\xc3\xa9",
            &[b'a'; MAX_TENANT_BYTES + 1],
        ] {
            let err = parse_tenant(bad).unwrap_err();
            assert!(err.contains("letters, digits"), "{err}");
        }
    }

    #[test]
    fn cluster_and_what_it_refuses() {
        let a = parse(&[b"seeds", b"key_file=k", b"cluster"]).unwrap();
        assert!(a.cluster);
        assert!(!parse(&[b"r", b"key_file=k"]).unwrap().cluster);
        let err = |args: &[&[u8]]| parse(args).unwrap_err();
        assert!(err(&[b"r", b"key_file=k", b"cluster", b"cluster"]).contains("twice"));
        assert!(err(&[b"r", b"key_file=k", b"cluster", b"sentinel=m"]).contains("not both"));
        assert!(err(&[b"r", b"key_file=k", b"cluster", b"database=1"]).contains("database"));
        assert!(err(&[b"r", b"key_file=k", b"cluster", b"old_key_file=o"]).contains("old_key_file"));
        assert!(err(&[b"r", b"key_file=k", b"cluster", b"prefix={x}:"]).contains("prefix"));
        assert!(err(&[b"r", b"key_file=k", b"cluster=yes"]).contains("unknown"));
    }
}
