//! The dashboard as a browser without JavaScript uses it: real server, real
//! database, real receiver, plain HTML forms. Login and logout, redirects,
//! every page and form, CSRF refusals that write nothing, escaping of
//! attacker-controlled text, the security headers, and sessions that live in
//! the database (they survive a restart and work on every node).

use crate::common::delivery_helpers as helpers;
use crate::common::receiver;
use crate::common::{Client, TestServer, id_of};
use helpers::{DEADLINE, get_ok, wait_deliveries, wait_delivery, webhook};
use receiver::{Behavior, Receiver};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

/// A browser session on the dashboard: follows no redirects by itself, keeps
/// the session cookie, and sends each form's CSRF token.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no Location in a {} answer", self.status))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_else(|| panic!("no `{name}` header"))
    }

    /// The CSRF token in the page's forms.
    fn csrf(&self) -> String {
        let marker = r#"name="csrf" value=""#;
        let start = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_owned()
    }

    #[track_caller]
    fn assert_has(&self, text: &str) {
        assert!(
            self.body.contains(text),
            "`{text}` is not on the page ({}):\n{}",
            self.status,
            self.body
        );
    }

    #[track_caller]
    fn assert_lacks(&self, text: &str) {
        assert!(
            !self.body.contains(text),
            "`{text}` is on the page:\n{}",
            self.body
        );
    }
}

