//! Kubernetes resource quantities (`20Gi`, `500M`, `1.5e3`, `500m`) read as whole bytes or millicores.
//!
//! The grammar is apimachinery's: a signed decimal number (`1`, `1.5`, `.5`, `1.`) followed by
//! one optional suffix — binary (`Ki Mi Gi Ti Pi Ei`), decimal (`n u m k M G T P E`) or a
//! decimal exponent (`e3`, `E-2`). Values are exact (integer arithmetic on the digits) and are
//! rounded up to the unit asked for, as `Quantity.Value()` and `MilliValue()` do, so `100m`
//! bytes is 1 byte and `1u` CPU is 1 millicore. Written by hand: the crates that parse
//! quantities go through `f64` and lose exactness for large binary values.
//!
//! Invariant: pure; never panics on any input (tested with proptest).

/// A parsed quantity: `mantissa × 2^pow2 × 10^exp10`, with its sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    pow2: u32,
}

fn not_a_quantity(s: &str) -> String {
    format!("{s:?} is not a quantity; write a number with an optional suffix, like 20Gi, 500M, 1.5, 500m or 1e3")
}

/// The most significant digits kept; more would overflow `u128` (and no real quantity has them).
const MAX_DIGITS: usize = 36;

fn parse(s: &str) -> Result<Quantity, String> {
    let bad = || not_a_quantity(s);
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let (number, suffix) = rest.split_at(number_len);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
        return Err(bad());
    }
    let digits = format!("{whole}{frac}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > MAX_DIGITS {
        return Err(format!("{s:?} has too many digits"));
    }
    let mantissa: u128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| bad())? };
    let mut exp10 = -(frac.len() as i32);
    let mut pow2 = 0;
    match suffix {
        "" => {}
        "Ki" => pow2 = 10,
        "Mi" => pow2 = 20,
        "Gi" => pow2 = 30,
        "Ti" => pow2 = 40,
        "Pi" => pow2 = 50,
        "Ei" => pow2 = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E']).ok_or_else(bad)?;
            let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if unsigned.is_empty() || unsigned.len() > 4 || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            exp10 += exponent.parse::<i32>().map_err(|_| bad())?;
        }
    }
    Ok(Quantity { negative, mantissa, exp10, pow2 })
}

impl Quantity {
    /// The value in units of `10^-scale` (scale 0: units; 3: thousandths), rounded up.
    fn scaled(&self, s: &str, scale: i32) -> Result<u64, String> {
        if self.mantissa == 0 {
            return Ok(0);
        }
        if self.negative {
            return Err(format!("{s:?} must not be negative"));
        }
        let too_large = || format!("{s:?} is too large");
        let mut value = self.mantissa.checked_mul(1u128 << self.pow2).ok_or_else(too_large)?;
        let exp = self.exp10 + scale;
        if exp >= 0 {
            let factor = 10u128.checked_pow(exp as u32).ok_or_else(too_large)?;
            value = value.checked_mul(factor).ok_or_else(too_large)?;
        } else {
            // Dividing by more than 10^38 leaves a positive fraction of one unit: rounds up to 1.
            value = match 10u128.checked_pow(exp.unsigned_abs()) {
                Some(divisor) => value.div_ceil(divisor),
                None => 1,
            };
        }
        u64::try_from(value).map_err(|_| too_large())
    }
}

/// A storage or memory quantity in bytes (`20Gi` → 21474836480), rounded up to a whole byte.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    parse(s)?.scaled(s, 0)
}

/// A CPU quantity in millicores (`500m` → 500, `0.5` → 500, `2` → 2000), rounded up.
pub fn parse_cpu_millis(s: &str) -> Result<u64, String> {
    parse(s)?.scaled(s, 3)
}

/// Whether a quantity is written with a binary suffix (`64Mi`): sums keep that form, as
/// apimachinery's `Quantity.Add` keeps the format of the first non-zero term.
pub fn is_binary(s: &str) -> bool {
    ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].iter().any(|suffix| s.ends_with(suffix))
}

