//! Directives that make a location a content handler of the module:
//! `auth_oauth2_token_metrics` and `auth_oauth2_token_purge`.

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
