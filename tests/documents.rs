//! Documents read under limits: a zip bomb, a PDF bomb and a reader that would run
//! forever are cut off in the child process (`triage-read-document`) with a reason, and
//! the caller gets its answer within the time limit. No network.
// A test is one scenario read top to bottom, however long.
#![allow(clippy::too_many_lines)]

use std::io::Write;
use std::time::{Duration, Instant};

use triage::core::documents::{Kind, Limits, Reader};

fn child(seconds: u64, memory_mb: u64) -> Reader {
    Reader::child_of(
        env!("CARGO_BIN_EXE_triage").into(),
        Limits {
            seconds,
            memory_bytes: memory_mb << 20,
        },
    )
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

/// A PoE message from `from` (with the receiving server's DMARC pass when `verified`)
/// carrying these PDFs.
fn poe_with(pdfs: &[Vec<u8>], verified: bool) -> Vec<u8> {
    use base64::Engine;
    let mut m = String::new();
    if verified {
        m.push_str(
            "Authentication-Results: mx.example.com; dmarc=pass header.from=reseller.example\n",
        );
    }
    m.push_str("From: Alice <alice@reseller.example>\nTo: partnersupport@example.com\nSubject: PoE Acme\nMessage-ID: <poe-budget@reseller.example>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nProof of execution attached.\n");
    for (i, pdf) in pdfs.iter().enumerate() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(pdf);
        m.push_str(&format!("--b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=\"PoE_{i}.pdf\"\nContent-Transfer-Encoding: base64\n\n"));
        for line in b64.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(line).unwrap());
            m.push('\n');
        }
    }
    m.push_str("--b--\n");
    m.into_bytes()
}

fn playbook_reading_in_child(seconds: u64) -> triage::core::plan::Playbook {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = triage::core::config::Config::load(&repo.join("deploy/triage.yaml")).unwrap();
    let mut book = triage::core::plan::Playbook::load(config, None).unwrap();
    book.documents = child(seconds, 8192);
    book
}

#[test]
fn documents_are_read_once_per_content_within_one_budget_and_only_for_a_verified_partner() {
    let book = playbook_reading_in_child(1);
    let bomb = pdf_bomb(1500);
    // Unverified: nothing is read at all.
    let plan = book.decide(&poe_with(std::slice::from_ref(&bomb), false));
    assert!(
        plan.evidence
            .iter()
            .any(|e| e.starts_with("attached documents not read")),
        "{:?}",
        plan.evidence
    );
    assert!(plan.outgoing.is_empty());
    // Three copies of one document: read once, one reason for each copy.
    let plan = book.decide(&poe_with(&[bomb.clone(), bomb.clone(), bomb.clone()], true));
    let cut: Vec<&String> = plan
        .guards
        .iter()
        .filter(|g| g.contains("used more than 1 s of CPU"))
        .collect();
    assert_eq!(cut.len(), 3, "{:?}", plan.guards);
    // Two different ones: the first spends the message's budget, the second is not read.
    let other = pdf_bomb(1499);
    let plan = book.decide(&poe_with(&[bomb, other], true));
    assert!(
        plan.guards
            .iter()
            .any(|g| g.contains("PoE_1.pdf") && g.contains("spent")),
        "{:?}",
        plan.guards
    );
    assert!(plan.outgoing.is_empty() && plan.original.human);
}

/// A one-paragraph DOCX.
fn docx(text: &str) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("word/document.xml", options).unwrap();
    let xml = format!(
        r#"<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>"#
    );
    zip.write_all(xml.as_bytes()).unwrap();
    zip.finish().unwrap();
    out.into_inner()
}

/// The small `triage-read-document` beside `triage` is what the service starts; where it
/// is not installed, `triage read-document` reads the same text and gives the same
/// reasons.
#[test]
fn the_small_reader_and_the_service_binary_read_alike() {
    let small = std::path::Path::new(env!("CARGO_BIN_EXE_triage-read-document"));
    assert!(
        small.is_file(),
        "{} is built beside triage",
        small.display()
    );
    let alone = std::env::temp_dir().join(format!("triage-alone-{}", std::process::id()));
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_triage"), alone.join("triage")).unwrap();
    let without = Reader::child_of(alone.join("triage"), Limits::default());
    let beside = child(5, 256);
    let po = docx("Purchase order PO-4711 for quote Q-100234");
    let text = beside.read(Kind::Docx, &po).unwrap();
    assert!(text.contains("PO-4711"), "{text}");
    assert_eq!(without.read(Kind::Docx, &po).unwrap(), text);
    let garbage = b"PK\x03\x04 not really a zip";
    let why = beside.read(Kind::Docx, garbage).unwrap_err();
    assert!(!why.is_empty());
    assert_eq!(without.read(Kind::Docx, garbage).unwrap_err(), why);
    let _ = std::fs::remove_dir_all(&alone);
}

/// One fork server reads document after document, each in a child forked for it under
/// its own limits: a bomb cut off or a reader that fails leaves the next document read
/// as if it came alone, by the same server.
#[test]
fn one_server_reads_document_after_document_each_in_a_child_of_its_own() {
    let reader = child(2, 128);
    let po = docx("Purchase order PO-4711 for quote Q-100234");
    let alone = Reader::InProcess.read(Kind::Docx, &po).unwrap();
    for _ in 0..20 {
        assert_eq!(reader.read(Kind::Docx, &po).unwrap(), alone);
    }
    let started = Instant::now();
    let err = reader.read(Kind::Pdf, &pdf_bomb(1024)).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2 + 5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("cut off") || err.contains("memory limit"),
        "{err}"
    );
    assert_eq!(reader.read(Kind::Docx, &po).unwrap(), alone);
    let garbage = reader.read(Kind::Pdf, b"%PDF-1.4 cut").unwrap_err();
    assert_eq!(
        garbage,
        Reader::InProcess
            .read(Kind::Pdf, b"%PDF-1.4 cut")
            .unwrap_err()
    );
    assert_eq!(reader.read(Kind::Docx, &po).unwrap(), alone);
    assert_eq!(reader.servers_started(), 1, "one server for all");
}

/// A fork server that dies at once, or answers nonsense, is not trusted: every document
/// is still read, by a reader started for it, with the same text and reasons.
#[test]
fn a_server_that_fails_leaves_each_document_to_a_reader_started_for_it() {
    let po = docx("Purchase order PO-4711 for quote Q-100234");
    let alone = Reader::InProcess.read(Kind::Docx, &po).unwrap();
    let dir = std::env::temp_dir().join(format!("triage-bad-server-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let triage = env!("CARGO_BIN_EXE_triage");
    for (name, serve) in [
        ("dies", "exit 1"),
        ("babbles", "echo 'text 99999999999'; cat > /dev/null"),
        ("mumbles", "echo 'words'; cat > /dev/null"),
    ] {
        // `triage read-document serve` misbehaves; any other reading is the real one.
        let script = dir.join(name);
        std::fs::write(
            &script,
            format!("#!/bin/sh\nif [ \"$2\" = serve ]; then {serve}; exit 0; fi\nexec {triage} \"$@\"\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let reader = Reader::child_of(script, Limits::default());
        for _ in 0..3 {
            assert_eq!(reader.read(Kind::Docx, &po).unwrap(), alone, "{name}");
        }
        let garbage = b"PK\x03\x04 not really a zip";
        assert_eq!(
            reader.read(Kind::Docx, garbage).unwrap_err(),
            Reader::InProcess.read(Kind::Docx, garbage).unwrap_err(),
            "{name}"
        );
        assert_eq!(
            reader.servers_started(),
            4,
            "{name}: a new server tried each time"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
