//! winmail.dat (TNEF, MS-OXTNEF) read into the files Outlook wrapped in it. Written here
//! because the `tnef` crate stops at the first attribute it does not know (attBody from
//! some writers), while a reader only needs to skip what it does not use: every attribute
//! carries its own length. Bounded by the input: each step consumes bytes or stops.

/// One file from the stream: its name (long name when the writer gave one) and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TnefFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

const SIGNATURE: u32 = 0x223E_9F78;
const LVL_ATTACHMENT: u8 = 0x02;
/// attAttachRendData: starts each attachment.
const ATT_ATTACH_REND_DATA: u32 = 0x0006_9002;
/// attAttachTitle: the short (8.3) file name, a NUL-terminated 8-bit string.
const ATT_ATTACH_TITLE: u32 = 0x0001_8010;
/// attAttachData: the file's bytes.
const ATT_ATTACH_DATA: u32 = 0x0006_800F;
/// attAttachment: the attachment's MAPI properties (the long file name among them).
const ATT_ATTACHMENT: u32 = 0x0006_9005;
/// PidTagAttachLongFilename and PidTagDisplayName.
const PR_ATTACH_LONG_FILENAME: u16 = 0x3707;
const PR_DISPLAY_NAME: u16 = 0x3001;

/// The files in a TNEF stream. Attributes it does not need (attBody, attMessageClass,
/// attDateSent, attOemCodepage, attMsgProps, attRecipTable, …) are skipped.
pub fn read(buf: &[u8]) -> Result<Vec<TnefFile>, String> {
    let mut r = Cursor { buf, at: 0 };
    if r.u32()? != SIGNATURE {
        return Err("not a TNEF stream (bad signature)".into());
    }
    r.u16()?; // legacy key
    let mut files: Vec<Partial> = Vec::new();
    while r.at < buf.len() {
        let level = r.u8()?;
        let id = r.u32()?;
        let len = r.u32()? as usize;
        let data = r.take(len)?;
        r.u16()?; // checksum: a damaged file shows up as damaged documents, not here
        if level != LVL_ATTACHMENT {
            continue;
        }
        if id == ATT_ATTACH_REND_DATA || files.is_empty() {
            files.push(Partial::default());
        }
        let file = files.last_mut().expect("pushed above");
        match id {
            ATT_ATTACH_TITLE => file.title = Some(c_string(data)),
            ATT_ATTACH_DATA => file.bytes = Some(data.to_vec()),
            ATT_ATTACHMENT => file.long_name = long_name(data),
            _ => {}
        }
    }
    Ok(files
        .into_iter()
        .filter_map(|f| {
            let bytes = f.bytes?;
            let name = f
                .long_name
                .or(f.title)
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| "attachment".into());
            Some(TnefFile { name, bytes })
        })
        .collect())
}

#[derive(Default)]
struct Partial {
    title: Option<String>,
    long_name: Option<String>,
    bytes: Option<Vec<u8>>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| format!("winmail.dat is cut short at byte {}", self.at))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn c_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    // 8-bit strings are in the message's OEM code page; Latin-1 keeps every byte readable.
    data[..end].iter().map(|&b| b as char).collect()
}

/// The long file name from an attAttachment MAPI property list (MS-OXTNEF §2.1.3.4), or
/// None if the list cannot be read (the short title is used then).
fn long_name(data: &[u8]) -> Option<String> {
    let mut r = Cursor { buf: data, at: 0 };
    let count = r.u32().ok()?;
    let mut display = None;
    for _ in 0..count {
        let ptype = r.u16().ok()?;
        let pid = r.u16().ok()?;
        if pid >= 0x8000 {
            skip_name(&mut r)?;
        }
        let value = read_value(&mut r, ptype)?;
        match (pid, value) {
            (PR_ATTACH_LONG_FILENAME, Some(v)) => return Some(v),
            (PR_DISPLAY_NAME, Some(v)) => display = Some(v),
            _ => {}
        }
    }
    display
}

/// A named property's name: a GUID, then a number or a string.
fn skip_name(r: &mut Cursor<'_>) -> Option<()> {
    r.take(16).ok()?;
    match r.u32().ok()? {
        0 => {
            r.u32().ok()?;
        }
        _ => {
            let len = r.u32().ok()? as usize;
            r.take(padded(len)?).ok()?;
        }
    }
    Some(())
}

fn padded(len: usize) -> Option<usize> {
    len.checked_add(3).map(|l| l & !3)
}

/// Reads one value; Some(text) for strings, Some(None) for anything else.
fn read_value(r: &mut Cursor<'_>, ptype: u16) -> Option<Option<String>> {
    const MULTI: u16 = 0x1000;
    let base = ptype & !MULTI;
    let fixed = match base {
        0x0002 | 0x0003 | 0x0004 | 0x000A | 0x000B => Some(4),
        0x0005 | 0x0006 | 0x0007 | 0x0014 | 0x0040 => Some(8),
        0x0048 => Some(16),
        0x0001 => Some(0),
        _ => None,
    };
    let count = if ptype & MULTI != 0 || fixed.is_none() {
        r.u32().ok()?
    } else {
        1
    };
    let mut text = None;
    for _ in 0..count {
        match fixed {
            Some(n) => {
                r.take(n).ok()?;
            }
            None => {
                let len = r.u32().ok()? as usize;
                let bytes = r.take(len).ok()?;
                r.take(padded(len)? - len).ok()?;
                text = match base {
                    0x001F => Some(utf16(bytes)),
                    0x001E => Some(c_string(bytes)),
                    _ => None,
                };
            }
        }
    }
    Some(text.filter(|t| !t.is_empty()))
}

