//! Rebuild when a migration is added, changed or removed: they are embedded
//! in the binary (`refinery::embed_migrations!` in `src/store/mod.rs`), and
//! cargo does not watch the directory by itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
