//! Documents read under limits: a zip bomb, a PDF bomb and a reader that would run
//! forever are cut off in the child process (`triage read-document`) with a reason, and
//! the caller gets its answer within the time limit. No network.

use std::io::Write;
use std::time::{Duration, Instant};

use triage::documents::{Kind, Limits, Reader};

fn child(seconds: u64, memory_mb: u64) -> Reader {
    Reader::Child {
        program: env!("CARGO_BIN_EXE_triage").into(),
        limits: Limits {
            seconds,
            memory_bytes: memory_mb << 20,
        },
    }
}

/// A DOCX whose document.xml unpacks to `mb` MB of spaces (a few hundred KB packed).
fn zip_bomb(mb: usize) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    zip.start_file("word/document.xml", options).unwrap();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..mb {
        zip.write_all(&chunk).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

/// A PDF whose one content stream inflates to `mb` MB.
fn pdf_bomb(mb: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..mb {
        z.write_all(&chunk).unwrap();
    }
    let stream = z.finish().unwrap();
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>".to_vec(),
        [
            format!(
                "<< /Length {} /Filter /FlateDecode >>\nstream\n",
                stream.len()
            )
            .into_bytes(),
            stream,
            b"\nendstream".to_vec(),
        ]
        .concat(),
    ];
    for (i, o) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend(format!("{} 0 obj\n", i + 1).into_bytes());
        pdf.extend(o);
        pdf.extend(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).into_bytes());
    for o in offsets {
        pdf.extend(format!("{o:010} 00000 n \n").into_bytes());
    }
    pdf.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .into_bytes(),
    );
    pdf
}

#[test]
fn a_zip_bomb_is_refused_before_it_unpacks() {
    let bomb = zip_bomb(200);
    assert!(bomb.len() < 2 << 20, "packed: {} bytes", bomb.len());
    let err = child(10, 256).read(Kind::Docx, &bomb).unwrap_err();
    assert!(err.contains("zip bomb"), "{err}");
}

#[test]
fn a_pdf_bomb_is_cut_off_by_the_limits() {
    let bomb = pdf_bomb(1024);
    let started = Instant::now();
    let err = child(3, 128).read(Kind::Pdf, &bomb).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3 + 5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("cut off") || err.contains("memory limit") || err.contains("cannot be read"),
        "{err}"
    );
}

#[test]
fn garbage_named_like_a_document_is_a_reason_not_a_crash() {
    for kind in [Kind::Pdf, Kind::Docx, Kind::Odt, Kind::Spreadsheet] {
        let err = child(5, 256)
            .read(kind, b"\x00\x01 this is not a document \xff")
            .unwrap_err();
        assert!(!err.is_empty(), "{kind:?}");
        // The same in process: an error, not a panic.
        assert!(Reader::InProcess.read(kind, b"PK\x03\x04 cut").is_err());
    }
}
