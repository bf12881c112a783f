//! `skerry`: the command-line client's entry point; everything lives in the library.

fn main() {
    std::process::exit(skerry_cli::main_entry());
}
