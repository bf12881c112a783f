//! Docker-style image name normalization.

use oci_client::Reference;

use super::RuntimeError;

/// Normalizes an image name like Docker does: `busybox` →
/// `docker.io/library/busybox:latest`, `user/x:t` → `docker.io/user/x:t`,
/// `127.0.0.1:5000/x:t` is kept. A digest reference keeps its digest.
pub fn normalize_image_name(name: &str) -> Result<String, RuntimeError> {
    parse_reference(name).map(|r| r.whole())
}

pub(crate) fn parse_reference(name: &str) -> Result<Reference, RuntimeError> {
    name.trim()
        .parse::<Reference>()
        .map_err(|e| RuntimeError::InvalidReference { reference: name.to_string(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let n = |s| normalize_image_name(s).unwrap();
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1"), "docker.io/library/busybox:1");
        assert_eq!(n("user/x:t"), "docker.io/user/x:t");
        assert_eq!(n("127.0.0.1:5000/x:t"), "127.0.0.1:5000/x:t");
        assert_eq!(n("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(n("docker.io/library/busybox:latest"), "docker.io/library/busybox:latest");
        assert!(normalize_image_name("bad name").is_err());
    }
}
