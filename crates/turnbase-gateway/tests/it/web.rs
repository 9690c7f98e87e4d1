//! The browser client as the edge serves it (shells, the hashed bundle,
//! the policy headers, the console only where admin calls pass), and the
//! client's API module held to the backend's OpenAPI document.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::edge::Stack;

const API_JS: &str = include_str!("../../web/api.js");

/// `name: ['METHOD', '/path'],` lines of the object literal `table` in
/// api.js.
fn table(table: &str) -> Vec<(String, String, String)> {
    let start = API_JS
        .find(&format!("export const {table} = {{"))
        .unwrap_or_else(|| panic!("api.js has {table}"));
    let body = &API_JS[start..];
    let body = &body[..body.find("\n};").expect("the table ends")];
    body.lines()
        .filter_map(|line| {
            let (name, rest) = line.trim().split_once(": [")?;
            let mut quoted = rest.split('\'').skip(1).step_by(2);
            Some((
                name.to_string(),
                quoted.next()?.to_string(),
                quoted.next()?.to_string(),
            ))
        })
        .collect()
}

/// `name: 'required … | optional …',` lines of BODIES.
fn bodies() -> Vec<(String, BTreeSet<String>, BTreeSet<String>)> {
    let start = API_JS.find("export const BODIES = {").expect("BODIES");
    let body = &API_JS[start..];
    let body = &body[..body.find("\n};").expect("the table ends")];
    body.lines()
        .filter_map(|line| {
            let (name, rest) = line.trim().split_once(": '")?;
            let spec = rest.split('\'').next()?;
            let (required, optional) = spec.split_once('|')?;
            let set = |s: &str| s.split_whitespace().map(str::to_string).collect();
            Some((name.to_string(), set(required), set(optional)))
        })
        .collect()
}

fn openapi() -> Value {
    serde_json::to_value(turnbase_backend::api::openapi("test")).expect("the document is JSON")
}

fn schema<'a>(doc: &'a Value, reference: &'a Value) -> &'a Value {
    match reference["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().expect("a name")],
        None => reference,
    }
}

#[test]
fn every_route_of_the_client_is_in_the_openapi_document() {
    let doc = openapi();
    let routes = table("ROUTES");
    assert!(routes.len() > 40, "the table was read: {routes:?}");
    let edge: Vec<_> = table("EDGE_ROUTES");
    assert_eq!(
        edge,
        [(
            "ticket".to_string(),
            "POST".to_string(),
            "/api/v1/user/events/ticket".to_string()
        )],
        "the gateway's own routes"
    );
    for (name, method, path) in routes {
        let operation = &doc["paths"][&path][method.to_lowercase()];
        assert!(
            operation.is_object(),
            "api.js route {name} ({method} {path}) is not in the backend's OpenAPI document"
        );
    }
}

#[test]
fn every_request_body_of_the_client_matches_its_schema() {
    let doc = openapi();
    let routes: std::collections::HashMap<_, _> = table("ROUTES")
        .into_iter()
        .map(|(name, method, path)| (name, (method, path)))
        .collect();
    let bodies = bodies();
    assert!(bodies.len() > 15, "BODIES was read: {bodies:?}");
    let listed: BTreeSet<&str> = bodies.iter().map(|(n, _, _)| n.as_str()).collect();
    for (name, required, optional) in &bodies {
        let (method, path) = routes
            .get(name)
            .unwrap_or_else(|| panic!("BODIES names {name}, which ROUTES lacks"));
        let body = &doc["paths"][path][method.to_lowercase()]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert!(
            body.is_object(),
            "{name}: {method} {path} takes no JSON body"
        );
        let body = schema(&doc, body);
        let fields: BTreeSet<String> = body["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        let mine: BTreeSet<String> = required.union(optional).cloned().collect();
        assert_eq!(mine, fields, "{name}: the fields api.js knows");
        let needed: BTreeSet<String> = body["required"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(required, &needed, "{name}: the fields the API requires");
    }
    // And a route that takes a body is listed.
    for (name, (method, path)) in &routes {
        let takes =
            doc["paths"][path][method.to_lowercase()]["requestBody"]["content"]["application/json"]
                ["schema"]
                .is_object();
        assert_eq!(
            takes,
            listed.contains(name.as_str()),
            "{name}: BODIES lists exactly the routes with a JSON body"
        );
    }
}

async fn get(s: &Stack, path: &str, gzip: bool) -> reqwest::Response {
    let mut request = s.client.get(format!("{}{path}", s.edge));
    if gzip {
        request = request.header("accept-encoding", "gzip");
    }
    request.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_served_with_its_policy_and_a_hashed_bundle() {
    let s = Stack::start(&[]).await;
    let page = get(&s, "/", false).await;
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers["cache-control"], "no-cache");
    let csp = headers["content-security-policy"].to_str().expect("text");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let html = page.text().await.expect("html");
    let at = html.find("/assets/").expect("the shell names the bundle");
    let bundle = html[at + 8..]
        .split('/')
        .next()
        .expect("bundle")
        .to_string();
    assert_eq!(bundle.len(), 12, "{html}");

    // Every file: immutable, gzipped when asked, its own type.
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("app.css", "text/css"),
    ] {
        let r = get(&s, &format!("/assets/{bundle}/{file}"), true).await;
        assert_eq!(r.status(), StatusCode::OK, "{file}");
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(r.headers()["content-encoding"], "gzip", "{file}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .expect("text")
                .starts_with(kind),
            "{file}"
        );
        let plain = get(&s, &format!("/assets/{bundle}/{file}"), false).await;
        assert!(plain.headers().get("content-encoding").is_none());
        let plain = plain.bytes().await.expect("body");
        let zipped = r.bytes().await.expect("body");
        assert!(zipped.len() < plain.len(), "{file} is smaller gzipped");
    }
    // Another bundle's URL, an unknown file, a path outside the bundle.
    for path in [
        "/assets/000000000000/app.js".to_string(),
        format!("/assets/{bundle}/nope.js"),
        format!("/assets/{bundle}/../Cargo.toml"),
    ] {
        let r = get(&s, &path, false).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = r.json().await.expect("a JSON error");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    // The console is not served where admin calls do not pass.
    let console = get(&s, "/admin/", false).await;
    assert_eq!(console.status(), StatusCode::NOT_FOUND);
    let console = get(&s, "/admin", false).await;
    assert_eq!(console.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_address_without_a_slash_is_redirected() {
    let s = Stack::start(&[("GATEWAY_EXPOSE_ADMIN", "true")]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = client
        .get(format!("{}/admin", s.edge))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()["location"], "/admin/");
    s.stop().await;
}
