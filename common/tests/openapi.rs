//! The OpenAPI document as a whole: a snapshot of every byte that matters (a
//! refactor that changes it fails here and shows the difference; accept a wanted
//! change with `INSTA_UPDATE=always cargo test -p common --test openapi`, or
//! `cargo insta review`), and the documentation rules every operation keeps:
//! a summary, a description, a camelCase operation id unique in the document, tags
//! declared at the top, a 2xx and a 4xx answer. `scripts/api-lint` holds the
//! document to Redocly's rules besides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use common::openapi::{document, operations};
use serde_json::Value;
use std::collections::BTreeSet;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every operation object with its method and path.
fn each_operation(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((method.to_ascii_uppercase(), path.clone(), op));
            }
        }
    }
    out
}

#[test]
fn the_document_is_unchanged() {
    let mut doc = document();
    // The crate's version is not the document's content.
    doc["info"]["version"] = "[version]".into();
    insta::with_settings!({sort_maps => true, prepend_module_to_snapshot => false}, {
        insta::assert_json_snapshot!("openapi_document", doc);
    });
}

#[test]
fn every_operation_is_documented() {
    let doc = document();
    let declared: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap();
            let description = t["description"].as_str().unwrap_or("");
            assert!(!description.is_empty(), "tag {name} has no description");
            name
        })
        .collect();
    let mut ids = BTreeSet::new();
    let ops = each_operation(&doc);
    assert_eq!(ops.len(), operations(&doc).len());
    for (method, path, op) in ops {
        let label = format!("{method} {path}");
        let summary = op["summary"].as_str().unwrap_or("");
        assert!(!summary.is_empty(), "{label}: no summary");
        assert!(!summary.ends_with('.'), "{label}: a summary is a title");
        let description = op["description"].as_str().unwrap_or("");
        assert!(description.len() > summary.len(), "{label}: no description");
        let id = op["operationId"].as_str().unwrap_or("");
        let mut chars = id.chars();
        assert!(
            chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_alphanumeric()),
            "{label}: operationId {id:?} is not camelCase"
        );
        assert!(ids.insert(id.to_owned()), "{label}: operationId {id} twice");
        let tags = op["tags"].as_array().unwrap();
        assert_eq!(tags.len(), 1, "{label}: one tag");
        for tag in tags {
            assert!(
                declared.contains(tag.as_str().unwrap()),
                "{label}: tag {tag} not declared at the top"
            );
        }
        let codes: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
        assert!(codes.iter().any(|c| c.starts_with('2')), "{label}: no 2xx");
        assert!(codes.iter().any(|c| c.starts_with('4')), "{label}: no 4xx");
    }
}

#[test]
fn operation_ids_follow_the_convention() {
    let doc = document();
    let id = |path: &str, method: &str| {
        doc["paths"][path][method]["operationId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(id("/api/v1/patients", "get"), "listPatients");
    assert_eq!(
        id("/api/v1/consent-templates", "post"),
        "createConsentTemplate"
    );
    assert_eq!(
        id("/api/v1/consent-templates", "get"),
        "listConsentTemplates"
    );
    assert_eq!(
        id("/api/v1/patients/{id}/restore", "post"),
        "restorePatient"
    );
    assert_eq!(id("/api/v1/documents/{id}/issue", "post"), "issueDocument");
    assert_eq!(id("/api/v1/users/{id}/sign-out", "post"), "signOutUser");
    assert_eq!(id("/api/v1/categories/{id}", "patch"), "updateCategory");
}
