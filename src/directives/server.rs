//! The server block a location is merged into, as the cache keys name it:
//! its listen addresses and server names, read from nginx's configuration
//! while the locations are merged (glue); and the location and its server
//! in words, for the messages of `nginx -t`.

use ngx::ffi::{
    ngx_conf_t, ngx_http_conf_addr_t, ngx_http_conf_ctx_t, ngx_http_conf_port_t,
    ngx_http_core_main_conf_t, ngx_http_core_module, ngx_http_core_srv_conf_t,
    ngx_http_server_name_t,
};

use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule};

use crate::oauth::cache::key::server_identity;

/// The identities of the server whose locations nginx is merging.
///
/// # Safety
/// `cf` must be the configuration nginx passes to `merge_loc_conf`: while
/// servers are merged its context's `srv_conf` is the server's, and every
/// `listen` (and the implicit default one) is in the core module's ports.
pub unsafe fn identity(cf: *mut ngx_conf_t) -> Identity {
    // SAFETY: `cf` is what nginx passes to `merge_loc_conf` (this
    // function's contract): its `ctx` holds the server's and the http
    // block's core confs; their arrays are nginx's, fully built by the time
    // locations are merged, and only read here.
    unsafe {
        let ctx = (*cf).ctx.cast::<ngx_http_conf_ctx_t>();
        let index = ngx_http_core_module.ctx_index;
        let cscf = (*(*ctx).srv_conf.add(index)).cast::<ngx_http_core_srv_conf_t>();
        let cmcf = (*(*ctx).main_conf.add(index)).cast::<ngx_http_core_main_conf_t>();

        let names = array::<ngx_http_server_name_t>(&(*cscf).server_names);
        let names: Vec<&[u8]> = names.iter().map(|n| n.name.as_bytes()).collect();

        let mut listens: Vec<&[u8]> = Vec::new();
        if !(*cmcf).ports.is_null() {
            for port in array::<ngx_http_conf_port_t>(&*(*cmcf).ports) {
                for addr in array::<ngx_http_conf_addr_t>(&port.addrs) {
                    let servers = array::<*mut ngx_http_core_srv_conf_t>(&addr.servers);
                    if servers.contains(&cscf) {
                        listens.push(addr.opt.addr_text.as_bytes());
                    }
                }
            }
        }
        let location =
            NgxHttpCoreModule::location_conf(&*cf).map_or(&[][..], |clcf| clcf.name.as_bytes());
        Identity {
            zone: server_identity(&listens, &names),
            fleet: server_identity(&[], &names),
            place: place(location, &listens, &names),
        }
    }
}

/// A server block as the caches name it.
pub struct Identity {
    /// In this gateway's zones: by listen addresses and names.
    pub zone: [u8; 32],
    /// In the Redis tier: by names only, as the gateways of a fleet listen
    /// on addresses of their own.
    pub fleet: [u8; 32],
    /// The location being merged and its server, in words, for `nginx -t`:
    /// `location "/api/" of server { listen 127.0.0.1:8080; server_name api; }`.
    pub place: String,
}

/// How `nginx -t` names a location (empty: the server block's own
/// configuration) of the server with `listens` and `names`.
fn place(location: &[u8], listens: &[&[u8]], names: &[&[u8]]) -> String {
    // An empty name (a server without server_name has one) is `""`.
    let words = |items: &[&[u8]]| {
        let words: Vec<String> = items
            .iter()
            .map(|i| match i {
                [] => "\"\"".to_string(),
                i => String::from_utf8_lossy(i).into_owned(),
            })
            .collect();
        match words.is_empty() {
            true => "\"\"".to_string(),
            false => words.join(" "),
        }
    };
    let server = format!(
        "server {{ listen {}; server_name {}; }}",
        words(listens),
        words(names)
    );
    match location {
        [] => server,
        name => format!("location \"{}\" of {server}", String::from_utf8_lossy(name)),
    }
}

/// The elements of an `ngx_array_t` of `T`.
///
/// # Safety
/// `a` must be an initialised array whose elements are `T`s.
unsafe fn array<T>(a: &ngx::ffi::ngx_array_t) -> &[T] {
    if a.nelts == 0 || a.elts.is_null() {
        return &[];
    }
    // SAFETY: `a` is initialised and holds `nelts` elements of type T at
    // `elts` (this function's contract), which live as long as `a`.
    unsafe { core::slice::from_raw_parts(a.elts.cast::<T>(), a.nelts) }
}
