//! The caches of a location: the shared-memory zones of
//! `introspect_cache`, `exchange_cache` and `jwt_cache` (declared here), `cache_vary`,
//! `shared_cache`, which adds the Redis tier, and
//! `shared_cache_tenant`, whose answers they are.

use core::ffi::c_void;

use ngx::ffi::{ngx_shared_memory_add, ngx_str_t};
use ngx::http::HttpModule;

use super::call::{args_of, handler, set_once, Call};
use crate::conf::{cache_args, jwt, redis_args, CacheConf};
use crate::module::Module;
use crate::shm::{counters, zone};

impl<C> Call<'_, C> {
    /// Declares (or finds) the shared zone of a cache directive.
    fn cache_zone(&mut self, parsed: cache_args::CacheArgs) -> Result<CacheConf, String> {
        let zone_name = String::from_utf8_lossy(&parsed.zone_name).into_owned();
        if zone_name == counters::ZONE_NAME {
            return Err(format!(
                "cannot use the zone name \"{zone_name}\": the module's metrics use it"
            ));
        }
        // SAFETY: nginx sets its page size before it parses any configuration.
        if let Some(error) = unsafe { zone::zone_size_error(parsed.zone_size) } {
            return Err(format!(
                "zone \"{}\" is {error}",
                String::from_utf8_lossy(&parsed.zone_name),
            ));
        }
        // SAFETY: cf is the configuration being parsed (see `Call`). The name
        // is copied into the configuration pool, which lives as long as the
        // cycle that keeps a pointer to it; the zone returned by nginx is
        // ours to set up until the cycle initialises it.
        unsafe {
            let cf = self.cf;
            let mut name =
                ngx_str_t::from_bytes((*cf).pool, &parsed.zone_name).ok_or("cannot allocate")?;
            let tag = Module::module() as *const _ as *mut c_void;
            let shm_zone = ngx_shared_memory_add(cf, &mut name, parsed.zone_size, tag);
            if shm_zone.is_null() {
                return Err("cannot use this zone (see the message above)".into());
            }
            (*shm_zone).init.get_or_insert(zone::init_zone);
            let main = self.main_conf()?;
            if !main.zones.iter().any(|(name, _)| *name == zone_name) {
                main.zones.push((zone_name.clone(), shm_zone.cast()));
            }
            Ok(CacheConf {
                zone: shm_zone.cast(),
                policy: parsed.policy,
                metrics: main.metrics.zone(&zone_name),
            })
        }
    }
}

handler!(set_introspect_cache, |c| {
    let zone = c.cache_zone(cache_args::parse(&args_of(c))?)?;
    set_once(&mut c.conf.introspection.cache, zone)
});

handler!(set_exchange_cache, |c| {
    let zone = c.cache_zone(cache_args::parse_exchange(&args_of(c))?)?;
    set_once(&mut c.conf.token_endpoint.cache, zone)
});

handler!(set_jwt_cache, |c| {
    let zone = c.cache_zone(jwt::parse_cache(&args_of(c))?)?;
    set_once(&mut c.conf.jwt.cache, zone)
});

handler!(set_jwt_keys_cache, |c| {
    let (zone, refresh) = jwt::parse_keys_cache(&args_of(c))?;
    let zone = c.cache_zone(zone)?;
    set_once(&mut c.conf.jwt.keys_cache, jwt::KeysCache { zone, refresh })
});

handler!(set_cache_vary, |c| {
    let value = c.template(c.arg)?;
    set_once(&mut c.conf.cache_vary, value)
});

// `auth_oauth2_token_shared_cache URI | off;`: this block's caches also
// use the Redis tier through the internal location at URI.
handler!(set_shared_cache, |c| {
    if c.conf.shared_cache.is_some() {
        return Err("is duplicate".into());
    }
    let uri = match c.arg {
        b"off" => None,
        uri if uri.starts_with(b"/") => Some(uri.to_vec()),
        _ => return Err("needs the URI of an internal location (\"/...\") or \"off\"".into()),
    };
    c.conf.shared_cache = Some(uri);
    Ok(())
});

// `auth_oauth2_token_shared_cache_tenant ID;`: whose answers this block's
// caches keep, part of every cache key (and the only thing that tells
// tenants apart in the Redis tier when their credentials are out of the
// module's sight).
handler!(set_shared_cache_tenant, |c| set_once(
    &mut c.conf.shared_tenant,
    redis_args::parse_tenant(c.arg)?
));
