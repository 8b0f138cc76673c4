//! End-to-end tests of files on a patient (`/api/v1/patients/{id}/attachments`,
//! `/api/v1/attachments/{id}`): a PDF and a PNG read back byte for byte, stored
//! sealed in chunks in the clinic's database; the limit, lying and unaccepted
//! types refused with nothing stored; other clinics and roles kept out; downloads
//! audited; erasure removing the files; a consent linking only its patient's file.
//!
//! This module's stack ([`SETUP`]) takes files of at most [`LIMIT`] bytes, so that
//! files of several chunks and files over the limit stay small.

use crate::support::*;
use common::token::Role;
use devstack::{Http, Reply, Stack};
use http::Method;
use serde_json::{json, Value};
use std::sync::Arc;

/// `MAX_ATTACHMENT_BYTES` of this module's stack: more than four 64 KiB chunks.
const LIMIT: usize = 300_000;

static SETUP: Setup = Setup {
    name: "attachments",
    env: &[("MAX_ATTACHMENT_BYTES", "300000")],
    server_conf: &[],
};

fn stack() -> Arc<Stack> {
    stack_of(&SETUP)
}

fn gateway() -> Http {
    Http::new(&stack().gateway_url())
}

/// A valid PDF of about `size` bytes whose comment lines repeat `marker`.
fn pdf(marker: &str, size: usize) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n\
2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
        .to_vec();
    while out.len() < size {
        out.extend_from_slice(format!("% {marker}\n").as_bytes());
    }
    out.extend_from_slice(b"trailer\n<< /Root 1 0 R >>\n%%EOF\n");
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut typed = kind.to_vec();
    typed.extend_from_slice(data);
    out.extend_from_slice(&typed);
    out.extend_from_slice(&crc32(&typed).to_be_bytes());
}

