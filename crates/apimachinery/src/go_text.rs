//! Errors worded as Go's standard library words them, for messages that
//! users and clients compare with upstream's (`connection refused`).

/// An I/O error as Go prints it: lower-case first letter, without Rust's
/// ` (os error N)`.
pub fn io_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text
        .find(" (os error")
        .map_or(text.as_str(), |i| &text[..i]);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_as_go_writes_them() {
        let refused = std::io::Error::from_raw_os_error(111);
        assert_eq!(io_error(&refused), "connection refused");
    }
}
