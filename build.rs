//! Passes what nginx-sys learned about the nginx we build against (features, OS,
//! version) to the compiler as `cfg` values. nginx-sys exports these only to its
//! direct dependents, which is why it is a direct dependency of this crate
//! (an optional one: `--no-default-features --features logic-only` has none).
use std::env;

fn main() {
    // The glue is compiled unless `logic-only` leaves it out, and it needs the
    // nginx bindings: one of the two features must be on.
    if env::var_os("CARGO_FEATURE_NGINX").is_none()
        && env::var_os("CARGO_FEATURE_LOGIC_ONLY").is_none()
    {
        eprintln!(
            "enable the `nginx` feature (a default one) to build the module, \
             or `logic-only` to build the plain-Rust logic without nginx"
        );
        std::process::exit(1);
    }

    for (var, cfg) in [
        ("DEP_NGINX_FEATURES", "ngx_feature"),
        ("DEP_NGINX_OS", "ngx_os"),
    ] {
        println!("cargo::rerun-if-env-changed={var}");
        println!("cargo::rerun-if-env-changed={var}_CHECK");
        let allowed = env::var(format!("{var}_CHECK")).unwrap_or_else(|_| "any()".into());
        println!("cargo::rustc-check-cfg=cfg({cfg}, values({allowed}))");
        if let Ok(values) = env::var(var) {
            for value in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                println!("cargo::rustc-cfg={cfg}=\"{value}\"");
            }
        }
    }

    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    if let Ok(dir) = env::var("DEP_NGINX_BUILD_DIR") {
        // Lets the Makefile find the nginx binary of a vendored build.
        println!("cargo::rustc-env=NGX_BUILD_DIR={dir}");
    }
}
