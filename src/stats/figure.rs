//! How the statistics block prints one figure (a loop time in seconds, a packet size in KB):
//! two decimals rounded half up, except that a value under 0.01 other than zero keeps three
//! significant digits (`0.00213`, `0.000457`), so a loop on a fast link never reads as `0.00`.
//! Every figure is a ratio of integers (nanoseconds over nanoseconds per second, bytes over
//! bytes per KB), and the rounding is done on that ratio exactly, never through a float.

/// `numerator / denominator` as the block prints it.
///
/// - Zero, and every value of 0.01 and above, print with two decimals rounded half up (`0.00`,
///   `0.01`, `0.13`, `2.00`), exactly as before small values had a rule of their own.
/// - A value under 0.01 prints with three significant digits, rounded half up on the exact
///   remainder (`0.002125` → `0.00213`, `0.0001234` → `0.000123`).
/// - A value under 0.01 whose three digits round up to 0.0100 (0.009995 and above) prints as
///   `0.01`, the form every other value that reads 0.01 has, never `0.0100`.
pub(super) fn figure(numerator: u128, denominator: u128) -> String {
    let denominator = denominator.max(1);
    if numerator == 0 || numerator.saturating_mul(100) >= denominator {
        return two_decimals(numerator, denominator);
    }
    let mut division = Division::of_fraction(numerator, denominator);
    let mut leading_zeros = 0usize;
    let mut digits = 0u32;
    let mut kept = 0;
    while kept < 3 {
        let digit = division.next_digit();
        if digits == 0 && digit == 0 {
            leading_zeros += 1;
        } else {
            digits = digits * 10 + digit;
            kept += 1;
        }
    }
    if division.rest_is_at_least_half() {
        digits += 1;
    }
    if digits == 1000 {
        // 0.000999|5 became 0.001000: the first significant digit moved one place left.
        digits = 100;
        leading_zeros -= 1;
    }
    if leading_zeros < 2 {
        // Only 0.00999|5 and above get here (0.0100): print it as two decimals do.
        return "0.01".to_string();
    }
    format!("0.{}{digits}", "0".repeat(leading_zeros))
}

/// `numerator / denominator` with two decimals, rounded half up, computed exactly.
fn two_decimals(numerator: u128, denominator: u128) -> String {
    let denominator = denominator.max(1);
    let mut whole = numerator / denominator;
    let mut division = Division::of_fraction(numerator % denominator, denominator);
    let tenths = division.next_digit();
    let mut hundredths = tenths * 10 + division.next_digit();
    if division.rest_is_at_least_half() {
        hundredths += 1;
    }
    if hundredths == 100 {
        hundredths = 0;
        whole = whole.saturating_add(1);
    }
    format!("{whole}.{hundredths:02}")
}

/// The decimal digits of a fraction below one, one at a time, exactly, for any denominator.
struct Division {
    /// What is left to divide, always below `denominator`.
    remainder: u128,
    denominator: u128,
}

impl Division {
    /// `numerator / denominator`, with `numerator < denominator`.
    fn of_fraction(numerator: u128, denominator: u128) -> Self {
        Self {
            remainder: numerator,
            denominator,
        }
    }

    /// The next digit after the point.
    fn next_digit(&mut self) -> u32 {
        // `remainder * 10` may not fit in a u128 when the denominator is huge, so it is added up
        // ten times, taking the denominator out whenever the sum reaches it.
        let gap = self.denominator - self.remainder;
        let mut digit = 0;
        let mut sum = 0u128;
        for _ in 0..10 {
            if sum >= gap {
                sum -= gap;
                digit += 1;
            } else {
                sum += self.remainder;
            }
        }
        self.remainder = sum;
        digit
    }

