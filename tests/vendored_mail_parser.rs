//! vendor/mail-parser is mail-parser 0.11.9 with one change: base64 bodies are decoded a
//! group of four characters at a time (vendor/mail-parser/TRIAGE.md). Here it is held
//! against upstream's own per-byte loop, copied below unchanged but for names, on
//! generated bodies made of what that loop treats differently: base64 characters,
//! padding, line ends, spaces, hyphens, boundaries and invalid bytes. Both must return
//! the same end offset and bytes and leave the stream at the same place.

use std::borrow::Cow;

use mail_parser::decoders::base64::BASE64_MAP;
use mail_parser::parsers::MessageStream;
use proptest::prelude::*;

/// mail-parser 0.11.9's `MessageStream::decode_base64_mime`, as published.
fn upstream<'x>(s: &mut MessageStream<'x>, boundary: &[u8]) -> (usize, Cow<'x, [u8]>) {
    let mut chunk: u32 = 0;
    let mut byte_count: u8 = 0;
    let mut buf = Vec::with_capacity(s.remaining() / 4 * 3);
    let mut last_ch = b'\n';
    let mut before_last_ch = 0;
    let mut end_pos = s.offset();
    s.checkpoint();
    while let Some(&ch) = s.next() {
        let val = BASE64_MAP[byte_count as usize][ch as usize];
        if val < 0x01ffffff {
            byte_count = (byte_count + 1) & 3;
            if byte_count == 1 {
                chunk = val;
            } else {
                chunk |= val;
                if byte_count == 0 {
                    buf.extend_from_slice(&chunk.to_le_bytes()[0..3]);
                }
            }
        } else {
            match ch {
                b'=' => match byte_count {
                    1 | 2 => {
                        buf.push(chunk.to_le_bytes()[0]);
                        byte_count = 0;
                    }
                    3 => {
                        buf.extend_from_slice(&chunk.to_le_bytes()[0..2]);
                        byte_count = 0;
                    }
                    0 => (),
                    _ => {
                        s.restore();
                        return (usize::MAX, b""[..].into());
                    }
                },
                b'\n' => {
                    end_pos = if last_ch == b'\r' {
                        s.offset() - 2
                    } else {
                        s.offset() - 1
                    }
                }
                b' ' | b'\t' | b'\r' => (),
                b'-' => {
                    if last_ch == b'-' {
                        return if !boundary.is_empty() && s.try_skip(boundary) {
                            buf.shrink_to_fit();
                            (
                                if before_last_ch == b'\n' {
                                    end_pos
                                } else {
                                    s.offset() - boundary.len() - 2
                                },
                                buf.into(),
                            )
                        } else {
                            s.restore();
                            (usize::MAX, b""[..].into())
                        };
                    }
                }
                _ => {
                    s.restore();
                    return (usize::MAX, b""[..].into());
                }
            }
        }
        before_last_ch = last_ch;
        last_ch = ch;
    }
    buf.shrink_to_fit();
    (
        if boundary.is_empty() {
            s.offset()
        } else {
            s.restore();
            usize::MAX
        },
        buf.into(),
    )
}

/// Both decoders from `start` in `data`: (end offset, bytes, where the stream was left).
fn both(data: &[u8], start: usize, boundary: &[u8]) -> [(usize, Vec<u8>, usize); 2] {
    let run = |fast: bool| {
        let mut s = MessageStream::new(data);
        s.skip_bytes(start);
        let (end, bytes) = if fast {
            s.decode_base64_mime(boundary)
        } else {
            upstream(&mut s, boundary)
        };
        (end, bytes.into_owned(), s.offset())
    };
    [run(true), run(false)]
}

/// Bodies built from the pieces the decoder tells apart.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        6 => "[A-Za-z0-9+/]{1,80}".prop_map(String::into_bytes),
        2 => Just(b"\r\n".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => prop::sample::select(vec!["=", "==", " ", "\t", "\r", "-", "--"])
            .prop_map(|p| p.as_bytes().to_vec()),
        1 => Just(b"\r\n--b\r\n".to_vec()),
        1 => Just(b"\r\n--b--\r\n".to_vec()),
        1 => Just(b"--b".to_vec()),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn four_at_a_time_decodes_as_upstream_does(
        body in body(),
        start in 0usize..6,
        bounded in any::<bool>(),
    ) {
        let start = start.min(body.len());
        let boundary: &[u8] = if bounded { b"b" } else { b"" };
        let [fast, slow] = both(&body, start, boundary);
        prop_assert_eq!(fast, slow);
    }
}

#[test]
fn a_real_attachment_and_its_boundary_decode_as_upstream_does() {
    let doc: Vec<u8> = (0..50_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let encoded = base64_lines(&doc);
    for tail in ["\r\n--b--\r\n", "\n--b\n", "--b--", "\r\n--c--\r\n", ""] {
        let data = format!("{encoded}{tail}");
        for boundary in [&b"b"[..], b""] {
            let [fast, slow] = both(data.as_bytes(), 0, boundary);
            assert_eq!(fast, slow, "tail {tail:?}, boundary {boundary:?}");
        }
    }
    let [fast, _] = both(format!("{encoded}\r\n--b--").as_bytes(), 0, b"b");
    assert_eq!(fast.1, doc, "the document comes back as it was");
}

/// The map's contract the fast path relies on: a character is either invalid (exactly
/// 0x01ffffff) or worth at most three bytes, whatever its place in the group.
#[test]
fn the_decoding_map_marks_invalid_characters_above_three_bytes() {
    for (place, map) in BASE64_MAP.iter().enumerate().take(4) {
        for (ch, &v) in map.iter().enumerate() {
            assert!(
                v == 0x01ffffff || v <= 0x00ffffff,
                "place {place}, byte {ch}: {v:#x}"
            );
        }
    }
}

fn base64_lines(bytes: &[u8]) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    lines.join("\r\n")
}
