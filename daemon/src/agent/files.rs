//! The files every pod gets: `/etc/hosts` and friends, rendered as text.

/// `/etc/hosts` as kubelet writes it: loopback names, then the pod's own address.
pub fn hosts(hostname: &str, pod_ip: Option<&str>) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod_ip {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out
}

/// The host's resolver configuration for pods. With systemd-resolved the stub at 127.0.0.53
/// is unreachable from a pod's namespace, so its upstream list is used instead (as kubelet does).
pub fn host_resolv_conf() -> String {
    ["/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts_file_names_localhost_and_the_pod() {
        let h = super::hosts("webapp", Some("10.42.0.5"));
        assert!(h.contains("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.42.0.5\twebapp\n"));
        assert!(!super::hosts("webapp", None).contains("webapp"));
    }
}