/// A valid 1×1 PNG (grey, one stored deflate block).
fn png() -> Vec<u8> {
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&1u32.to_be_bytes());
    ihdr.extend_from_slice(&1u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    // zlib: header, one final stored block of the scanline (filter 0, grey 0x80),
    // Adler-32 of it.
    let raw = [0u8, 0x80];
    let (mut a, mut b) = (1u32, 0u32);
    for x in raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    let mut idat = vec![0x78, 0x01, 0x01, 0x02, 0x00, 0xfd, 0xff];
    idat.extend_from_slice(&raw);
    idat.extend_from_slice(&((b << 16) | a).to_be_bytes());
    png_chunk(&mut out, b"IDAT", &idat);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// `POST /api/v1/patients/{patient}/attachments{query}` with `bytes`.
async fn upload(
    http: &Http,
    token: &str,
    patient: &str,
    query: &str,
    headers: &[(&str, &str)],
    bytes: Vec<u8>,
) -> Reply {
    let auth = format!("Bearer {token}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    http.send(
        Method::POST,
        &format!("/api/v1/patients/{patient}/attachments{query}"),
        &all,
        Some(bytes.into()),
    )
    .await
    .unwrap()
}

async fn call(http: &Http, token: &str, method: Method, path: &str) -> Reply {
    let auth = format!("Bearer {token}");
    http.send(method, path, &[("authorization", auth.as_str())], None)
        .await
        .unwrap()
}

async fn new_patient(http: &Http, c: &Clinic) -> String {
    let r = http
        .post(
            "/api/v1/patients",
            Some(&c.token),
            &patient_body("Ada", "Lovelace"),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    id(&r.json())
}

/// Rows of the clinic's attachment tables: (attachments, chunks).
async fn stored(c: &Clinic) -> (i64, i64) {
    let db = stack().clinic_db(c).await;
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM attachments), (SELECT count(*) FROM attachment_chunks)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_pdf_and_a_png_are_stored_sealed_and_read_back_byte_for_byte() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    let patient = new_patient(&http, &c).await;
    let marker = unique("PLAINTEXT-REFERRAL");
    let letter = pdf(&marker, 200_000);
    let made = upload(
        &http,
        &c.token,
        &patient,
        "?filename=r%C3%A9f%C3%A9r%C3%A9%20Dupont.pdf&description=Referral%20letter",
        &[("content-type", "application/pdf")],
        letter.clone(),
    )
    .await;
    let meta = status(&made, 201);
    assert_eq!(meta["content_type"], "application/pdf", "{meta}");
    assert_eq!(meta["filename"], "référé Dupont.pdf");
    assert_eq!(meta["description"], "Referral letter");
    assert_eq!(meta["size"], letter.len());
    assert_eq!(meta["patient_id"], patient.as_str());
    assert_eq!(meta["created_by"], c.user_id.as_str());
    let pdf_id = id(&meta);
    assert_eq!(
        made.header("location"),
        Some(format!("/api/v1/attachments/{pdf_id}").as_str())
    );

    // The PNG named by Content-Disposition, sent as octet-stream: the type found.
    let image = png();
    let made = upload(
        &http,
        &c.token,
        &patient,
        "",
        &[
            ("content-type", "application/octet-stream"),
            ("content-disposition", "attachment; filename=\"scan 1.png\""),
        ],
        image.clone(),
    )
    .await;
    let png_meta = status(&made, 201);
    assert_eq!(png_meta["content_type"], "image/png", "{png_meta}");
    assert_eq!(png_meta["filename"], "scan 1.png");
    assert!(png_meta["description"].is_null());

    // Byte for byte, with the headers of a download.
    let got = call(
        &http,
        &c.token,
        Method::GET,
        &format!("/api/v1/attachments/{pdf_id}"),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body.as_ref(), letter.as_slice());
    assert_eq!(got.header("content-type"), Some("application/pdf"));
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    let disposition = got.header("content-disposition").unwrap();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    assert!(
        disposition.contains("filename*=UTF-8''r%C3%A9f%C3%A9r%C3%A9%20Dupont.pdf"),
        "{disposition}"
    );
    let png_path = format!("/api/v1/attachments/{}", id(&png_meta));
    let got = call(&http, &c.token, Method::GET, &png_path).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body.as_ref(), image.as_slice());
    assert_eq!(got.header("content-type"), Some("image/png"));

    // Stored sealed: neither the content nor the name in the clear; in chunks.
    let db = stack().clinic_db(&c).await;
    let row = db
        .query_one(
            "SELECT string_agg(k.content_enc, ''::bytea ORDER BY k.seq), count(*), \
                    (SELECT filename_enc || coalesce(description_enc, '') FROM attachments WHERE id = $1::text::uuid), \
                    (SELECT sha256 FROM attachments WHERE id = $1::text::uuid), encode(sha256($2::bytea), 'hex') \
             FROM attachment_chunks k WHERE k.attachment_id = $1::text::uuid",
            &[&pdf_id, &letter],
        )
        .await
        .unwrap();
    let sealed: Vec<u8> = row.get(0);
    let chunks: i64 = row.get(1);
    let names: Vec<u8> = row.get(2);
    assert_eq!(chunks, 4, "200 000 bytes are four 64 KiB chunks");
    assert!(!contains(&sealed, marker.as_bytes()));
    assert!(!contains(&sealed, b"%PDF"));
    assert!(!contains(&names, "référé".as_bytes()));
    assert!(!contains(&names, b"Referral"));
    assert_eq!(row.get::<_, String>(3), row.get::<_, String>(4));
    assert_eq!(meta["sha256"], row.get::<_, String>(3));

    // Listed, newest last; the download is in the audit trail with its id.
    let page = status(
        &call(
            &http,
            &c.token,
            Method::GET,
            &format!("/api/v1/patients/{patient}/attachments"),
        )
        .await,
        200,
    );
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [pdf_id.as_str(), png_meta["id"].as_str().unwrap()]);
    let filter = format!(
        "action = 'read' AND resource = 'attachments' AND resource_id = '{pdf_id}' AND outcome = 'success'"
    );
    assert!(!stack().wait_audit(&c, &filter).await.is_empty());
    let filter =
        format!("action = 'create' AND resource = 'attachments' AND resource_id = '{pdf_id}'");
    assert!(!stack().wait_audit(&c, &filter).await.is_empty());

    // The patient's export and the clinic's export carry the metadata.
    let export = status(
        &call(
            &http,
            &c.token,
            Method::GET,
            &format!("/api/v1/patients/{patient}/export"),
        )
        .await,
        200,
    );
    assert_eq!(
        export["attachments"].as_array().unwrap().len(),
        2,
        "{export}"
    );
    let whole = call(&http, &c.token, Method::GET, "/api/v1/export").await;
    assert_eq!(whole.status, 200);
    let lines: Vec<Value> = whole
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["resource"] == "attachments")
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["data"]["filename"], "référé Dupont.pdf");
}

