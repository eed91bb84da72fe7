//! Resource quantities (`500m`, `1.5Gi`, `2e3`): upstream's serialization
//! format parsed into exact integer milli-units, the unit the scheduler and
//! quota arithmetic compare in.

/// Why a quantity could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}"
)]
pub struct QuantityError(pub String);

/// A suffix's value as a fraction `num / den`.
fn suffix_factor(suffix: &str) -> Option<(i128, i128)> {
    const K: i128 = 1024;
    Some(match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (K, 1),
        "Mi" => (K.pow(2), 1),
        "Gi" => (K.pow(3), 1),
        "Ti" => (K.pow(4), 1),
        "Pi" => (K.pow(5), 1),
        "Ei" => (K.pow(6), 1),
        _ => return None,
    })
}

/// Parses a quantity into thousandths of its unit, rounding up as upstream's
/// `MilliValue` does (`100m` is 100, `1` is 1000, `1Ki` is 1,024,000).
/// Values beyond `i64` saturate.
pub fn parse_milli(input: &str) -> Result<i64, QuantityError> {
    let err = || QuantityError(input.to_owned());
    let s = input.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err());
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    // Digits beyond 30 add nothing an i64 of milli-units can hold.
    if whole.len() + fraction.len() > 30 {
        return Err(err());
    }
    let mut mantissa: i128 = 0;
    for d in whole.bytes().chain(fraction.bytes()) {
        mantissa = mantissa * 10 + i128::from(d - b'0');
    }
    let mut den: i128 = 10_i128.pow(fraction.len() as u32);
    let mut num: i128 = 1000;
    if let Some((n, d)) = suffix_factor(suffix) {
        num *= n;
        den *= d;
    } else {
        let exp = suffix.strip_prefix(['e', 'E']).ok_or_else(err)?;
        let e: i32 = exp.parse().map_err(|_| err())?;
        if e.unsigned_abs() > 18 {
            return Err(err());
        }
        let p = 10_i128.pow(e.unsigned_abs());
        if e >= 0 {
            num *= p;
        } else {
            den *= p;
        }
    }
    let value = mantissa
        .checked_mul(num)
        .map(|v| (v + den - 1) / den)
        .unwrap_or(i128::MAX);
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    Ok(if negative { -value } else { value })
}

/// Parses a quantity into whole units, rounding up (`1500m` is 2, `1Ki` is 1024).
pub fn parse_value(input: &str) -> Result<i64, QuantityError> {
    let milli = parse_milli(input)?;
    Ok(if milli >= 0 {
        milli / 1000 + i64::from(milli % 1000 != 0)
    } else {
        milli / 1000
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_forms() {
        assert_eq!(parse_milli("100m"), Ok(100));
        assert_eq!(parse_milli("1"), Ok(1000));
        assert_eq!(parse_milli("0.5"), Ok(500));
        assert_eq!(parse_milli("1.5"), Ok(1500));
        assert_eq!(parse_milli("2e3"), Ok(2_000_000));
        assert_eq!(parse_milli("1E-3"), Ok(1));
        assert_eq!(parse_milli("1n"), Ok(1), "rounds up");
        assert_eq!(parse_value("1Ki"), Ok(1024));
        assert_eq!(parse_value("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(parse_value("128974848"), Ok(128_974_848));
        assert_eq!(parse_value("129M"), Ok(129_000_000));
        assert_eq!(parse_value("123Mi"), Ok(128_974_848));
        assert_eq!(parse_value("1500m"), Ok(2));
        assert_eq!(parse_value("-1"), Ok(-1));
        assert_eq!(parse_value("+3"), Ok(3));
        assert_eq!(parse_milli("100Ei"), Ok(i64::MAX), "saturates");
    }

    #[test]
    fn refuses_malformed_input() {
        for bad in [
            "", "m", ".", "1.2.3", "1Q", "1e", "1e99", "1 Gi", "--1", "Gi1",
        ] {
            assert!(parse_milli(bad).is_err(), "{bad:?} parsed");
        }
    }
}