impl Browser {
    fn new(server: &TestServer) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: server.base.clone(),
            cookie: None,
        }
    }

    async fn send(&mut self, rb: reqwest::RequestBuilder) -> Page {
        let rb = match &self.cookie {
            Some(c) => rb.header("cookie", c),
            None => rb,
        };
        let res = rb.send().await.expect("send");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        for set in headers.get_all(SET_COOKIE) {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap().trim();
            if pair.ends_with('=') {
                self.cookie = None;
            } else {
                self.cookie = Some(pair.to_owned());
            }
        }
        let body = res.text().await.expect("read the body");
        Page {
            status,
            headers,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let rb = self.http.get(format!("{}{path}", self.base));
        self.send(rb).await
    }

    /// Posts a form exactly as given (no CSRF token added).
    async fn post_raw(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let rb = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(rb).await
    }

    /// Posts a form with the CSRF token of the page at `from`.
    async fn post(&mut self, from: &str, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(from).await.csrf();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    /// Submits a form page to itself (as the edit forms do), with owned values.
    async fn submit(&mut self, path: &str, fields: &[(&str, String)]) -> Page {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.post(path, path, &fields).await
    }

    async fn login(&mut self, key: &str) -> Page {
        self.post_raw("/dashboard/login", &[("api_key", key), ("next", "")])
            .await
    }

    /// Follows a redirect answer to its page.
    async fn follow(&mut self, page: &Page) -> Page {
        assert_eq!(page.status, 303, "expected a redirect: {}", page.body);
        let to = page.location().to_owned();
        self.get(&to).await
    }
}

async fn setup() -> (TestServer, Client, Browser) {
    let server = helpers::server(|_| {}).await;
    let api = server.account("dash").await;
    let mut browser = Browser::new(&server);
    let page = browser.login(api.key.as_deref().unwrap()).await;
    assert_eq!(page.status, 303, "login: {}", page.body);
    (server, api, browser)
}

fn key(c: &Client) -> &str {
    c.key.as_deref().unwrap()
}

#[tokio::test]
async fn logged_out_pages_redirect_to_login_and_a_wrong_key_is_refused() {
    let server = TestServer::start().await;
    let api = server.account("acme").await;
    let mut b = Browser::new(&server);

    for path in [
        "/dashboard",
        "/dashboard/webhooks",
        "/dashboard/events",
        "/dashboard/webhooks/new",
    ] {
        let page = b.get(path).await;
        assert_eq!(page.status, 303, "{path}");
        assert!(page.location().starts_with("/dashboard"), "{path}");
    }
    let page = b.get("/dashboard/webhooks?status=failed").await;
    assert_eq!(
        page.location(),
        "/dashboard/login?next=%2Fdashboard%2Fwebhooks%3Fstatus%3Dfailed"
    );
    // A logged-out POST goes to the login page and changes nothing.
    let page = b
        .post_raw(
            "/dashboard/webhooks",
            &[("name", "x"), ("url", "https://example.com")],
        )
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/dashboard/login");

    let login = b.get("/dashboard/login").await;
    assert_eq!(login.status, 200);
    login.assert_has(r#"type="password""#);
    login.assert_has(r#"<label for="api_key">API key</label>"#);

    for wrong in ["nfly_sk_wrong", "not even a key", ""] {
        let page = b.login(wrong).await;
        assert_eq!(page.status, 401, "{wrong}");
        assert!(page.headers.get(SET_COOKIE).is_none());
        assert!(b.cookie.is_none());
        if wrong.is_empty() {
            page.assert_has("Enter an API key.");
        } else {
            page.assert_has("That API key is not valid");
            // The typed key is not sent back into the page.
            page.assert_lacks(wrong);
        }
    }

    let page = b
        .post_raw(
            "/dashboard/login",
            &[("api_key", key(&api)), ("next", "/dashboard/events")],
        )
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/dashboard/events");
    let cookie = page.header("set-cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    assert!(!cookie.contains(key(&api)), "the cookie is not the key");

    // Following `next` never leaves the dashboard.
    let page = b
        .post_raw(
            "/dashboard/login",
            &[("api_key", key(&api)), ("next", "https://evil.example/")],
        )
        .await;
    assert_eq!(page.location(), "/dashboard/webhooks");

    let page = b.get("/dashboard/webhooks").await;
    assert_eq!(page.status, 200);
    page.assert_has("acme");
    page.assert_has("No webhooks yet");
    // Logged in, the login page moves on.
    assert_eq!(b.get("/dashboard/login").await.status, 303);
}

#[tokio::test]
async fn pages_carry_strict_security_headers() {
    let (server, _api, mut b) = setup().await;
    let mut anonymous = Browser::new(&server);
    for page in [
        b.get("/dashboard/webhooks").await,
        b.get("/dashboard/events").await,
        b.get("/dashboard/event-types").await,
        b.get("/dashboard/webhooks/new").await,
        anonymous.get("/dashboard/login").await,
        b.get("/dashboard/no-such-page").await,
    ] {
        let csp = page.header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(page.header("x-content-type-options"), "nosniff");
        assert_eq!(page.header("referrer-policy"), "no-referrer");
        assert_eq!(page.header("cache-control"), "no-store");
        // No inline script or style anywhere: the CSP would block it.
        page.assert_lacks("<script>");
        page.assert_lacks("style=");
        page.assert_lacks(" onclick=");
    }
    assert_eq!(b.get("/dashboard/no-such-page").await.status, 404);
    let css = b.get("/dashboard/assets/app.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));
    assert!(css.body.contains(":focus-visible"));
    let js = b.get("/dashboard/assets/app.js").await;
    assert!(js.header("content-type").starts_with("text/javascript"));
    // The assets are public: the login page needs them.
    assert_eq!(anonymous.get("/dashboard/assets/app.css").await.status, 200);
}

#[tokio::test]
async fn the_cookie_is_secure_over_https() {
    let server =
        TestServer::start_with(|c| c.public_url = Some("https://notifly.example".into())).await;
    let api = server.account("acme").await;
    let mut b = Browser::new(&server);
    let page = b.login(key(&api)).await;
    assert!(page.header("set-cookie").contains("; Secure"));

    // Behind a TLS-terminating proxy that says so, too.
    let plain = TestServer::start().await;
    let api = plain.account("acme").await;
    let mut b = Browser::new(&plain);
    let rb = b
        .http
        .post(format!("{}/dashboard/login", b.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-proto", "https")
        .body(format!("api_key={}", key(&api)));
    let page = b.send(rb).await;
    assert!(page.header("set-cookie").contains("; Secure"));
}

#[tokio::test]
async fn forms_without_the_session_csrf_token_are_refused_and_write_nothing() {
    let (server, api, mut b) = setup().await;
    let hook = webhook(&api, "existing", "https://example.com/hook", &["*"]).await;
    let secret_before = get_ok(&api, &format!("/v1/webhooks/{}/secret", hook.id)).await;
    let before = server.counts().await;
    let page_path = format!("/dashboard/webhooks/{}", hook.id);
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/dashboard/webhooks".into(),
            vec![
                ("name", "new"),
                ("url", "https://example.com/x"),
                ("events", "*"),
            ],
        ),
        (
            format!("{page_path}/edit"),
            vec![
                ("name", "renamed"),
                ("url", "https://example.com/y"),
                ("events", "*"),
            ],
        ),
        (
            format!("{page_path}/rotate"),
            vec![("overlap_seconds", "0")],
        ),
        (format!("{page_path}/enabled"), vec![("enabled", "false")]),
        (
            format!("{page_path}/test"),
            vec![("type", "message.created")],
        ),
        (format!("{page_path}/recover"), vec![("since", "3600")]),
        (format!("{page_path}/delete"), vec![]),
        ("/dashboard/logout".into(), vec![]),
    ];
    for (path, fields) in &posts {
        // No token.
        let page = b.post_raw(path, fields).await;
        assert_eq!(page.status, 403, "{path} without a token: {}", page.body);
        page.assert_has("nothing was changed");
        // A wrong token.
        let mut wrong = vec![("csrf", "forged-token")];
        wrong.extend_from_slice(fields);
        let page = b.post_raw(path, &wrong).await;
        assert_eq!(page.status, 403, "{path} with a wrong token");
    }
    // Another session's token does not work either.
    let mut other = Browser::new(&server);
    other.login(key(&api)).await;
    let foreign = other.get("/dashboard/webhooks").await.csrf();
    let page = b
        .post_raw(
            &format!("{page_path}/delete"),
            &[("csrf", foreign.as_str())],
        )
        .await;
    assert_eq!(page.status, 403);
    // The right token, but posted from another site.
    let csrf = b.get("/dashboard/webhooks").await.csrf();
    let rb = b
        .http
        .post(format!("{}{page_path}/delete", b.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://evil.example")
        .body(format!("csrf={csrf}"));
    assert_eq!(b.send(rb).await.status, 403);
    // A browser that says the post comes from another site.
    let rb = b
        .http
        .post(format!("{}{page_path}/delete", b.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .header("origin", "null")
        .body(format!("csrf={csrf}"));
    assert_eq!(b.send(rb).await.status, 403);

    assert_eq!(
        server.counts().await,
        before,
        "a refused form wrote something"
    );
    let after = get_ok(&api, &format!("/v1/webhooks/{}", hook.id)).await;
    assert_eq!(after["name"], "existing");
    assert_eq!(after["enabled"], true);
    assert_eq!(
        get_ok(&api, &format!("/v1/webhooks/{}/secret", hook.id)).await,
        secret_before
    );
    // Still logged in: logout was refused too.
    assert_eq!(b.get("/dashboard/webhooks").await.status, 200);
}

#[tokio::test]
async fn create_shows_every_field_error_next_to_its_field_and_keeps_the_input() {
    let (server, api, mut b) = setup().await;
    let before = server.counts().await;
    let page = b
        .post(
            "/dashboard/webhooks/new",
            "/dashboard/webhooks",
            &[
                ("name", "  "),
                ("url", "ftp://files.example/in"),
                ("description", "kept <b>as typed</b>"),
            ],
        )
        .await;
    assert_eq!(page.status, 422, "{}", page.body);
    page.assert_has(r#"<p class="field-error" id="name-error">name must not be empty</p>"#);
    page.assert_has(r#"<p class="field-error" id="url-error">url must use http or https"#);
    page.assert_has(
        r#"<p class="field-error" id="events-error">Pick at least one event type, or “All resource events”.</p>"#,
    );
    page.assert_has(r#"value="ftp://files.example/in""#);
    page.assert_has("kept &#60;b&#62;as typed&#60;/b&#62;");
    page.assert_has(r#"aria-invalid="true" aria-describedby="url-error""#);
    assert_eq!(server.counts().await, before);

    // Checked boxes stay checked after a refusal.
    let page = b
        .post(
            "/dashboard/webhooks/new",
            "/dashboard/webhooks",
            &[
                ("name", "orders"),
                ("url", "not a url"),
                ("events", "message.created"),
                ("events", "group.deleted"),
            ],
        )
        .await;
    assert_eq!(page.status, 422);
    page.assert_has(r#"value="message.created" checked"#);
    page.assert_has(r#"value="group.deleted" checked"#);
    page.assert_lacks(r#"value="message.updated" checked"#);
    page.assert_has(r#"value="orders""#);

    // A duplicate name is shown at the name.
    webhook(&api, "taken", "https://example.com/a", &["*"]).await;
    let page = b
        .post(
            "/dashboard/webhooks/new",
            "/dashboard/webhooks",
            &[
                ("name", "taken"),
                ("url", "https://example.com/b"),
                ("events", "*"),
            ],
        )
        .await;
    assert_eq!(page.status, 422);
    page.assert_has(r#"id="name-error">a webhook named `taken` already exists"#);
}

#[tokio::test]
async fn hostile_names_urls_descriptions_payloads_and_responses_display_as_text() {
    let receiver = Receiver::start().await;
    let (_server, api, mut b) = setup().await;
    let hostile = "<script>alert(1)</script>";
    receiver.set_default(Behavior::Body {
        status: 500,
        body: format!("<img src=x onerror=alert(2)>{hostile}"),
    });
    // No raw spaces: a URL takes none (they are refused, not encoded).
    let url = receiver.url("/hook?next=\"><svg/onload=alert(3)>");
    let page = b
        .post(
            "/dashboard/webhooks/new",
            "/dashboard/webhooks",
            &[
                ("name", hostile),
                ("url", &url),
                ("description", "\"><iframe src=//evil>"),
                ("events", "*"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let webhook_page = page.location().to_owned();
    let id = webhook_page
        .trim_start_matches("/dashboard/webhooks/")
        .split('?')
        .next()
        .unwrap()
        .to_owned();

    // A hostile value in an event payload, and a delivery whose response is hostile.
    let contact = api
        .post(
            "/v1/contacts",
            json!({"username": "mallory", "phone_number": "1-800-759-3000", "display_name": hostile}),
        )
        .await;
    assert_eq!(contact.0, 201, "{}", contact.1);
    let delivery = wait_deliveries(&api, &id, 1, "failed").await;
    let delivery_id = id_of(&delivery[0]).to_owned();

    for path in [
        "/dashboard/webhooks".to_owned(),
        webhook_page.clone(),
        format!("/dashboard/webhooks/{id}/edit"),
        format!("/dashboard/webhooks/{id}/delete"),
        format!("/dashboard/deliveries/{delivery_id}"),
        "/dashboard/events".to_owned(),
    ] {
        let page = b.get(&path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        for raw in ["<script>alert", "<img src=x", "<svg onload", "<iframe"] {
            page.assert_lacks(raw);
        }
    }
    let list = b.get("/dashboard/webhooks").await;
    list.assert_has("&#60;script&#62;alert(1)&#60;/script&#62;");
    let detail = b.get(&format!("/dashboard/deliveries/{delivery_id}")).await;
    detail.assert_has("&#60;img src=x onerror=alert(2)&#62;");
    detail.assert_has("HTTP 500");
    let events = b.get("/dashboard/events").await;
    events.assert_has("&#60;script&#62;alert(1)&#60;/script&#62;");
}

#[tokio::test]
async fn a_webhook_is_created_edited_tested_retried_rotated_recovered_and_deleted_through_the_forms()
 {
    let receiver = Receiver::start().await;
    let (server, api, mut b) = setup().await;

    // Create.
    let page = b
        .post(
            "/dashboard/webhooks/new",
            "/dashboard/webhooks",
            &[
                ("name", "Order sync"),
                ("url", &receiver.url("/hook")),
                ("events", "message.created"),
                ("events", "message.updated"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(page.location().ends_with("?reveal=1#secret"));
    let hooks = api.list_all("/v1/webhooks").await;
    assert_eq!(hooks.len(), 1);
    let id = id_of(&hooks[0]).to_owned();
    assert_eq!(
        hooks[0]["events"],
        json!(["message.created", "message.updated"])
    );
    let secret = get_ok(&api, &format!("/v1/webhooks/{id}/secret")).await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = b.follow(&page).await;
    shown.assert_has("Webhook “Order sync” created.");
    shown.assert_has(&format!(
        r#"<code class="secret" id="secret-value">{secret}</code>"#
    ));
    // Hidden unless asked for; the flash is shown once.
    let page_path = format!("/dashboard/webhooks/{id}");
    let plain = b.get(&page_path).await;
    plain.assert_lacks(&secret);
    plain.assert_lacks("created.");
    plain.assert_has("No deliveries");

    // The list shows it.
    let list = b.get("/dashboard/webhooks").await;
    list.assert_has("Order sync");
    list.assert_has("message.created, message.updated");
    list.assert_has("never");

    // Edit: all events, new name.
    let edit = b.get(&format!("{page_path}/edit")).await;
    edit.assert_has(r#"value="message.created" checked"#);
    let page = b
        .post(
            &format!("{page_path}/edit"),
            &format!("{page_path}/edit"),
            &[
                ("name", "Orders"),
                ("url", &receiver.url("/hook")),
                ("description", "the order service"),
                ("events", "*"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    b.follow(&page).await.assert_has("Changes saved.");
    let w = get_ok(&api, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(w["name"], "Orders");
    assert_eq!(w["events"], json!(["*"]));
    assert_eq!(w["description"], "the order service");

    // Send a test event: it is delivered and listed.
    let page = b
        .post(
            &page_path,
            &format!("{page_path}/test"),
            &[("type", "group.updated")],
        )
        .await;
    assert_eq!(page.status, 303);
    b.follow(&page)
        .await
        .assert_has("A test group.updated event is on its way");
    let got = receiver.wait_for(1, DEADLINE).await;
    assert_eq!(got[0].json()["type"], "group.updated");
    let delivery_id = got[0].delivery_id();
    wait_delivery(&api, &delivery_id, "succeeded").await;
    let page = b.get(&page_path).await;
    page.assert_has("group.updated");
    page.assert_has(&format!("/dashboard/deliveries/{delivery_id}"));
    page.assert_has(r#"class="badge status-succeeded">succeeded"#);
    page.assert_has("<svg");
    page.assert_has("1 of 1 attempts succeeded");
    let filtered = b.get(&format!("{page_path}?status=failed")).await;
    filtered.assert_has("No deliveries with status failed");
    assert_eq!(
        b.get(&format!("{page_path}?status=bogus")).await.status,
        400
    );

    // The delivery's attempt: request headers and body, response.
    let detail = b.get(&format!("/dashboard/deliveries/{delivery_id}")).await;
    detail.assert_has("Attempt 1");
    detail.assert_has("x-notifly-signature");
    detail.assert_has("webhook-id");
    detail.assert_has("HTTP 200");
    detail.assert_has("&#34;type&#34;: &#34;group.updated&#34;");

    // Retry it.
    let page = b
        .post(
            &format!("/dashboard/deliveries/{delivery_id}"),
            &format!("/dashboard/deliveries/{delivery_id}/retry"),
            &[],
        )
        .await;
    assert_eq!(page.status, 303);
    b.follow(&page)
        .await
        .assert_has("Delivery queued to be sent again");
    receiver.wait_for(2, DEADLINE).await;
    helpers::wait_delivery_until(&api, &delivery_id, "retried", |d| {
        d["attempts"] == 2 && d["status"] == "succeeded"
    })
    .await;
    let detail = b.get(&format!("/dashboard/deliveries/{delivery_id}")).await;
    detail.assert_has("Attempt 2");

    // Rotate with the default overlap: both secrets shown, explained.
    let page = b
        .post(
            &page_path,
            &format!("{page_path}/rotate"),
            &[("overlap_seconds", "86400")],
        )
        .await;
    assert_eq!(page.status, 303);
    let rotated = b.follow(&page).await;
    rotated.assert_has("Secret rotated. Until");
    let secrets = get_ok(&api, &format!("/v1/webhooks/{id}/secret")).await;
    assert_eq!(secrets["previous_secret"], secret.as_str());
    assert_ne!(secrets["secret"], secret.as_str());
    rotated.assert_has(secrets["secret"].as_str().unwrap());
    rotated.assert_has(&secret);

    // Disable, enable.
    let page = b
        .post(
            &page_path,
            &format!("{page_path}/enabled"),
            &[("enabled", "false")],
        )
        .await;
    b.follow(&page).await.assert_has("Webhook disabled.");
    let w = get_ok(&api, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(w["enabled"], false);
    b.get("/dashboard/webhooks").await.assert_has("Disabled");
    // Retrying while disabled is refused with the reason, not an error page.
    let page = b
        .post(
            &format!("/dashboard/deliveries/{delivery_id}"),
            &format!("/dashboard/deliveries/{delivery_id}/retry"),
            &[],
        )
        .await;
    b.follow(&page)
        .await
        .assert_has("is disabled; enable it to retry");
    let page = b
        .post(
            &page_path,
            &format!("{page_path}/enabled"),
            &[("enabled", "true")],
        )
        .await;
    b.follow(&page).await.assert_has("Webhook enabled.");
    assert_eq!(
        get_ok(&api, &format!("/v1/webhooks/{id}")).await["enabled"],
        true
    );

    // Recover: a failed delivery is sent again.
    receiver.set_default(Behavior::Status(500));
    let (status, _) = api
        .post(
            &format!("/v1/webhooks/{id}/test"),
            json!({"type": "contact.created"}),
        )
        .await;
    assert_eq!(status, 202);
    let failed = wait_deliveries(&api, &id, 1, "failed").await;
    receiver.set_default(Behavior::Ok);
    let page = b
        .post(
            &page_path,
            &format!("{page_path}/recover"),
            &[("since", "3600")],
        )
        .await;
    b.follow(&page).await.assert_has("1 failed delivery since");
    wait_delivery(&api, id_of(&failed[0]), "succeeded").await;
    let page = b
        .post(
            &page_path,
            &format!("{page_path}/recover"),
            &[("since_utc", "tomorrow")],
        )
        .await;
    b.follow(&page)
        .await
        .assert_has("Give the time as YYYY-MM-DD HH:MM, in UTC.");

    // Pagination of deliveries: 20 a page.
    for _ in 0..21 {
        api.post(
            &format!("/v1/webhooks/{id}/test"),
            json!({"type": "message.created"}),
        )
        .await;
    }
    let first = b.get(&page_path).await;
    first.assert_has("Older →");
    first.assert_has("data-live-refresh");
    let older = first
        .body
        .split("href=\"")
        .find(|s| s.contains("?after="))
        .unwrap();
    let older = older.split('"').next().unwrap().replace("&#38;", "&");
    let second = b.get(&older).await;
    assert_eq!(second.status, 200);
    second.assert_has("← Newer");
    second.assert_lacks("data-live-refresh");

    // Delete, after the confirmation page.
    let confirm = b.get(&format!("{page_path}/delete")).await;
    confirm.assert_has("Delete this webhook?");
    let page = b
        .post(
            &format!("{page_path}/delete"),
            &format!("{page_path}/delete"),
            &[],
        )
        .await;
    assert_eq!(page.location(), "/dashboard/webhooks");
    b.follow(&page).await.assert_has("Webhook “Orders” deleted");
    assert_eq!(api.get(&format!("/v1/webhooks/{id}")).await.0, 404);
    assert_eq!(b.get(&page_path).await.status, 404);
    drop(server);
}

#[tokio::test]
async fn the_events_page_filters_by_type_and_shows_payloads() {
    let (_server, api, mut b) = setup().await;
    let contact = api.contact("kevin").await;
    api.conversation_with(id_of(&contact)).await;
    let all = b.get("/dashboard/events").await;
    all.assert_has("contact.created");
    all.assert_has("conversation.created");
    all.assert_has("&#34;username&#34;: &#34;kevin&#34;");
    let only = b.get("/dashboard/events?type=conversation.created").await;
    only.assert_has("conversation.created");
    only.assert_lacks("<code class=\"strong\">contact.created");
    only.assert_has(r#"<option value="conversation.created" selected>"#);
    let bad = b.get("/dashboard/events?type=nope").await;
    assert_eq!(bad.status, 400);
    bad.assert_has("unknown event type");
}

#[tokio::test]
async fn the_event_types_page_lists_every_type_with_its_fields_and_a_sample() {
    let (server, _api, mut b) = setup().await;
    let page = b.get("/dashboard/event-types").await;
    assert_eq!(page.status, 200, "{}", page.body);
    for t in notifly_webhooks::AnyEventType::ALL {
        page.assert_has(&format!(
            r#"<dt id="{t}"><code class="strong">{t}</code></dt>"#
        ));
        page.assert_has(&t.description().replace('\'', "&#39;"));
    }
    // Fields unfolded from the document's schemas, with their types.
    page.assert_has("<code>payload.contact.username</code>");
    page.assert_has("<code>payload.attachments[].file_size</code>");
    page.assert_has("Contact or null");
    // A sample body, escaped.
    page.assert_has("&#34;type&#34;: &#34;message.created&#34;");
    page.assert_has(r#"<a href="/dashboard/event-types" aria-current="page">"#);
    // The webhook form's event picker links to it.
    let form = b.get("/dashboard/webhooks/new").await;
    form.assert_has(r#"<a href="/dashboard/event-types" target="_blank" rel="noopener">"#);
    // Behind the login, like the rest of the dashboard.
    let anonymous = Browser::new(&server).get("/dashboard/event-types").await;
    assert_eq!(anonymous.status, 303);
}

#[tokio::test]
async fn another_accounts_webhooks_and_deliveries_are_not_found() {
    let (server, _api, mut b) = setup().await;
    let other = server.account("other").await;
    let hook = webhook(&other, "theirs", "https://example.com/t", &["*"]).await;
    for path in [
        format!("/dashboard/webhooks/{}", hook.id),
        format!("/dashboard/webhooks/{}/edit", hook.id),
        format!("/dashboard/webhooks/{}?reveal=1", hook.id),
    ] {
        let page = b.get(&path).await;
        assert_eq!(page.status, 404, "{path}");
        page.assert_lacks(&hook.secret);
    }
    let page = b
        .post(
            "/dashboard/webhooks",
            &format!("/dashboard/webhooks/{}/delete", hook.id),
            &[],
        )
        .await;
    assert_eq!(page.status, 404);
    assert_eq!(other.get(&format!("/v1/webhooks/{}", hook.id)).await.0, 200);
    b.get("/dashboard/webhooks").await.assert_lacks("theirs");
}

#[tokio::test]
async fn logout_ends_the_session() {
    let (_server, _api, mut b) = setup().await;
    let cookie = b.cookie.clone().unwrap();
    let page = b
        .post("/dashboard/webhooks", "/dashboard/logout", &[])
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/dashboard/login");
    assert!(page.header("set-cookie").contains("Max-Age=0"));
    assert!(b.cookie.is_none());
    // The old cookie no longer works.
    b.cookie = Some(cookie);
    let page = b.get("/dashboard/webhooks").await;
    assert_eq!(page.status, 303);
}

/// The cookie's token, as the browser holds it.
fn token_of(b: &Browser) -> String {
    let cookie = b.cookie.as_deref().expect("logged in");
    cookie
        .strip_prefix("notifly_session=")
        .expect("the session cookie")
        .to_owned()
}

/// Creates a webhook through the form; returns the redirect, whose page
/// shows the one-shot "created" message (not followed here).
async fn create_through_form(b: &mut Browser, receiver: &Receiver, name: &str) -> Page {
    let page = b
        .post(
            "/dashboard/webhooks/new",
            "/dashboard/webhooks",
            &[
                ("name", name),
                ("url", &receiver.url("/hook")),
                ("events", "*"),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    page
}

#[tokio::test]
async fn a_session_survives_a_restart_with_its_message_and_logout_still_ends_it() {
    let receiver = Receiver::start().await;
    let (mut server, _api, mut b) = setup().await;

    // The database holds the token's hash, never the token.
    let token = token_of(&b);
    let now = notifly_server::ids::now();
    let mut conn = server.store.read().await.unwrap();
    assert!(conn.dashboard_session(&token, now).await.unwrap().is_none());
    let hash = notifly_server::domain::sessions::token_hash(&token);
    let row = conn
        .dashboard_session(&hash, now)
        .await
        .unwrap()
        .expect("the session row");
    assert_ne!(row.csrf, token);
    drop(conn);

    // A message is left, then the server restarts before it is shown.
    let csrf_before = b.get("/dashboard/events").await.csrf();
    let created = create_through_form(&mut b, &receiver, "Survivor").await;
    server.restart_with(|_| {}).await;
    b.base = server.base.clone();

    // The same cookie still opens the dashboard, with the same CSRF token,
    // and the message is shown once.
    let page = b.follow(&created).await;
    assert_eq!(page.status, 200, "{}", page.body);
    page.assert_has("Webhook “Survivor” created.");
    let list = b.get("/dashboard/webhooks").await;
    assert_eq!(list.status, 200);
    list.assert_has("Survivor");
    list.assert_lacks("created.");
    assert_eq!(list.csrf(), csrf_before);

    // Logging out still ends it, in the database too.
    let page = b
        .post("/dashboard/webhooks", "/dashboard/logout", &[])
        .await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/dashboard/login");
    let mut conn = server.store.read().await.unwrap();
    assert!(conn.dashboard_session(&hash, now).await.unwrap().is_none());
    drop(conn);
    b.cookie = Some(format!("notifly_session={token}"));
    let page = b.get("/dashboard/webhooks").await;
    assert_eq!(page.status, 303);
    assert!(page.location().starts_with("/dashboard/login"));
}

/// A second node on the first one's database: its base URL and how to stop it.
struct SecondNode {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl SecondNode {
    async fn start(first: &TestServer) -> SecondNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = first.config.clone();
        config.listen = addr;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(notifly_server::run(config, listener, async {
            let _ = stopped.await;
        }));
        let base = format!("http://{addr}");
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            assert!(!task.is_finished(), "the second node stopped");
            if let Ok(res) = first.http.get(format!("{base}/readyz")).send().await
                && res.status().as_u16() == 200
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the second node is not ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        SecondNode {
            base,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(20), task)
            .await
            .expect("the second node did not stop")
            .expect("the second node panicked")
            .expect("the second node failed");
    }
}

#[tokio::test]
async fn every_node_on_the_database_serves_every_session() {
    let receiver = Receiver::start().await;
    let (server, _api, mut b) = setup().await;
    if !server.config.database_url.starts_with("postgres") {
        // Several nodes are a PostgreSQL set-up: a second server on a
        // SQLite database is refused, saying why.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = notifly_server::run(server.config.clone(), listener, async {}).await;
        let err = format!(
            "{:#}",
            refused.expect_err("a second server on a SQLite database")
        );
        assert!(err.contains("already serving"), "{err}");
        return;
    }
    let node_b = SecondNode::start(&server).await;
    let node_a = server.base.clone();

    // Logged in on A; B knows the session, and A sees what B left.
    b.base = node_b.base.clone();
    let page = b.get("/dashboard/webhooks").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let created = create_through_form(&mut b, &receiver, "Both nodes").await;
    b.base = node_a.clone();
    b.follow(&created)
        .await
        .assert_has("Webhook “Both nodes” created.");
    b.get("/dashboard/webhooks").await.assert_lacks("created.");

    // Logging out on B ends the session on A.
    let cookie = b.cookie.clone().unwrap();
    b.base = node_b.base.clone();
    let page = b
        .post("/dashboard/webhooks", "/dashboard/logout", &[])
        .await;
    assert_eq!(page.status, 303);
    b.base = node_a;
    b.cookie = Some(cookie);
    assert_eq!(b.get("/dashboard/webhooks").await.status, 303);
    node_b.stop().await;
}

#[tokio::test]
async fn api_keys_are_created_shown_once_and_revoked_from_the_dashboard() {
    let (_server, api, mut b) = setup().await;
    let page = b.get("/dashboard/api-keys").await;
    assert_eq!(page.status, 200);
    page.assert_has("first key");
    page.assert_has("this session");
    page.assert_has("the account's last key");

    // Created: the key is on the answer itself (not a redirect, not a
    // stored message), once.
    let created = b
        .post(
            "/dashboard/api-keys",
            "/dashboard/api-keys",
            &[("name", "CI deploys")],
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.body);
    created.assert_has("New key “CI deploys”");
    let start = created.body.find("nfly_sk_").unwrap();
    let key: String = created.body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert!(key.len() > 40, "{key}");
    let again = b.get("/dashboard/api-keys").await;
    again.assert_lacks(&key);
    again.assert_has(&format!("{}…", &key[..12]));
    let (status, _) = api.get("/v1/contacts").await;
    assert_eq!(status, 200);

    // A bad name is refused on the form.
    let refused = b
        .post(
            "/dashboard/api-keys",
            "/dashboard/api-keys",
            &[("name", "")],
        )
        .await;
    assert_eq!(refused.status, 422);
    refused.assert_has("name");

    // Revoke the new key from the page: it stops working.
    let listed = api.get("/v1/api-keys").await.1;
    let new_id = listed["data"][1]["id"].as_str().unwrap().to_owned();
    let revoked = b
        .post(
            "/dashboard/api-keys",
            &format!("/dashboard/api-keys/{new_id}/revoke"),
            &[],
        )
        .await;
    let page = b.follow(&revoked).await;
    page.assert_has("revoked");
    assert_eq!(
        api.get("/v1/api-keys").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn revoking_a_key_ends_the_dashboard_sessions_opened_with_it() {
    let server = helpers::server(|_| {}).await;
    let api = server.account("dash").await;
    let (_, second) = api.post("/v1/api-keys", json!({"name": "laptop"})).await;
    let second_key = second["key"].as_str().unwrap();
    let mut with_first = Browser::new(&server);
    assert_eq!(with_first.login(key(&api)).await.status, 303);
    let mut with_second = Browser::new(&server);
    assert_eq!(with_second.login(second_key).await.status, 303);
    assert_eq!(with_second.get("/dashboard/webhooks").await.status, 200);

    let (status, body) = api
        .delete(&format!("/v1/api-keys/{}", second["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200, "{body}");
    // At once: sessions are rows, deleted with the key.
    let page = with_second.get("/dashboard/webhooks").await;
    assert_eq!(page.status, 303);
    assert!(page.location().starts_with("/dashboard/login"));
    // The other key's session goes on.
    assert_eq!(with_first.get("/dashboard/webhooks").await.status, 200);

    // Revoking the session's own key from the page logs it out.
    let (_, third) = api.post("/v1/api-keys", json!({"name": "phone"})).await;
    let mut with_third = Browser::new(&server);
    assert_eq!(
        with_third
            .login(third["key"].as_str().unwrap())
            .await
            .status,
        303
    );
    let out = with_third
        .post(
            "/dashboard/api-keys",
            &format!(
                "/dashboard/api-keys/{}/revoke",
                third["id"].as_str().unwrap()
            ),
            &[],
        )
        .await;
    assert_eq!(out.status, 303);
    assert_eq!(out.location(), "/dashboard/login");
    assert_eq!(with_third.get("/dashboard/webhooks").await.status, 303);
}

#[tokio::test]
async fn a_client_that_fails_to_log_in_too_often_is_refused_for_a_while() {
    let server = TestServer::start().await;
    let api = server.account("acme").await;
    let mut b = Browser::new(&server);
    for n in 0..10 {
        let page = b.login("nfly_sk_guess").await;
        assert_eq!(page.status, 401, "attempt {n}");
    }
    // The eleventh is refused, even with the right key, and told when to
    // come back.
    for attempt in ["nfly_sk_guess", key(&api)] {
        let page = b.login(attempt).await;
        assert_eq!(page.status, 429, "{}", page.body);
        let wait: u64 = page.header("retry-after").parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        page.assert_has("Too many failed logins");
        assert!(b.cookie.is_none());
    }
    // The API is not the login form: the key still works there.
    let (status, _) = api.get("/v1/contacts").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn rate_limit_and_ordering_are_set_shown_and_checked_through_the_forms() {
    let receiver = Receiver::start().await;
    let (_server, api, mut b) = setup().await;
    create_through_form(&mut b, &receiver, "Paced").await;
    let id = id_of(&api.list_all("/v1/webhooks").await[0]).to_owned();
    let page_path = format!("/dashboard/webhooks/{id}");
    let edit = b.get(&format!("{page_path}/edit")).await;
    edit.assert_has(r#"name="rate_limit""#);
    edit.assert_has(r#"value="none" checked"#);

    let fields = |rate: &'static str| {
        vec![
            ("name", "Paced".to_owned()),
            ("url", receiver.url("/hook")),
            ("events", "*".to_owned()),
            ("rate_limit", rate.to_owned()),
            ("ordering", "per_resource".to_owned()),
        ]
    };
    // A rate that is not a whole number from 1 to 10000: refused next to
    // its field, with what was typed kept, and nothing changed.
    for bad in ["0", "2.5", "lots", "10001"] {
        let page = b.submit(&format!("{page_path}/edit"), &fields(bad)).await;
        assert_eq!(page.status, 422, "{bad}: {}", page.body);
        page.assert_has(r#"id="rate_limit-error""#);
        page.assert_has(&format!(r#"value="{bad}""#));
    }
    let w = get_ok(&api, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(
        (&w["rate_limit"], &w["ordering"]),
        (&Value::Null, &json!("none"))
    );

    let page = b.submit(&format!("{page_path}/edit"), &fields("25")).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let w = get_ok(&api, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(
        (&w["rate_limit"], &w["ordering"]),
        (&json!(25), &json!("per_resource"))
    );
    let shown = b.get(&page_path).await;
    shown.assert_has("25 per second");
    shown.assert_has("<code>per_resource</code>");
    // Emptied, the limit goes.
    let page = b.submit(&format!("{page_path}/edit"), &fields("")).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(
        get_ok(&api, &format!("/v1/webhooks/{id}")).await["rate_limit"],
        Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_are_set_masked_revealed_and_kept_through_the_forms() {
    let receiver = Receiver::start().await;
    let (_server, api, mut b) = setup().await;
    create_through_form(&mut b, &receiver, "Tenant").await;
    let id = id_of(&api.list_all("/v1/webhooks").await[0]).to_owned();
    let page_path = format!("/dashboard/webhooks/{id}");
    let edit_path = format!("{page_path}/edit");
    let submit = |headers: &str| {
        vec![
            ("name", "Tenant".to_owned()),
            ("url", receiver.url("/hook")),
            ("events", "*".to_owned()),
            ("headers", headers.to_owned()),
        ]
    };

    // A reserved name or a line without a colon: refused next to the field,
    // the text kept, nothing changed.
    for bad in ["X-Notifly-Attempt: 9", "Authorization Bearer x"] {
        let page = b.submit(&edit_path, &submit(bad)).await;
        assert_eq!(page.status, 422, "{bad}: {}", page.body);
        page.assert_has(r#"id="headers-error""#);
        page.assert_has(bad);
    }
    assert_eq!(
        get_ok(&api, &format!("/v1/webhooks/{id}")).await["headers"],
        json!({})
    );

    let token = "Bearer 0123456789abcdef";
    let page = b
        .submit(
            &edit_path,
            &submit(&format!("Authorization: {token}\nX-Tenant: t-1\n")),
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let shown = b.get(&page_path).await;
    shown.assert_has("Authorization: ••••••••cdef");
    shown.assert_lacks(token);
    let revealed = b.get(&format!("{page_path}?reveal_headers=1")).await;
    revealed.assert_has(&format!("Authorization: {token}"));
    revealed.assert_has("X-Tenant: t-1");

    // The edit form shows the values masked; saved as shown, they stay.
    let edit = b.get(&edit_path).await;
    edit.assert_has("Authorization: ••••••••cdef");
    edit.assert_lacks(token);
    let page = b
        .submit(
            &edit_path,
            &submit("Authorization: ••••••••cdef\nX-Tenant: t-2"),
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(
        get_ok(&api, &format!("/v1/webhooks/{id}/headers")).await["headers"],
        json!({"Authorization": token, "X-Tenant": "t-2"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_filter_is_set_shown_and_checked_through_the_forms() {
    let receiver = Receiver::start().await;
    let (_server, api, mut b) = setup().await;
    create_through_form(&mut b, &receiver, "Filtered").await;
    let id = id_of(&api.list_all("/v1/webhooks").await[0]).to_owned();
    let page_path = format!("/dashboard/webhooks/{id}");
    let edit_path = format!("{page_path}/edit");
    let submit = |filter: &str| {
        vec![
            ("name", "Filtered".to_owned()),
            ("url", receiver.url("/hook")),
            ("events", "*".to_owned()),
            ("filter", filter.to_owned()),
        ]
    };
    for (bad, why) in [
        ("{payload", "not valid JSON"),
        (r#"{"payload": {"id": {"$like": "x"}}}"#, "unknown operator"),
    ] {
        let page = b.submit(&edit_path, &submit(bad)).await;
        assert_eq!(page.status, 422, "{bad}: {}", page.body);
        page.assert_has(r#"id="filter-error""#);
        page.assert_has(why);
    }
    assert_eq!(
        get_ok(&api, &format!("/v1/webhooks/{id}")).await["filter"],
        Value::Null
    );
    let page = b
        .submit(
            &edit_path,
            &submit(r#"{"payload": {"conversation_id": "c-1"}}"#),
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(
        get_ok(&api, &format!("/v1/webhooks/{id}")).await["filter"],
        json!({"payload": {"conversation_id": "c-1"}})
    );
    b.get(&page_path).await.assert_has("conversation_id");
    b.get(&edit_path).await.assert_has("conversation_id");
    // Emptied, it goes.
    let page = b.submit(&edit_path, &submit("")).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(
        get_ok(&api, &format!("/v1/webhooks/{id}")).await["filter"],
        Value::Null
    );
}

#[tokio::test]
async fn operational_events_are_picked_in_the_form_and_shown_as_notices() {
    let receiver = Receiver::start().await;
    receiver.set("/gone", Behavior::Gone);
    let (_server, api, mut b) = setup().await;
    // Offered apart from "All resource events", and kept beside it.
    let form = b.get("/dashboard/webhooks/new").await;
    form.assert_has("Operational events");
    form.assert_has(r#"value="webhook.disabled""#);
    let page = b
        .submit(
            "/dashboard/webhooks",
            &[
                ("name", "Ops".to_owned()),
                ("url", receiver.url("/ops")),
                ("events", "*".to_owned()),
                ("events", "webhook.disabled".to_owned()),
            ],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let ops = api.list_all("/v1/webhooks").await[0].clone();
    assert_eq!(ops["events"], json!(["*", "webhook.disabled"]));
    let ops_page = format!("/dashboard/webhooks/{}", id_of(&ops));
    b.get(&ops_page)
        .await
        .assert_has("All resource events <code class=\"chip\">webhook.disabled</code>");

    // A webhook a 410 disables, and one whose delivery fails its three
    // attempts, show in the notices of the list and of their own pages,
    // not of the other webhook's.
    receiver.set("/down", Behavior::Status(500));
    let gone = webhook(&api, "Gone", &receiver.url("/gone"), &["*"]).await;
    let down = webhook(&api, "Down", &receiver.url("/down"), &["*"]).await;
    api.contact("gina").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let list = loop {
        let list = b.get("/dashboard/webhooks").await;
        if list.body.contains("Delivery exhausted") && list.body.contains("Disabled</span> <a") {
            break list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no notices: {}",
            list.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    list.assert_has(r#"class="card notices""#);
    list.assert_has("the endpoint answered 410 Gone");
    list.assert_has(&format!(
        r#"<a href="/dashboard/webhooks/{}">Gone</a>"#,
        gone.id
    ));
    let own = b.get(&format!("/dashboard/webhooks/{}", gone.id)).await;
    own.assert_has(r#"class="card notices""#);
    own.assert_lacks("Delivery exhausted");
    let own = b.get(&format!("/dashboard/webhooks/{}", down.id)).await;
    own.assert_has(r#"class="card notices""#);
    own.assert_has("a contact.created delivery failed all 3 attempts");
    own.assert_has("/dashboard/deliveries/");
    own.assert_lacks("410 Gone");
    b.get(&ops_page)
        .await
        .assert_lacks(r#"class="card notices""#);
}

#[tokio::test]
async fn a_replay_is_started_shown_with_its_progress_and_cancelled_from_the_page() {
    let receiver = Receiver::start().await;
    let (_server, api, mut b) = setup().await;
    for n in 0..5 {
        api.contact(&format!("c{n}")).await;
    }
    let hook = webhook(&api, "Late", &receiver.url("/late"), &["contact.created"]).await;
    let page_path = format!("/dashboard/webhooks/{}", hook.id);
    b.get(&page_path).await.assert_has("Replay events");
    let page = b
        .post(
            &page_path,
            &format!("{page_path}/replay"),
            &[("since", "3600")],
        )
        .await;
    assert_eq!(page.status, 303, "{}", page.body);
    let page = b.follow(&page).await;
    page.assert_has("Replaying 5 events since");
    receiver.wait_for_path("/late", 5, DEADLINE).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let page = b.get(&page_path).await;
        if page.body.contains(r#"<progress max="5" value="5""#)
            && page
                .body
                .contains(r#"<span class="badge ok">completed</span>"#)
        {
            page.assert_lacks("/cancel");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no completed replay: {}",
            page.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A bad time is refused with a message, and nothing is replayed.
    let page = b
        .post(
            &page_path,
            &format!("{page_path}/replay"),
            &[("since_utc", "yesterday")],
        )
        .await;
    b.follow(&page)
        .await
        .assert_has("Give the time as YYYY-MM-DD HH:MM, in UTC.");
    // Cancelling an ended replay says why not.
    let replay_id = b
        .get(&page_path)
        .await
        .body
        .split(r#"aria-label="Replay "#)
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap()
        .to_owned();
    let page = b
        .post(
            &page_path,
            &format!("{page_path}/replays/{replay_id}/cancel"),
            &[],
        )
        .await;
    b.follow(&page).await.assert_has("is completed already");
}

#[tokio::test]
async fn a_browser_at_the_root_is_sent_to_the_dashboard_and_api_clients_get_json() {
    let server = TestServer::start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let browser = http
        .get(server.url("/"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert!(browser.status().is_redirection(), "{}", browser.status());
    assert_eq!(browser.headers()[LOCATION], "/dashboard");
    let api = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(api.status(), 404);
    let body: Value = api.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("no such route")),
        "{body}"
    );
    // Only the root: another unknown page is the JSON 404 for anyone.
    let elsewhere = http
        .get(server.url("/nothing"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
}
