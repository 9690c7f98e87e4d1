//! The browser client: static files compiled into the binary and served
//! by the edge. The player's app is at `/`, the admin console at
//! `/admin/` (only where the edge forwards the admin API).
//!
//! Every script, style sheet and picture lives under
//! `/assets/<bundle>/`, where `<bundle>` is a hash of all of them: the
//! URLs change whenever any file does, so they are cached for a year and
//! never revalidated, while the two HTML shells (which name the bundle) are
//! revalidated on every load. The ES modules import each other by relative
//! paths, so the whole bundle moves together without a build step.
//!
//! Each file is gzipped once, when the gateway starts; clients that accept
//! gzip get those bytes. The HTML carries a strict Content-Security-Policy:
//! scripts, styles and connections only from this origin, nothing inline.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest as _, Sha256};

/// The files, as (path under the bundle, content type, bytes).
macro_rules! bundle {
    ($($name:literal => $kind:expr),* $(,)?) => {
        &[$(($name, $kind, include_bytes!(concat!("../web/", $name)) as &[u8])),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static FILES: &[(&str, &str, &[u8])] = bundle![
    "app.css" => "text/css; charset=utf-8",
    "app.js" => JS,
    "admin.js" => JS,
    "api.js" => JS,
    "live.js" => JS,
    "ui.js" => JS,
    "signin.js" => JS,
    "account.js" => JS,
    "lobby.js" => JS,
    "game.js" => JS,
    "conquest.js" => JS,
    "reversi.js" => JS,
    "notifications.js" => JS,
];

static INDEX: &str = include_str!("../web/index.html");

/// The policy sent with every page. `connect-src 'self'` covers the
/// WebSocket to this origin too.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One file, ready to send.
struct Asset {
    content_type: &'static str,
    plain: Bytes,
    gzip: Bytes,
}

/// The bundle: its id, the files, and the two shells.
pub struct Web {
    pub bundle: String,
    assets: HashMap<&'static str, Asset>,
    player_page: Asset,
    admin_page: Asset,
}

fn gzip(bytes: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .map(Bytes::from)
        .expect("gzip into memory cannot fail")
}

fn asset(content_type: &'static str, bytes: Bytes) -> Asset {
    Asset {
        content_type,
        gzip: gzip(&bytes),
        plain: bytes,
    }
}

impl Web {
    fn build() -> Web {
        let mut hash = Sha256::new();
        for (name, _, bytes) in FILES {
            hash.update(name.as_bytes());
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
        hash.update(INDEX.as_bytes());
        let bundle: String = hash.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let assets = FILES
            .iter()
            .map(|(name, kind, bytes)| (*name, asset(kind, Bytes::from_static(bytes))))
            .collect();
        let page = |app: &str, title: &str| {
            let html = INDEX
                .replace("{bundle}", &format!("/assets/{bundle}"))
                .replace("{app}", app)
                .replace("{title}", title);
            asset("text/html; charset=utf-8", Bytes::from(html))
        };
        Web {
            player_page: page("app.js", "Turnbase"),
            admin_page: page("admin.js", "Turnbase admin"),
            bundle,
            assets,
        }
    }

    /// The bundle, built on first use.
    pub fn get() -> Arc<Web> {
        static WEB: LazyLock<Arc<Web>> = LazyLock::new(|| Arc::new(Web::build()));
        WEB.clone()
    }

    /// The player's app shell.
    pub fn player_page(&self, request: &Request) -> Response {
        page(&self.player_page, request.headers())
    }

    /// The admin console's shell.
    pub fn admin_page(&self, request: &Request) -> Response {
        page(&self.admin_page, request.headers())
    }

    /// A file of the bundle; 404 for another bundle's URL (an old page
    /// asking after an upgrade reloads rather than mixing versions).
    pub fn asset(
        &self,
        Path((bundle, file)): Path<(String, String)>,
        headers: &HeaderMap,
    ) -> Response {
        match self.assets.get(file.as_str()) {
            Some(asset) if bundle == self.bundle => {
                let mut response = send(asset, headers);
                response.headers_mut().insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=31536000, immutable"),
                );
                response
            }
            _ => turnbase_core::http::error_response(
                StatusCode::NOT_FOUND,
                "not_found".to_string(),
                format!("no file {file} in bundle {bundle}"),
            ),
        }
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn send(asset: &Asset, headers: &HeaderMap) -> Response {
    let gzip = accepts_gzip(headers);
    let body = if gzip { &asset.gzip } else { &asset.plain };
    let mut response = Body::from(body.clone()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

fn page(asset: &Asset, headers: &HeaderMap) -> Response {
    let mut response = send(asset, headers);
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        let cases = [
            ("gzip, deflate, br", true),
            ("br;q=1.0, gzip;q=0.8", true),
            ("gzip;q=0", false),
            ("identity", false),
            ("*", true),
            ("", false),
        ];
        for (value, want) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            assert_eq!(accepts_gzip(&headers), want, "{value}");
        }
    }

    #[test]
    fn every_file_is_in_the_bundle_and_the_shells_name_it() {
        let web = Web::build();
        assert_eq!(web.assets.len(), FILES.len());
        let html = std::str::from_utf8(&web.player_page.plain).expect("utf-8");
        assert!(
            html.contains(&format!("/assets/{}/app.js", web.bundle)),
            "{html}"
        );
        assert!(!html.contains('{'), "every placeholder is filled: {html}");
        let admin = std::str::from_utf8(&web.admin_page.plain).expect("utf-8");
        assert!(admin.contains(&format!("/assets/{}/admin.js", web.bundle)));
        // No inline script or style: the policy would block it.
        for shell in [html, admin] {
            assert!(
                !shell.contains("<script>") && !shell.contains("style="),
                "{shell}"
            );
        }
        for (name, _, bytes) in FILES {
            let text = String::from_utf8_lossy(bytes);
            // Static imports (`import … from './x.js'`) and dynamic ones
            // (`import('./x.js')`).
            let statics = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("import "))
                .filter_map(|l| l.split(['"', '\'']).nth(1));
            let dynamics = text
                .split("import('")
                .skip(1)
                .filter_map(|rest| rest.split('\'').next());
            for import in statics.chain(dynamics) {
                let target = import.strip_prefix("./").unwrap_or(import);
                assert!(
                    web.assets.contains_key(target),
                    "{name} imports {import}, which the bundle does not hold"
                );
            }
        }
    }
}
