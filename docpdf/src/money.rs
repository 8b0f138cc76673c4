//! Amounts as printed: minor units turned into the currency's decimal places
//! (ISO 4217: two for most, none for JPY or KRW, three for BHD or KWD), grouped
//! by thousands, followed by the currency code: `1,234.56 EUR`.

/// How many decimal places the currency's minor unit has (ISO 4217).
pub fn minor_unit_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// `minor` units of `currency` as text, e.g. `format_money(123456, "EUR")` is
/// `1,234.56 EUR`.
pub fn format_money(minor: i64, currency: &str) -> String {
    let digits = minor_unit_digits(currency);
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let scale = 10u64.pow(digits);
    let (whole, fraction) = (abs / scale, abs % scale);
    let whole = group_thousands(whole);
    if digits == 0 {
        format!("{sign}{whole} {currency}")
    } else {
        format!(
            "{sign}{whole}.{fraction:0width$} {currency}",
            width = digits as usize
        )
    }
}

/// A VAT rate in basis points as a percentage: 2000 → `20 %`, 550 → `5.5 %`.
pub fn format_rate(bp: i64) -> String {
    let (whole, hundredths) = (bp / 100, (bp % 100).abs());
    match hundredths {
        0 => format!("{whole} %"),
        h if h % 10 == 0 => format!("{whole}.{} %", h / 10),
        h => format!("{whole}.{h:02} %"),
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_follow_the_currency() {
        assert_eq!(format_money(123_456, "EUR"), "1,234.56 EUR");
        assert_eq!(format_money(5, "EUR"), "0.05 EUR");
        assert_eq!(format_money(-100_000_000, "USD"), "-1,000,000.00 USD");
        assert_eq!(format_money(1500, "JPY"), "1,500 JPY");
        assert_eq!(format_money(1_234_567, "KWD"), "1,234.567 KWD");
        assert_eq!(format_money(0, "CHF"), "0.00 CHF");
    }

    #[test]
    fn rates_print_as_percentages() {
        assert_eq!(format_rate(2000), "20 %");
        assert_eq!(format_rate(550), "5.5 %");
        assert_eq!(format_rate(210), "2.1 %");
        assert_eq!(format_rate(0), "0 %");
        assert_eq!(format_rate(1), "0.01 %");
    }
}
