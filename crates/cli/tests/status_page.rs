//! The status page (`GET /`) in a real browser — Debian's chromium through chromium-driver and
//! Selenium — against a live server with two lakes: no console error, both lakes and their
//! figures shown, a commit a DuckDB client makes appears by itself (the page refreshes), no
//! secret on the page. The screenshot is kept at `<target>/tmp/status-page.png` (`cargo xtask
//! test` prints its path).

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{home, Server};

const ADMIN_PASSWORD: &str = "admin-password-page-1";
const TOKEN: &str = "page-token-0123456789abcdef";

/// A server with two lakes, sales and hr, figures refreshed every second, the metrics token set.
fn start() -> (tempfile::TempDir, Server) {
    let dir = home();
    let config = common::two_lakes(dir.path());
    let mut server = Server::spawn(
        dir.path(),
        &[
            ("DUCKLAKE_CATALOG_CONFIG", config.to_str().unwrap()),
            ("DUCKLAKE_CATALOG_POSTGRES__ADMIN_PASSWORD", ADMIN_PASSWORD),
            ("DUCKLAKE_CATALOG_METRICS__REFRESH", "1s"),
            ("DUCKLAKE_CATALOG_MAINTENANCE__ENABLED", "false"),
            ("DUCKLAKE_CATALOG_METRICS__TOKEN", TOKEN),
        ],
    );
    server.wait_ready(Duration::from_mins(2));
    (dir, server)
}

/// With metrics.token, the page, /metrics and /status need it; the probes do not.
fn only_the_token_opens_the_page(server: &Server) {
    for path in ["/", "/metrics", "/status", "/?token=wrong-token-0123456789"] {
        let (code, _, body) = server.get_text(path);
        assert_eq!(code, 401, "{path}: {body}");
        assert!(body.contains("metrics.token"), "{body}");
    }
    assert_eq!(server.get_text("/readyz").0, 200);
    assert_eq!(server.get_text("/healthz").0, 200);
    assert_eq!(server.get_text(&format!("/metrics?token={TOKEN}")).0, 200);
}

#[test]
fn the_status_page_shows_both_lakes_and_a_new_commit_in_a_real_browser() {
    let (_dir, mut server) = start();
    let port = server.pooler_port.to_string();
    common::client_script(
        "commits.py",
        &["admin", ADMIN_PASSWORD, &port, "sales", "create", "0"],
    );

    only_the_token_opens_the_page(&server);
    let (code, ctype, html) = server.get_text(&format!("/?token={TOKEN}"));
    assert_eq!(code, 200);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    // Self-contained: no external script, style, font or image.
    for external in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!html.contains(external), "{external}");
    }

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let url = format!(
        "http://127.0.0.1:{}/?refresh=1&token={TOKEN}",
        server.http_port
    );
    let mut browser = Command::new(common::venv().join("bin/python"))
        .arg(common::python_script("status_page.py"))
        .args([url.as_str(), screenshot.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the browser script");
    let mut out = BufReader::new(browser.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let loaded: serde_json::Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => {
            let _ = browser.kill();
            let err = browser.wait_with_output().unwrap();
            panic!("{e}: {line}\n{}", String::from_utf8_lossy(&err.stderr))
        }
    };
    assert_eq!(
        loaded["lakes"],
        serde_json::json!(["hr", "sales"]),
        "{loaded}"
    );

    // A DuckDB client commits; the page shows it without being reloaded.
    common::client_script(
        "commits.py",
        &["admin", ADMIN_PASSWORD, &port, "sales", "insert", "3"],
    );
    writeln!(browser.stdin.as_mut().unwrap(), "go").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    let done = browser.wait_with_output().unwrap();
    let seen: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        panic!(
            "{e}: {line} (browser exited {}):\n{}",
            done.status,
            String::from_utf8_lossy(&done.stderr)
        )
    });
    assert_eq!(
        seen["after"]["sales"].as_i64().unwrap(),
        seen["before"]["sales"].as_i64().unwrap() + 3,
        "{seen}"
    );
    assert_eq!(seen["after"]["hr"], seen["before"]["hr"], "{seen}");
    assert_eq!(
        seen["severe"],
        serde_json::json!([]),
        "console errors: {seen}"
    );
    assert_eq!(seen["ready"], "ready");
    assert!(
        seen["versions"]
            .as_str()
            .unwrap()
            .contains(catalog_server::versions::DUCKDB_VERSION),
        "{seen}"
    );
    assert!(!seen.to_string().contains(ADMIN_PASSWORD));
    assert!(
        !html.contains(TOKEN),
        "the page does not carry the token itself"
    );
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
    eprintln!("status page screenshot: {}", screenshot.display());
    assert!(server.stop().success());
}
