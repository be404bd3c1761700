//! Directives that make a location a content handler of the module:
//! `auth_oauth2_token_metrics`, `auth_oauth2_token_purge` and
//! `auth_oauth2_token_resource_metadata`.

use super::call::handler;

// `auth_oauth2_token_metrics;` (location): the location answers with the
// metrics in Prometheus' text format.
handler!(set_metrics, |c| {
    if c.conf.metrics_page {
        return Err("is duplicate".into());
    }
    c.conf.metrics_page = true;
    c.set_content_handler(Some(crate::pages::metrics::handler))
});

// `auth_oauth2_token_purge;` (location): the location removes a token's
// cached answers (RFC 7009 request shape), here and in the Redis tier.
handler!(set_purge, |c| {
    if c.conf.purge_page {
        return Err("is duplicate".into());
    }
    c.conf.purge_page = true;
    c.set_content_handler(Some(crate::pages::purge::handler))
});

// `auth_oauth2_token_resource_metadata resource=URL [authorization_servers=URL]...`
// (location): the location serves RFC 9728 Protected Resource Metadata.
handler!(set_resource_metadata, |c| {
    use crate::conf::resource_metadata::parse;
    use crate::conf::ResourceMetadataConf;
    if c.conf.resource_metadata.is_some() {
        return Err("is duplicate".into());
    }
    let args = super::call::args_of(c);
    let m = parse(&args)?;
    // RFC 9728 §3.1: clients look for the document of a resource at one
    // path; a location elsewhere is a mistake they would not forgive.
    let want = crate::oauth::resource_metadata::static_metadata_path(m.resource);
    if let (Some(want), Some(name)) = (want, c.location_path()) {
        if name != want.as_bytes() && !name.starts_with(b"@") {
            c.warn(&format!(
                "clients look for the metadata of \"{}\" at \"{want}\" (RFC 9728 §3.1), not at \"{}\"",
                String::from_utf8_lossy(m.resource),
                String::from_utf8_lossy(&name)
            ));
        }
    }
    let optional = |value: Option<&[u8]>| value.map(|v| c.template(v)).transpose();
    let conf = ResourceMetadataConf {
        resource: c.template(m.resource)?,
        authorization_servers: m
            .authorization_servers
            .iter()
            .map(|v| c.template(v))
            .collect::<Result<_, _>>()?,
        resource_name: optional(m.resource_name)?,
        resource_documentation: optional(m.resource_documentation)?,
        scopes_supported: m.scopes_supported,
        bearer_methods_supported: m.bearer_methods_supported,
        max_age: m.max_age,
    };
    c.conf.resource_metadata = Some(conf);
    c.set_content_handler(Some(crate::pages::resource_metadata::handler))
});
