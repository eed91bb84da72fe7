//! Who an x509 client certificate names, by Kubernetes' convention: the
//! subject's CN is the user, each O a group.

/// The user and groups a DER certificate's subject names, or `None` when
/// it does not parse or has no CN.
pub fn subject_identity(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some((name, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_names_no_one() {
        assert_eq!(subject_identity(b"not a certificate"), None);
        assert_eq!(subject_identity(&[]), None);
    }
}