/// Millicores as Kubernetes prints a CPU quantity: `250m`, `2`, `0`.
pub fn format_cpu_millis(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        format_units(millis / 1000, false)
    } else {
        format!("{millis}m")
    }
}

/// Whole units (bytes, pods) as Kubernetes prints a quantity in canonical form: with the largest
/// exact binary suffix when `binary` (`64Mi`; below 1Ki or inexact, decimal), else with the
/// largest exact decimal one (`100M`, `1500`, `0`).
pub fn format_units(value: u64, binary: bool) -> String {
    if value == 0 {
        return "0".into();
    }
    if binary {
        for (shift, suffix) in [(60, "Ei"), (50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
            if value.is_multiple_of(1u64 << shift) {
                return format!("{}{suffix}", value >> shift);
            }
        }
    }
    for (exp, suffix) in [(18, "E"), (15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k")] {
        let unit = 10u64.pow(exp);
        if value.is_multiple_of(unit) {
            return format!("{}{suffix}", value / unit);
        }
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(format_cpu_millis(0), "0");
        assert_eq!(format_cpu_millis(250), "250m");
        assert_eq!(format_cpu_millis(1500), "1500m");
        assert_eq!(format_cpu_millis(2000), "2");
        assert_eq!(format_units(64 << 20, true), "64Mi");
        assert_eq!(format_units((64 << 20) + 100_000_000, true), "167108864");
        assert_eq!(format_units(100_000_000, false), "100M");
        assert_eq!(format_units(512, true), "512");
        assert_eq!(format_units(110, false), "110");
        assert_eq!(format_units(0, true), "0");
        assert!(is_binary("64Mi") && !is_binary("100M") && !is_binary("1"));
    }

    #[test]
    fn bytes() {
        for (s, want) in [
            ("0", 0),
            ("1", 1),
            ("128974848", 128974848),
            ("20Gi", 20 << 30),
            ("1Ki", 1024),
            ("129Mi", 129 << 20),
            ("1.5Gi", 3 << 29),
            ("1G", 1_000_000_000),
            ("129M", 129_000_000),
            ("1k", 1000),
            ("123e6", 123_000_000),
            ("1.29e8", 129_000_000),
            ("12E2", 1200),
            ("1E", 1_000_000_000_000_000_000),
            ("1Ei", 1 << 60),
            ("+5", 5),
            (".5k", 500),
            ("2.", 2),
            ("100m", 1),
            ("0.1", 1),
            ("1e-40", 1),
            ("-0", 0),
            ("0Gi", 0),
            ("000000000000000000000000000000000000000000001", 1),
        ] {
            assert_eq!(parse_bytes(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn cpu() {
        for (s, want) in [
            ("500m", 500),
            ("0.5", 500),
            ("2", 2000),
            ("1.25", 1250),
            ("100u", 1),
            ("250000u", 250),
            ("1e-3", 1),
            ("2k", 2_000_000),
        ] {
            assert_eq!(parse_cpu_millis(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects() {
        for s in [
            "", "Gi", ".", "-", "1..2", "1.2.3", "1 Gi", "1gi", "1GiB", "1KI", "1K", "e3", "1e", "1e+", "1e3.5",
            "1Gi5", " 1", "0x10", "1e99999",
        ] {
            assert!(parse_bytes(s).is_err(), "{s:?} should be rejected");
        }
        assert!(parse_bytes("-1Gi").unwrap_err().contains("negative"));
        assert!(parse_bytes("16Ei").unwrap_err().contains("too large"));
        assert!(parse_cpu_millis("1e20").unwrap_err().contains("too large"));
        assert!(parse_bytes("1e30").unwrap_err().contains("too large"));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse_bytes(&s);
            let _ = parse_cpu_millis(&s);
        }

        #[test]
        fn suffixes_multiply(n in 0u64..1_000_000, i in 0usize..9) {
            let (suffix, factor) = [("", 1u64), ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40), ("k", 1000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000)][i];
            prop_assert_eq!(parse_bytes(&format!("{n}{suffix}")), Ok(n * factor));
            prop_assert_eq!(parse_cpu_millis(&format!("{n}m")), Ok(n));
        }
    }
}
