//! Deterministic tar headers: POSIX ustar blocks, with a PAX extended header
//! (typeflag `x`) in front when a value does not fit (POSIX.1-2008, pax,
//! "ustar Interchange Format" and "pax Extended Header").
//!
//! Every header is a pure function of its fields: uname/gname empty, no
//! atime/ctime, PAX records sorted by key, devmajor/devminor always written.

/// Size of a tar block.
pub(crate) const BLOCK: usize = 512;

/// Tar typeflags (ustar).
pub(crate) const REGULAR: u8 = b'0';
pub(crate) const HARDLINK: u8 = b'1';
pub(crate) const SYMLINK: u8 = b'2';
pub(crate) const CHAR: u8 = b'3';
pub(crate) const BLOCK_DEVICE: u8 = b'4';
pub(crate) const DIRECTORY: u8 = b'5';
pub(crate) const FIFO: u8 = b'6';
const PAX_LOCAL: u8 = b'x';

/// Largest value of an 8-byte octal field (7 digits and a NUL).
const MAX_OCTAL_7: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (11 digits and a NUL).
const MAX_OCTAL_11: u64 = 0o77777777777;

/// The fields of one member.
#[derive(Debug, Clone, Default)]
pub(crate) struct EntryHeader<'a> {
    /// Member name; directories end in `/`.
    pub name: &'a [u8],
    pub typeflag: u8,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// Seconds since the epoch, already clamped and not negative.
    pub mtime: u64,
    pub linkname: &'a [u8],
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Encodes the header block(s) of a member into `out`: a PAX header and its
/// records first when needed, then the ustar block. The member's data and
/// its padding are the caller's.
pub(crate) fn encode(h: &EntryHeader<'_>, out: &mut Vec<u8>) {
    let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (key, value) in h.xattrs {
        records.push(([b"SCHILY.xattr.", &key[..]].concat(), value.clone()));
    }
    if h.name.len() > 100 {
        records.push((b"path".to_vec(), h.name.to_vec()));
    }
    if h.linkname.len() > 100 {
        records.push((b"linkpath".to_vec(), h.linkname.to_vec()));
    }
    if h.size > MAX_OCTAL_11 {
        records.push((b"size".to_vec(), h.size.to_string().into_bytes()));
    }
    if h.mtime > MAX_OCTAL_11 {
        records.push((b"mtime".to_vec(), h.mtime.to_string().into_bytes()));
    }
    if h.uid > MAX_OCTAL_7 {
        records.push((b"uid".to_vec(), h.uid.to_string().into_bytes()));
    }
    if h.gid > MAX_OCTAL_7 {
        records.push((b"gid".to_vec(), h.gid.to_string().into_bytes()));
    }

    if !records.is_empty() {
        records.sort();
        let mut body = Vec::new();
        for (key, value) in &records {
            pax_record(key, value, &mut body);
        }
        // The PAX header's own name is informational; a fixed one keeps
        // the output a function of the member alone.
        let base = h.name.rsplit(|&b| b == b'/').find(|s| !s.is_empty());
        let pax_name = [b"PaxHeader/", base.unwrap_or(b"")].concat();
        let pax = EntryHeader {
            name: &pax_name,
            typeflag: PAX_LOCAL,
            mode: 0o644,
            size: body.len() as u64,
            ..EntryHeader::default()
        };
        out.extend_from_slice(&ustar_block(&pax));
        out.extend_from_slice(&body);
        out.resize(out.len() + padding(body.len() as u64), 0);
    }
    out.extend_from_slice(&ustar_block(h));
}

