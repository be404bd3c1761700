//! Checks across directives that the glue makes while it merges a location,
//! where more than this block's configuration is known (the http block's).
//! Each error is the text `nginx -t` prints.

use super::LocationConf;

/// `auth_oauth2_token_shared_cache` (a location or an enclosing block)
/// needs `auth_oauth2_token_redis` in the http block; `redis_configured`
/// says whether the http block has it.
pub fn shared_cache_needs_redis(
    location: &LocationConf,
    redis_configured: bool,
) -> Result<(), String> {
    if location.shared_cache_uri().is_some() && !redis_configured {
        return Err(
            "\"auth_oauth2_token_shared_cache\" needs \"auth_oauth2_token_redis\" in the http block"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_cache(value: Option<&[u8]>) -> LocationConf {
        LocationConf {
            shared_cache: Some(value.map(<[u8]>::to_vec)),
            ..Default::default()
        }
    }

    #[test]
    fn shared_cache_without_redis_fails_naming_both_directives() {
        assert_eq!(
            shared_cache_needs_redis(&shared_cache(Some(b"/_redis")), false),
            Err("\"auth_oauth2_token_shared_cache\" needs \"auth_oauth2_token_redis\" in the http block".into())
        );
    }

    #[test]
    fn shared_cache_with_redis_passes() {
        assert_eq!(
            shared_cache_needs_redis(&shared_cache(Some(b"/_redis")), true),
            Ok(())
        );
    }

    #[test]
    fn no_shared_cache_or_off_needs_no_redis() {
        assert_eq!(
            shared_cache_needs_redis(&LocationConf::default(), false),
            Ok(())
        );
        assert_eq!(shared_cache_needs_redis(&shared_cache(None), false), Ok(()));
    }
}