#[tokio::test]
async fn too_large_lying_and_unaccepted_files_are_refused_with_nothing_stored() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    let patient = new_patient(&http, &c).await;
    let pdf_type = [("content-type", "application/pdf")];

    // One byte over the limit: 413, answered from the declared length before the
    // body is read; a client still sending may see the connection close first.
    let over = pdf("over", LIMIT + 1);
    let over = over[..LIMIT + 1].to_vec();
    let auth = format!("Bearer {}", c.token);
    let sent = http
        .send(
            Method::POST,
            &format!("/api/v1/patients/{patient}/attachments"),
            &[("authorization", auth.as_str()), pdf_type[0]],
            Some(over.into()),
        )
        .await;
    match sent {
        Ok(reply) => {
            problem(&reply, 413);
        }
        Err(e) => {
            let why = format!("{e:#}");
            assert!(
                why.contains("connection closed") || why.contains("reset"),
                "{why}"
            );
        }
    }
    // An executable, and HTML, claiming to be a PDF: 415.
    let mut exe = b"MZ\x90\x00\x03\x00\x00\x00".to_vec();
    exe.resize(4096, 0);
    let refused = problem(
        &upload(&http, &c.token, &patient, "", &pdf_type, exe).await,
        415,
    );
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was stored"),
        "{refused}"
    );
    let html = b"<!DOCTYPE html><html><script>alert(1)</script></html>".to_vec();
    problem(
        &upload(&http, &c.token, &patient, "", &pdf_type, html.clone()).await,
        415,
    );
    let text = [("content-type", "text/plain")];
    problem(
        &upload(&http, &c.token, &patient, "", &text, html).await,
        415,
    );
    // A PNG claiming to be a PDF, and a zip with no claim.
    problem(
        &upload(&http, &c.token, &patient, "", &pdf_type, png()).await,
        415,
    );
    let zip = b"PK\x03\x04\x14\x00\x00\x00\x08\x00".to_vec();
    problem(&upload(&http, &c.token, &patient, "", &[], zip).await, 415);
    // Nothing, and an unknown patient.
    problem(
        &upload(&http, &c.token, &patient, "", &pdf_type, Vec::new()).await,
        400,
    );
    let nobody = uuid::Uuid::new_v4().to_string();
    problem(
        &upload(&http, &c.token, &nobody, "", &pdf_type, pdf("x", 10)).await,
        404,
    );
    assert_eq!(stored(&c).await, (0, 0));
    let filter = "action = 'create' AND resource = 'attachments' AND outcome = 'rejected'";
    assert!(!stack().wait_audit(&c, filter).await.is_empty());

    // Text for its first chunk, binary after it: refused as a whole.
    let mut disguised = "a line of text\n".repeat(5000).into_bytes();
    disguised.extend_from_slice(b"MZ\x00\x00\x01binary");
    problem(
        &upload(&http, &c.token, &patient, "", &text, disguised).await,
        415,
    );
    assert_eq!(stored(&c).await, (0, 0));

    // Plain text is taken as text.
    let note = "Appel du Dr Martin : résultats normaux.\n"
        .as_bytes()
        .to_vec();
    let meta = status(
        &upload(&http, &c.token, &patient, "", &text, note).await,
        201,
    );
    assert_eq!(meta["content_type"], "text/plain");
    assert_eq!(meta["filename"], "attachment.txt");
    assert_eq!(stored(&c).await, (1, 1));
}