/// Zero bytes that round `size` up to a whole block.
pub(crate) fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// One PAX record: `"%d %s=%s\n"`, the length counting itself.
fn pax_record(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut digits = 1;
    while (rest + digits).to_string().len() != digits {
        digits += 1;
    }
    out.extend_from_slice((rest + digits).to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The ustar block; values too large for a field are clamped there (the
/// PAX record carries the real one).
fn ustar_block(h: &EntryHeader<'_>) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let name = &h.name[..h.name.len().min(100)];
    b[..name.len()].copy_from_slice(name);
    octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    octal(&mut b[108..116], h.uid.min(MAX_OCTAL_7));
    octal(&mut b[116..124], h.gid.min(MAX_OCTAL_7));
    octal(&mut b[124..136], h.size.min(MAX_OCTAL_11));
    octal(&mut b[136..148], h.mtime.min(MAX_OCTAL_11));
    b[156] = h.typeflag;
    let link = &h.linkname[..h.linkname.len().min(100)];
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    octal(&mut b[329..337], u64::from(h.dev_major).min(MAX_OCTAL_7));
    octal(&mut b[337..345], u64::from(h.dev_minor).min(MAX_OCTAL_7));
    // Checksum: sum of all bytes with the checksum field as spaces, six
    // octal digits, NUL, space.
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    let text = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(text.as_bytes());
    b
}

/// Zero-padded octal digits and a trailing NUL filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    field[..width].copy_from_slice(&text.as_bytes()[text.len() - width..]);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    type Member = (Vec<u8>, tar::EntryType, u64, Vec<(String, Vec<u8>)>);

    fn parse(bytes: &[u8]) -> Vec<Member> {
        let mut archive = tar::Archive::new(bytes);
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut xattrs = Vec::new();
            if let Some(records) = entry.pax_extensions().unwrap() {
                for r in records {
                    let r = r.unwrap();
                    xattrs.push((r.key().unwrap().to_string(), r.value_bytes().to_vec()));
                }
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            found.push((
                entry.path_bytes().into_owned(),
                entry.header().entry_type(),
                entry.header().mtime().unwrap(),
                xattrs,
            ));
        }
        found
    }

    fn member(h: &EntryHeader<'_>, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(h, &mut out);
        out.extend_from_slice(data);
        out.resize(out.len() + padding(data.len() as u64), 0);
        out
    }

    #[test]
    fn short_member_is_one_ustar_block() {
        let h = EntryHeader {
            name: b"etc/hostname",
            typeflag: REGULAR,
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            size: 5,
            mtime: 1_700_000_000,
            ..EntryHeader::default()
        };
        let mut out = Vec::new();
        encode(&h, &mut out);
        assert_eq!(out.len(), BLOCK);
        let parsed = tar::Header::from_byte_slice(&out);
        assert_eq!(parsed.mode().unwrap(), 0o4755);
        assert_eq!(parsed.uid().unwrap(), 1000);
        assert_eq!(parsed.size().unwrap(), 5);
        assert_eq!(parsed.username_bytes(), Some(&b""[..]));
        assert_eq!(parsed.cksum().unwrap(), {
            let mut sum = 0u32;
            for (i, &x) in out.iter().enumerate() {
                sum += if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(x)
                };
            }
            sum
        });
    }

    #[test]
    fn long_names_and_xattrs_use_pax() {
        let long = "d/".repeat(80) + "file";
        let target = "t/".repeat(70);
        let xattrs = vec![(b"user.k".to_vec(), b"v\0bin".to_vec())];
        let mut tar = member(
            &EntryHeader {
                name: long.as_bytes(),
                typeflag: REGULAR,
                mode: 0o644,
                size: 3,
                mtime: 7,
                xattrs: &xattrs,
                ..EntryHeader::default()
            },
            b"abc",
        );
        tar.extend(member(
            &EntryHeader {
                name: b"l",
                typeflag: SYMLINK,
                mode: 0o777,
                linkname: target.as_bytes(),
                ..EntryHeader::default()
            },
            b"",
        ));
        tar.extend([0u8; 1024]);
        let found = parse(&tar);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].0, long.as_bytes());
        assert_eq!(found[0].2, 7);
        assert!(found[0]
            .3
            .contains(&("SCHILY.xattr.user.k".to_string(), b"v\0bin".to_vec())));
        let mut archive = tar::Archive::new(&tar[..]);
        let second = archive.entries().unwrap().nth(1).unwrap().unwrap();
        assert_eq!(second.link_name_bytes().unwrap(), target.as_bytes());
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(b"path", b"x", &mut out);
        assert_eq!(out, b"9 path=x\n");
        let mut out = Vec::new();
        // 3 + 4 + 92 = 99 bytes without the length: two digits make 101,
        // which needs three.
        pax_record(b"path", &[b'a'; 92], &mut out);
        assert!(out.starts_with(b"102 path="));
        assert_eq!(out.len(), 102);
    }

    #[test]
    fn big_ids_and_sizes_go_to_pax() {
        let h = EntryHeader {
            name: b"f",
            typeflag: REGULAR,
            uid: 1 << 30,
            gid: 5,
            ..EntryHeader::default()
        };
        let mut tar = member(&h, b"");
        tar.extend([0u8; 1024]);
        let mut archive = tar::Archive::new(&tar[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.header().uid().unwrap(), 1 << 30);
        assert_eq!(entry.header().gid().unwrap(), 5);
    }
}