fn utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TNEF writer for the shapes writers produce: message attributes before the
    /// attachments, attachments with and without a long name.
    fn attribute(out: &mut Vec<u8>, level: u8, id: u32, data: &[u8]) {
        out.push(level);
        out.extend(id.to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        let sum: u32 = data.iter().map(|&b| b as u32).sum();
        out.extend(((sum & 0xffff) as u16).to_le_bytes());
    }

    fn props_with_long_name(name: &str) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend(3u32.to_le_bytes());
        // PR_ATTACH_METHOD (long) = 1
        p.extend(0x0003u16.to_le_bytes());
        p.extend(0x3705u16.to_le_bytes());
        p.extend(1u32.to_le_bytes());
        // a named property (string name), binary value: must be skipped
        p.extend(0x0102u16.to_le_bytes());
        p.extend(0x8001u16.to_le_bytes());
        p.extend([7u8; 16]);
        p.extend(1u32.to_le_bytes());
        let pname: Vec<u8> = "X\0".encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        p.extend((pname.len() as u32).to_le_bytes());
        p.extend(&pname);
        p.extend(vec![0; padded(pname.len()).unwrap() - pname.len()]);
        p.extend(1u32.to_le_bytes());
        p.extend(3u32.to_le_bytes());
        p.extend([1, 2, 3, 0]);
        // PR_ATTACH_LONG_FILENAME, unicode
        p.extend(0x001Fu16.to_le_bytes());
        p.extend(PR_ATTACH_LONG_FILENAME.to_le_bytes());
        p.extend(1u32.to_le_bytes());
        let w: Vec<u8> = format!("{name}\0")
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        p.extend((w.len() as u32).to_le_bytes());
        p.extend(&w);
        p.extend(vec![0; padded(w.len()).unwrap() - w.len()]);
        p
    }

    #[test]
    fn every_writer_shape_gives_every_attachment() {
        let mut t = Vec::new();
        t.extend(SIGNATURE.to_le_bytes());
        t.extend(0x1234u16.to_le_bytes());
        attribute(&mut t, 1, 0x0008_9006, &[0, 0, 1, 0]); // attTnefVersion
        attribute(&mut t, 1, 0x0006_9007, &[0xe4, 0x04, 0, 0, 0, 0, 0, 0]); // attOemCodepage
        attribute(&mut t, 1, 0x0007_8008, b"IPM.Microsoft Mail.Note\0"); // attMessageClass
        attribute(
            &mut t,
            1,
            0x0003_8005,
            &[0xea, 0x07, 11, 0, 16, 0, 9, 0, 0, 0, 0, 0, 1, 0],
        ); // attDateSent
        attribute(&mut t, 1, 0x0002_800C, b"Please find our PO attached.\0"); // attBody
        attribute(&mut t, 1, 0x0006_9003, &[1, 0, 0, 0, 0, 0, 0, 0]); // attMsgProps
        attribute(&mut t, 1, 0x0006_9004, &[0, 0, 0, 0]); // attRecipTable
                                                          // First attachment: title only.
        attribute(
            &mut t,
            2,
            ATT_ATTACH_REND_DATA,
            &[1, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        attribute(&mut t, 2, ATT_ATTACH_TITLE, b"PO-4711.PDF\0");
        attribute(&mut t, 2, 0x0003_8013, &[0; 14]); // attAttachModifyDate
        attribute(&mut t, 2, ATT_ATTACH_DATA, b"%PDF-1.4 first");
        // Second: a long Unicode name in the MAPI properties, after the data.
        attribute(
            &mut t,
            2,
            ATT_ATTACH_REND_DATA,
            &[1, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        attribute(&mut t, 2, ATT_ATTACH_TITLE, b"ANGEBO~1.XLS\0");
        attribute(&mut t, 2, ATT_ATTACH_DATA, b"PK\x03\x04 second");
        attribute(
            &mut t,
            2,
            ATT_ATTACHMENT,
            &props_with_long_name("Angebot Müller 注文書.xlsx"),
        );
        let files = read(&t).unwrap();
        assert_eq!(
            files,
            vec![
                TnefFile {
                    name: "PO-4711.PDF".into(),
                    bytes: b"%PDF-1.4 first".to_vec()
                },
                TnefFile {
                    name: "Angebot Müller 注文書.xlsx".into(),
                    bytes: b"PK\x03\x04 second".to_vec()
                },
            ]
        );
        // Cut anywhere: an error or fewer files, never a panic.
        for cut in 0..t.len() {
            let _ = read(&t[..cut]);
        }
        assert!(read(b"not tnef at all").is_err());
    }
}
