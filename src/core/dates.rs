//! Dates as the audit log writes them (RFC 3339, UTC): seconds since 1970 and back to
//! a day. Pure conversions; the caller brings the time.

/// Seconds since 1970 of an RFC 3339 time (`2026-12-01T10:00:00.123Z`, `…+01:00`).
pub fn epoch(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi) = (num(11..13)?, num(14..16)?);
    let rest = &t[17..];
    let secs_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let s: f64 = rest[..secs_end].parse().ok()?;
    let zone = &rest[secs_end..];
    let offset = match zone {
        "" | "Z" | "z" => 0,
        z if z.len() == 6 => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (z[1..3].parse::<i64>().ok()? * 3600 + z[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86400 + h * 3600 + mi * 60 - offset) as f64 + s)
}

/// The date (`2026-12-01`) of a time in seconds since 1970, UTC.
pub fn day_of(epoch: f64) -> String {
    let (y, m, d) = civil((epoch / 86400.0).floor() as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Year, month and day of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A time in milliseconds since 1970 as the journal writes it, UTC
/// (`2026-12-01T10:00:00.123Z`): what SQLite's `strftime('%Y-%m-%dT%H:%M:%fZ')` gives.
pub fn journal_time(ms: i64) -> String {
    // Written digit by digit: four rows per message on a backlog, and `format!` with
    // padding cost more than the SQLite function it replaces.
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil(days);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, m);
    put(8, 2, d);
    put(11, 2, in_day / 3_600_000);
    put(14, 2, in_day / 60_000 % 60);
    put(17, 2, in_day / 1000 % 60);
    put(20, 3, in_day % 1000);
    String::from_utf8_lossy(&out).into_owned()
}

/// The last `n` days up to the one `now` is in, oldest first.
pub fn last_days(n: u32, now: f64) -> Vec<String> {
    (0..n)
        .rev()
        .map(|k| day_of(now - f64::from(k) * 86400.0))
        .collect()
}
