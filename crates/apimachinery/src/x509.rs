//! What an x509 certificate says: who a client certificate names, by
//! Kubernetes' convention (the subject's CN is the user, each O a group),
//! when it is valid and whether it is due for renewal, and what names a
//! serving certificate covers.

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

/// The facts of a certificate that renewal decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Seconds since the epoch when it starts being valid.
    pub not_before: i64,
    /// Seconds since the epoch when it stops being valid.
    pub not_after: i64,
    /// Its DNS names and IP addresses (subject alternative names), as text.
    pub names: Vec<String>,
}

impl Validity {
    /// The first certificate of a PEM text, or `None` when there is none
    /// that parses.
    pub fn of_pem(pem: &str) -> Option<Self> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
        let cert = block.parse_x509().ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => names.push((*d).to_owned()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => {
                        let ip = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                            16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                            _ => None,
                        };
                        names.extend(ip.map(|ip| ip.to_string()));
                    }
                    _ => {}
                }
            }
        }
        Some(Validity {
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            names,
        })
    }

    /// Whether to replace it at `now` (seconds since the epoch): once four
    /// fifths of its life have passed (about 73 days before a one-year
    /// certificate expires), as the kubelet rotates between 70% and 90%.
    pub fn renewal_due(&self, now: i64) -> bool {
        let life = (self.not_after - self.not_before).max(0);
        now >= self.not_before + life / 5 * 4 || now < self.not_before
    }

    /// When renewal falls due, in seconds since the epoch.
    pub fn renew_at(&self) -> i64 {
        let life = (self.not_after - self.not_before).max(0);
        self.not_before + life / 5 * 4
    }

    /// Whether it names every one of `hosts` (names or addresses).
    pub fn covers(&self, hosts: &[String]) -> bool {
        hosts.iter().all(|h| {
            let h = h
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.to_string())
                .unwrap_or_else(|_| h.clone());
            self.names.iter().any(|n| n.eq_ignore_ascii_case(&h))
        })
    }
}

/// Seconds since the epoch now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_due_at_four_fifths_of_the_life() {
        let v = Validity {
            not_before: 1000,
            not_after: 1000 + 100 * 86400,
            names: vec!["localhost".into(), "127.0.0.1".into()],
        };
        assert!(!v.renewal_due(1000 + 79 * 86400));
        assert!(v.renewal_due(1000 + 80 * 86400));
        assert!(v.renewal_due(v.not_after + 1));
        // A clock set before the certificate's start: renew too.
        assert!(v.renewal_due(10));
        assert_eq!(v.renew_at(), 1000 + 80 * 86400);
        assert!(v.covers(&["LOCALHOST".into(), "127.0.0.1".into()]));
        assert!(!v.covers(&["10.0.0.1".into()]));
        assert_eq!(Validity::of_pem("not a certificate"), None);
    }

    #[test]
    fn garbage_names_no_one() {
        assert_eq!(subject_identity(b"not a certificate"), None);
        assert_eq!(subject_identity(&[]), None);
    }
}
