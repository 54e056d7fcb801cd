//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds the files of
//! `rust/store/migrations` at compile time, and cargo does not track them otherwise.

fn main() {
    println!("cargo:rerun-if-changed=rust/store/migrations");
}
