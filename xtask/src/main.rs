//! `cargo xtask`: workspace automation (see docs/releasing.md once it exists).

fn main() {
    eprintln!("usage: cargo xtask <ci|release> (not implemented yet)");
    std::process::exit(2);
}
