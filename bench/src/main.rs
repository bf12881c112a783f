//! skerry-bench: pod start latency against the raw-containerd floor, and memory (see bench/README.md).

fn main() {
    eprintln!("skerry-bench: work in progress");
    std::process::exit(2);
}
