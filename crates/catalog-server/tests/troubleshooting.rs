//! Every error message the product can print is explained in docs/troubleshooting.md.
//!
//! The messages are the `#[error("…")]` templates of every crate and the `anyhow!`/`bail!`
//! messages of the binary. A message counts as explained when each literal piece of its cause
//! (the text before the first `; `, split at the `{…}` placeholders, pieces of six characters or
//! more) appears in the page — so the page quotes messages as printed, with `…` for the parts
//! that name a file, bucket or value.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literals that follow each `opener` in `src` (whitespace allowed in between).
fn literals_after(src: &str, opener: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find(opener) {
        rest = &rest[i + opener.len()..];
        let trimmed = rest.trim_start();
        let Some(body) = trimmed.strip_prefix('"') else {
            continue;
        };
        let mut literal = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(next) = chars.next() {
                        literal.push(next);
                    }
                }
                '"' => break,
                _ => literal.push(c),
            }
        }
        found.push(literal);
    }
    found
}

/// The literal pieces of a format template between its `{…}` placeholders.
fn pieces(template: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.last_mut().unwrap().push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.last_mut().unwrap().push('}');
            }
            '{' => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                out.push(String::new());
            }
            _ => out.last_mut().unwrap().push(c),
        }
    }
    out.into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| p.chars().count() >= 6)
        .collect()
}

#[test]
fn every_error_message_is_explained_in_troubleshooting() {
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")).join("../..");
    let doc = std::fs::read_to_string(root.join("docs/troubleshooting.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let mut messages = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.components().any(|c| c.as_os_str() == "src"))
    {
        let src = std::fs::read_to_string(file).unwrap();
        let mut found = literals_after(&src, "#[error(");
        if file.starts_with(root.join("crates/cli")) {
            found.extend(literals_after(&src, "anyhow!("));
            found.extend(literals_after(&src, "bail!("));
        }
        messages.extend(found.into_iter().map(|m| (file.clone(), m)));
    }
    assert!(
        messages.len() > 60,
        "found only {} messages",
        messages.len()
    );
    let missing: Vec<String> = messages
        .iter()
        .filter_map(|(file, message)| {
            let cause = message.split("; ").next().unwrap_or_default();
            let absent: Vec<String> = pieces(cause)
                .into_iter()
                .filter(|p| !doc.contains(p.as_str()))
                .collect();
            (!absent.is_empty()).then(|| {
                format!(
                    "{}: \"{message}\" (not in the page: {absent:?})",
                    file.strip_prefix(&root).unwrap_or(file).display()
                )
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/troubleshooting.md does not explain {} message(s):\n{}",
        missing.len(),
        missing.join("\n")
    );
}

#[test]
fn pieces_split_at_placeholders_and_keep_escaped_braces() {
    assert_eq!(
        pieces("{path}: bucket `{bucket}` does not exist ({op} failed)"),
        vec![": bucket `", "` does not exist (", "failed)"]
    );
    assert_eq!(
        pieces("store JSON such as {{\"password\"}}"),
        vec!["store JSON such as {\"password\"}"]
    );
}
