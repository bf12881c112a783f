//! `skerry-logger`: started by containerd's shim through a `binary://` stdio
//! URI; writes the container's stdout/stderr to a CRI-format log file.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = skerryd::runtime::logger::run_logger(&args) {
        eprintln!("skerry-logger: {e}");
        std::process::exit(1);
    }
}
