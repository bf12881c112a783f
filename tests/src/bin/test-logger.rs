//! The logger, built inside this crate so integration tests can find it
//! (`CARGO_BIN_EXE_skerry-test-logger`); same code as `skerry-logger`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = skerryd::runtime::logger::run_logger(&args) {
        eprintln!("skerry-logger: {e}");
        std::process::exit(1);
    }
}
