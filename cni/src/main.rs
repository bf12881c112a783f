//! `skerry-cni`: the CNI plugin (pod networking issue). Until then it answers VERSION only.

fn main() {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    if command == "VERSION" {
        println!(r#"{{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}}"#);
        return;
    }
    println!(
        "{}",
        serde_json::json!({"cniVersion": "1.0.0", "code": 4, "msg": "skerry-cni is not implemented yet", "details": "only VERSION is supported"})
    );
    std::process::exit(1);
}
