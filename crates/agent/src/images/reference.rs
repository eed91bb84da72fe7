//! Image names as Docker and Kubernetes spell them short, made canonical:
//! `busybox` is `docker.io/library/busybox:latest`.

/// The canonical form of an image reference: registry, repository and tag
/// (or digest) always present.
pub fn normalize(image: &str) -> String {
    let image = image.trim();
    let (name, suffix) = match image.split_once('@') {
        Some((n, d)) => (n, format!("@{d}")),
        None => {
            // A ':' after the last '/' starts a tag; one before it is a port.
            let last_slash = image.rfind('/').map_or(0, |i| i + 1);
            match image[last_slash..].rfind(':') {
                Some(i) => (&image[..last_slash + i], image[last_slash + i..].to_owned()),
                None => (image, ":latest".to_owned()),
            }
        }
    };
    let first = name.split('/').next().unwrap_or_default();
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let full = if has_registry {
        name.to_owned()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    format!("{full}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn short_names_get_registry_repository_and_tag() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(normalize("me/app"), "docker.io/me/app:latest");
        assert_eq!(normalize("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(
            normalize("registry.example.com/a/b:v1"),
            "registry.example.com/a/b:v1"
        );
        let d = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            normalize(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
    }
}
