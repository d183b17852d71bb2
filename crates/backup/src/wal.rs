//! WAL file names and positions: `TTTTTTTTXXXXXXXXYYYYYYYY` segments, `TTTTTTTT.history`
//! timeline histories and `…​.backup` backup history files.

/// A write-ahead-log position (`0/3000028`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's `X/Y` notation.
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        Some(Lsn((hi << 32) | lo))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A WAL segment: timeline and segment number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Segment {
    pub timeline: u32,
    pub number: u64,
}

impl Segment {
    fn per_xlogid(segment_bytes: u64) -> u64 {
        0x1_0000_0000 / segment_bytes
    }

    /// The segment that holds `lsn`.
    pub fn containing(timeline: u32, lsn: Lsn, segment_bytes: u64) -> Segment {
        Segment {
            timeline,
            number: lsn.0 / segment_bytes,
        }
    }

    /// Parses a 24-hex-digit segment file name.
    pub fn parse(name: &str, segment_bytes: u64) -> Option<Segment> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let timeline = u32::from_str_radix(&name[..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..], 16).ok()?;
        Some(Segment {
            timeline,
            number: log * Self::per_xlogid(segment_bytes) + seg,
        })
    }

    /// The file name PostgreSQL gives this segment.
    pub fn name(&self, segment_bytes: u64) -> String {
        let per = Self::per_xlogid(segment_bytes);
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / per,
            self.number % per
        )
    }
}

/// Whether `name` is a WAL file the archive may hold: a segment, a `.history` or a `.backup`
/// file, or a `.partial` segment.
pub fn is_wal_file_name(name: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if name.len() == 24 && hex(name) {
        return true;
    }
    if let Some(tli) = name.strip_suffix(".history") {
        return tli.len() == 8 && hex(tli);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return seg.len() == 24 && hex(seg);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        return rest.len() == 33 && hex(&rest[..24]) && &rest[24..25] == "." && hex(&rest[25..]);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    #[test]
    fn names_round_trip_for_small_and_default_segments() {
        for size in [MB, 16 * MB] {
            let lsn = Lsn::parse("1/2345678").unwrap();
            let seg = Segment::containing(3, lsn, size);
            let name = seg.name(size);
            assert_eq!(Segment::parse(&name, size), Some(seg));
        }
        assert_eq!(
            Segment::containing(1, Lsn::parse("0/3000028").unwrap(), 16 * MB).name(16 * MB),
            "000000010000000000000003"
        );
        assert_eq!(
            Segment::containing(2, Lsn::parse("1/00100000").unwrap(), MB).name(MB),
            "000000020000000100000001"
        );
        assert_eq!(Lsn::parse("1/A").unwrap().to_string(), "1/A");
    }

    #[test]
    fn recognises_archive_file_names() {
        assert!(is_wal_file_name("000000010000000000000003"));
        assert!(is_wal_file_name("00000002.history"));
        assert!(is_wal_file_name("000000010000000000000003.00000028.backup"));
        assert!(is_wal_file_name("000000010000000000000003.partial"));
        assert!(!is_wal_file_name("../etc/passwd"));
        assert!(!is_wal_file_name("00000001000000000000000G"));
    }
}