    /// Whether what is left, `remainder / denominator`, is one half or more (rounding half up).
    fn rest_is_at_least_half(&self) -> bool {
        self.remainder >= self.denominator - self.remainder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NANOS: u128 = 1_000_000_000;

    /// A duration in nanoseconds, printed as seconds.
    fn seconds(nanos: u128) -> String {
        figure(nanos, NANOS)
    }

    #[test]
    fn two_decimals_round_half_up_exactly() {
        assert_eq!(two_decimals(125, 1000), "0.13");
        assert_eq!(two_decimals(995, 1000), "1.00");
        assert_eq!(two_decimals(1_000_000, 3), "333333.33");
        assert_eq!(two_decimals(124, 1000), "0.12");
        assert_eq!(two_decimals(0, 7), "0.00");
        assert_eq!(two_decimals(2048, 1024), "2.00");
        assert_eq!(two_decimals(1005, 1000), "1.01");
    }

    #[test]
    fn values_from_one_hundredth_up_print_as_two_decimals() {
        assert_eq!(seconds(10_000_000), "0.01");
        assert_eq!(seconds(10_000_001), "0.01");
        assert_eq!(seconds(14_999_999), "0.01");
        assert_eq!(seconds(15_000_000), "0.02");
        assert_eq!(seconds(125_000_000), "0.13");
        assert_eq!(seconds(1_005_000_000), "1.01");
        assert_eq!(seconds(3_131_290_000_000), "3131.29");
        for nanos in [
            10_000_000,
            12_345_678,
            99_999_999,
            310_000_000,
            7_654_321_000,
        ] {
            assert_eq!(seconds(nanos), two_decimals(nanos, NANOS), "{nanos} ns");
        }
    }

    #[test]
    fn zero_prints_as_before() {
        assert_eq!(figure(0, NANOS), "0.00");
        assert_eq!(figure(0, 0), "0.00");
    }

    #[test]
    fn values_under_one_hundredth_keep_three_significant_digits() {
        assert_eq!(seconds(1_000_000), "0.00100");
        assert_eq!(seconds(123_400), "0.000123");
        assert_eq!(seconds(457_000), "0.000457");
        assert_eq!(seconds(2_130_000), "0.00213");
        assert_eq!(seconds(4_200_000), "0.00420");
        assert_eq!(seconds(4_999_000), "0.00500");
        assert_eq!(seconds(9_990_000), "0.00999");
        assert_eq!(seconds(1), "0.00000000100");
        // 5 bytes in KB: 0.0048828125.
        assert_eq!(figure(5, 1024), "0.00488");
    }

    #[test]
    fn the_third_significant_digit_rounds_half_up() {
        assert_eq!(seconds(2_125_000), "0.00213");
        assert_eq!(seconds(2_124_999), "0.00212");
        assert_eq!(seconds(123_450), "0.000123");
        assert_eq!(seconds(123_500), "0.000124");
        // Carrying into a new digit: 0.000999|5 is 0.00100, not 0.0001000.
        assert_eq!(seconds(999_500), "0.00100");
        assert_eq!(seconds(999_499), "0.000999");
        // An average that is not a whole number of nanoseconds: 0.0021245 s.
        assert_eq!(figure(4_249, 2_000_000), "0.00212");
        assert_eq!(figure(4_250, 2_000_000), "0.00213");
    }

    #[test]
    fn a_value_just_under_one_hundredth_that_rounds_up_prints_as_0_01() {
        assert_eq!(seconds(9_994_999), "0.00999");
        assert_eq!(seconds(9_995_000), "0.01");
        assert_eq!(seconds(9_999_900), "0.01");
        assert_eq!(seconds(9_999_999), "0.01");
    }

    #[test]
    fn every_small_value_is_within_half_a_unit_of_its_last_digit() {
        for nanos in (1..10_000_000u128)
            .step_by(997)
            .chain([9_994_999, 9_995_000])
        {
            let text = seconds(nanos);
            let value = nanos as f64 / 1e9;
            let decimals = text.len() - 2;
            let unit = 10f64.powi(-(decimals as i32));
            let printed: f64 = text.parse().unwrap_or(f64::NAN);
            assert!(
                (printed - value).abs() <= unit / 2.0 + 1e-15,
                "{nanos} ns printed as {text}"
            );
            if text != "0.01" {
                let significant = text.trim_start_matches(['0', '.']);
                assert_eq!(significant.len(), 3, "{nanos} ns printed as {text}");
            }
        }
    }

    #[test]
    fn huge_denominators_do_not_overflow() {
        assert_eq!(figure(u128::MAX / 200, u128::MAX), "0.00500");
        // 1 / 2^128 is 2.9387e-39.
        assert_eq!(figure(1, u128::MAX), format!("0.{}294", "0".repeat(38)));
        assert_eq!(figure(u128::MAX, u128::MAX), "1.00");
        assert_eq!(figure(u128::MAX, 1), format!("{}.00", u128::MAX));
        assert_eq!(figure(u128::MAX - 1, u128::MAX), "1.00");
    }
}
