//! FAT timestamps (a 16-bit date, a 16-bit time with 2-second resolution,
//! and for the creation time a 10-ms count) to Unix time, computed exactly
//! as Linux's `fat_time_fat2unix` computes them, including what it does with
//! out-of-range fields (month 0 counts as January, day 0 as the 1st,
//! months 13..15 add no days, hours and minutes past their range just add
//! up), so an odd timestamp shows the same in fshost as in the kernel.
//!
//! FAT stores local time with no zone; the kernel applies the `tz=UTC` /
//! `time_offset=` mount options or else the system time zone, which is UTC
//! on the machines fshost runs on. The guest takes the offset as a mount
//! option (see `fs.rs`).

use fshost_sdk::Timestamp;

/// Cumulative days before each month (index 1..=12; 0 and 13..=15 are 0),
/// as the kernel's `days_in_year` table.
const DAYS_BEFORE_MONTH: [i64; 16] = [0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 0, 0, 0];
/// Days from 1970-01-01 to 1980-01-01.
const DAYS_DELTA: i64 = 365 * 10 + 2;
/// 2100 (year 120 after 1980) is not a leap year.
const YEAR_2100: i64 = 120;

/// Unix time of a FAT `date` and `time` plus `centiseconds` (0..=199 on
/// disk, more is taken as it comes), shifted by `offset_seconds` (the
/// zone's offset west of UTC, as the kernel adds `sys_tz.tz_minuteswest`).
pub fn to_unix(time: u16, date: u16, centiseconds: u8, offset_seconds: i64) -> Timestamp {
    let year = i64::from(date >> 9);
    let month = i64::from((date >> 5) & 0xf).max(1);
    let day = i64::from(date & 0x1f).max(1) - 1;

    let mut leap_days = (year + 3) / 4;
    if year > YEAR_2100 {
        leap_days -= 1;
    }
    let is_leap = year & 3 == 0 && year != YEAR_2100;
    if is_leap && month > 2 {
        leap_days += 1;
    }
    let days = year * 365 + leap_days + DAYS_BEFORE_MONTH[month as usize] + day + DAYS_DELTA;
    let seconds = i64::from(time & 0x1f) * 2
        + i64::from((time >> 5) & 0x3f) * 60
        + i64::from(time >> 11) * 3600
        + days * 86_400
        + offset_seconds;
    Timestamp {
        seconds: seconds + i64::from(centiseconds / 100),
        nanoseconds: u32::from(centiseconds % 100) * 10_000_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: u16, m: u16, d: u16) -> u16 {
        ((y - 1980) << 9) | (m << 5) | d
    }
    fn time(h: u16, m: u16, s: u16) -> u16 {
        (h << 11) | (m << 5) | (s / 2)
    }

    #[test]
    fn known_dates() {
        // `date -u -d '1980-01-01' +%s` = 315532800.
        assert_eq!(to_unix(0, date(1980, 1, 1), 0, 0).seconds, 315_532_800);
        // `date -u -d '2000-03-01 12:34:56' +%s` = 951914096.
        assert_eq!(to_unix(time(12, 34, 56), date(2000, 3, 1), 0, 0).seconds, 951_914_096);
        // `date -u -d '2100-03-01' +%s` = 4107542400 (2100 is not leap).
        assert_eq!(to_unix(0, date(2100, 3, 1), 0, 0).seconds, 4_107_542_400);
        // `date -u -d '2107-12-31 23:59:58' +%s` = 4354819198.
        assert_eq!(to_unix(time(23, 59, 58), date(2107, 12, 31), 0, 0).seconds, 4_354_819_198);
    }

    #[test]
    fn centiseconds_and_offset() {
        let t = to_unix(time(0, 0, 2), date(1980, 1, 1), 157, 3600);
        assert_eq!(t, Timestamp { seconds: 315_532_800 + 2 + 1 + 3600, nanoseconds: 570_000_000 });
    }

    #[test]
    fn zero_date_is_1980() {
        assert_eq!(to_unix(0, 0, 0, 0).seconds, 315_532_800);
    }
}
