//! The API reference at `/docs` over plain HTTP: the page, its scripts and
//! their headers, and the vendored Redoc against the hash `update.sh`
//! records. `api_reference_browser.rs` opens it in a real browser.

use crate::common::TestServer;
use notifly_server::dashboard::reference::{CONTENT_SECURITY_POLICY, REDOC_PATH, REDOC_VERSION};
use sha2::{Digest, Sha256};

/// `assets/redoc/`, where Redoc is vendored.
fn redoc_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/redoc")
}

/// The value of `NAME=value` in `update.sh`.
fn recorded(name: &str) -> String {
    let script = std::fs::read_to_string(redoc_dir().join("update.sh")).unwrap();
    let prefix = format!("{name}=");
    script
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}= in update.sh"))
        .to_owned()
}

/// The value of `directive` in a Content-Security-Policy.
fn directive<'a>(csp: &'a str, name: &str) -> Option<&'a str> {
    csp.split(';').map(str::trim).find_map(|d| {
        let (n, v) = d.split_once(' ').unwrap_or((d, ""));
        (n == name).then_some(v)
    })
}

#[test]
fn the_vendored_redoc_matches_its_recorded_hash() {
    assert_eq!(recorded("VERSION"), REDOC_VERSION);
    let bundle = std::fs::read(redoc_dir().join("redoc.standalone.js")).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bundle)), recorded("SHA256"));
    // Its licences travel with it.
    for file in ["LICENSE", "redoc.standalone.js.LICENSE.txt"] {
        assert!(redoc_dir().join(file).exists(), "no {file}");
    }
}

#[tokio::test]
async fn the_reference_is_a_page_with_no_inline_script_under_a_strict_policy() {
    let server = TestServer::start().await;
    let http = &server.http;

    let page = http.get(server.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let header = |res: &reqwest::Response, name: &str| {
        res.headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} on {}", res.url()))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert!(header(&page, "content-type").starts_with("text/html"));
    let csp = header(&page, "content-security-policy");
    assert_eq!(csp, CONTENT_SECURITY_POLICY);
    // Scripts from this origin only: no inline code, no eval, no other host.
    assert_eq!(directive(&csp, "default-src"), Some("'none'"));
    assert_eq!(directive(&csp, "script-src"), Some("'self'"));
    assert_eq!(directive(&csp, "connect-src"), Some("'self'"));
    assert_eq!(directive(&csp, "frame-ancestors"), Some("'none'"));
    assert_eq!(directive(&csp, "base-uri"), Some("'none'"));
    assert_eq!(directive(&csp, "form-action"), Some("'none'"));
    assert_eq!(directive(&csp, "font-src"), None, "falls back to 'none'");
    assert!(
        !csp.contains("unsafe-eval") && !csp.contains("http"),
        "{csp}"
    );
    // The dashboard's other security headers.
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert_eq!(header(&page, "referrer-policy"), "no-referrer");

    let html = page.text().await.unwrap();
    assert!(
        !html.contains("://"),
        "the page names another host:\n{html}"
    );
    // Every script is a same-origin file with an empty body.
    let scripts: Vec<&str> = html.split("<script").skip(1).collect();
    let mut sources = Vec::new();
    for script in &scripts {
        let (attrs, rest) = script.split_once('>').unwrap();
        assert!(
            rest.starts_with("</script>"),
            "an inline script: <script{script}"
        );
        let src = attrs
            .split("src=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("a script without src: <script{script}"));
        assert!(src.starts_with("/docs/"), "{src}");
        sources.push(src.to_owned());
    }
    assert_eq!(sources, [REDOC_PATH, "/docs/reference.js"]);
    assert!(REDOC_PATH.contains(REDOC_VERSION));
    // No event handler attributes (` onload=`…) or `javascript:` URLs.
    let handler = html.split(" on").skip(1).any(|rest| {
        let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    });
    assert!(!handler && !html.contains("javascript:"), "{html}");

    for src in &sources {
        let res = http.get(server.url(src)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{src}");
        assert!(
            header(&res, "content-type").starts_with("text/javascript"),
            "{src}: {}",
            header(&res, "content-type")
        );
        assert_eq!(header(&res, "content-security-policy"), csp);
        assert_eq!(header(&res, "x-content-type-options"), "nosniff");
        let cache = header(&res, "cache-control");
        let body = res.bytes().await.unwrap();
        if src == REDOC_PATH {
            // A versioned path: kept for a year.
            assert_eq!(cache, "public, max-age=31536000, immutable");
            assert_eq!(
                hex::encode(Sha256::digest(&body)),
                recorded("SHA256"),
                "the binary serves the vendored bundle"
            );
        } else {
            assert_eq!(cache, "no-cache");
            let js = String::from_utf8(body.to_vec()).unwrap();
            assert!(js.contains("Redoc.init") && js.contains("\"/openapi.json\""));
        }
    }

    // What it shows is public: no key is needed, here or for the document.
    let doc = http.get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(doc.status(), 200);
    // `/docs/` leads to `/docs`; anything else under it is not found.
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(server.url("/docs/"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);
    assert_eq!(header(&redirect, "location"), "/docs");
    let missing = http
        .get(server.url("/docs/redoc.standalone.js.map"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn the_dashboard_links_to_the_reference() {
    let server = TestServer::start().await;
    let login = server
        .http
        .get(server.url("/dashboard/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login.contains(r#"<a href="/docs">API reference</a>"#));
    // The navigation of every logged-in page.
    let base = include_str!("../../templates/dashboard/base.html");
    let nav = base.split("<nav").nth(1).unwrap().split("</nav>").next();
    assert!(
        nav.unwrap()
            .contains(r#"<a href="/docs">API reference</a>"#)
    );
}