#[tokio::test]
async fn other_clinics_see_nothing_and_staff_neither_download_nor_delete() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    let patient = new_patient(&http, &c).await;
    let pdf_type = [("content-type", "application/pdf")];
    let made = upload(&http, &c.token, &patient, "", &pdf_type, pdf("mine", 1000)).await;
    let file = id(&status(&made, 201));
    let path = format!("/api/v1/attachments/{file}");
    let list = format!("/api/v1/patients/{patient}/attachments");

    let other = register(&http, None).await;
    problem(&call(&http, &other.token, Method::GET, &list).await, 404);
    problem(&call(&http, &other.token, Method::GET, &path).await, 404);
    problem(&call(&http, &other.token, Method::DELETE, &path).await, 404);
    let theirs = upload(&http, &other.token, &patient, "", &pdf_type, pdf("x", 10)).await;
    problem(&theirs, 404);

    let staff = token_as(&stack(), &c, Role::Staff);
    let practitioner = token_as(&stack(), &c, Role::Practitioner);
    let scanned = upload(&http, &staff, &patient, "", &pdf_type, pdf("scan", 500)).await;
    status(&scanned, 201);
    let page = status(&call(&http, &staff, Method::GET, &list).await, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    problem(&call(&http, &staff, Method::GET, &path).await, 403);
    problem(&call(&http, &staff, Method::DELETE, &path).await, 403);
    let filter = format!(
        "action = 'read' AND resource = 'attachments' AND resource_id = '{file}' AND outcome = 'rejected'"
    );
    assert!(!stack().wait_audit(&c, &filter).await.is_empty());

    let got = call(&http, &practitioner, Method::GET, &path).await;
    assert_eq!(got.status, 200);
    let gone = call(&http, &practitioner, Method::DELETE, &path).await;
    assert_eq!(gone.status, 204, "{}", gone.text());
    problem(&call(&http, &c.token, Method::GET, &path).await, 404);
    problem(&call(&http, &c.token, Method::DELETE, &path).await, 404);
    // The content is gone; the metadata stays as a tombstone.
    let db = stack().clinic_db(&c).await;
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM attachment_chunks WHERE attachment_id = $1::text::uuid), \
                    (SELECT deleted_at IS NOT NULL FROM attachments WHERE id = $1::text::uuid)",
            &[&file],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
    assert!(row.get::<_, bool>(1));
    let page = status(&call(&http, &c.token, Method::GET, &list).await, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_consent_links_only_its_patients_file_and_erasure_removes_the_files() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    let patient = new_patient(&http, &c).await;
    let someone_else = new_patient(&http, &c).await;
    let pdf_type = [("content-type", "application/pdf")];
    let marker = unique("SIGNED-CONSENT");
    let made = upload(
        &http,
        &c.token,
        &patient,
        "?filename=signed.pdf",
        &pdf_type,
        pdf(&marker, 70_000),
    )
    .await;
    let signed = id(&status(&made, 201));
    let made = upload(
        &http,
        &c.token,
        &someone_else,
        "",
        &pdf_type,
        pdf("other", 100),
    )
    .await;
    let not_theirs = id(&status(&made, 201));

    let template = http
        .post(
            "/api/v1/consent-templates",
            Some(&c.token),
            &json!({"name": unique("Surgery"), "body": "I agree."}),
        )
        .await
        .unwrap();
    let template = id(&status(&template, 201));
    let body = |attachment: &str| json!({"patient_id": patient, "template_id": template, "attachment_id": attachment});
    let refused = http
        .post("/api/v1/consents", Some(&c.token), &body(&not_theirs))
        .await
        .unwrap();
    let p = problem(&refused, 400);
    assert!(
        p["detail"].as_str().unwrap().contains("attachment_id"),
        "{p}"
    );
    let consent = http
        .post("/api/v1/consents", Some(&c.token), &body(&signed))
        .await
        .unwrap();
    let consent = status(&consent, 201);
    assert_eq!(consent["attachment_id"], signed.as_str());

    // Erasure: the files' content and names are gone, the consent stays.
    let erased = http
        .post(
            &format!("/api/v1/patients/{patient}/erase"),
            Some(&c.token),
            &json!({}),
        )
        .await
        .unwrap();
    status(&erased, 200);
    problem(
        &call(
            &http,
            &c.token,
            Method::GET,
            &format!("/api/v1/attachments/{signed}"),
        )
        .await,
        404,
    );
    let db = stack().clinic_db(&c).await;
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM attachment_chunks WHERE attachment_id = $1::text::uuid), \
                    (SELECT filename_enc IS NULL AND deleted_at IS NOT NULL FROM attachments WHERE id = $1::text::uuid), \
                    (SELECT count(*) FROM attachment_chunks WHERE attachment_id = $2::text::uuid)",
            &[&signed, &not_theirs],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
    assert!(row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i64>(2), 1, "another patient's file stays");
    let kept = call(
        &http,
        &c.token,
        Method::GET,
        &format!("/api/v1/consents/{}", id(&consent)),
    )
    .await;
    assert_eq!(status(&kept, 200)["attachment_id"], signed.as_str());
}

#[tokio::test]
async fn key_rotation_reseals_files_so_the_old_key_can_be_shredded() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    let patient = new_patient(&http, &c).await;
    let letter = pdf("rotated", 150_000);
    let made = upload(
        &http,
        &c.token,
        &patient,
        "?filename=before.pdf&description=sealed%20under%20version%201",
        &[("content-type", "application/pdf")],
        letter.clone(),
    )
    .await;
    let file = id(&status(&made, 201));

    let clinic = common::ClinicId::from_uuid(c.id.parse().unwrap());
    let report = admin::keys::rotate_data_keys(
        &stack().admin_settings_of(&c.region),
        &stack().keys().unwrap(),
        &admin::keys::Scope::Clinic(clinic),
        Some(std::time::Duration::ZERO),
        false,
    )
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    // Three chunks, the name, the description, and the patient's ssn.
    assert_eq!(report.rotated[0].reencrypted, 6, "{report:?}");
    assert_eq!(report.rotated[0].shredded, [1], "version 1 shredded");

    let got = call(
        &http,
        &c.token,
        Method::GET,
        &format!("/api/v1/attachments/{file}"),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body.as_ref(), letter.as_slice());
    let page = status(
        &call(
            &http,
            &c.token,
            Method::GET,
            &format!("/api/v1/patients/{patient}/attachments"),
        )
        .await,
        200,
    );
    assert_eq!(page["data"][0]["filename"], "before.pdf");
    assert_eq!(page["data"][0]["description"], "sealed under version 1");
}
