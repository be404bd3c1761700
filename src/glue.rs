//! The nginx glue's folders: the code that uses nginx's types and symbols.
//! `lib.rs` declares this module behind its one `cfg`, which leaves all of
//! it out of `cargo test` and of the `logic-only` build, and imports the
//! folders back into the crate root, so that their paths stay
//! `crate::handler`, `crate::pages`, ... The `path` attributes keep each
//! folder in `src/` (not `src/glue/`). A new glue folder is declared here.

#[path = "directives/mod.rs"]
pub mod directives;
#[path = "handler/mod.rs"]
pub mod handler;
#[path = "module.rs"]
pub mod module;
#[path = "nginx/mod.rs"]
pub mod nginx;
#[path = "pages/mod.rs"]
pub mod pages;
