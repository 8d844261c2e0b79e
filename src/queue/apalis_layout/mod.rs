//! What herald reads and writes inside apalis's own storage: raw SQL into
//! its `Jobs` tables ([`sql`]), Lua and key names on its Redis queues
//! ([`redis`]). That layout is apalis's private one, valid for [`APALIS_VERSIONS`];
//! `tests/herald/apalis_layout.rs` fails when an upgrade changes it.

pub mod redis;
pub mod sql;

/// The apalis crates (as named in Cargo.lock) and the versions whose tables,
/// status values, Redis keys and entry encoding (JSON, apalis-codec's) the
/// statements here were written against.
/// After an apalis upgrade, read its migrations and Lua scripts again, then
/// update these (the layout test compares them with Cargo.lock).
pub const APALIS_VERSIONS: &[(&str, &str)] = &[
    ("apalis", "1.0.0"),
    ("apalis-codec", "1.0.0"),
    ("apalis-core", "1.0.0"),
    ("apalis-postgres", "1.0.0"),
    ("apalis-redis", "1.0.0"),
    ("apalis-sqlite", "1.0.0"),
];
