//! Cross-origin requests from browsers: which origins may call, and the
//! layer that answers preflights and marks responses. The backend and the
//! gateway read the same kind of setting (`*_HTTP_CORS_ORIGINS`).

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The origins allowed to call from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers at all (same-origin clients and non-browsers only).
    None,
    /// Every origin (`*`).
    Any,
    /// These origins, e.g. `https://play.example.org`.
    List(Vec<String>),
}

impl CorsOrigins {
    pub fn is_enabled(&self) -> bool {
        *self != CorsOrigins::None
    }
}

/// Reads a comma-separated list of origins, or `*`.
pub fn parse_cors(text: &str) -> Result<CorsOrigins, String> {
    let origins = crate::config::parse_list(text)?;
    if origins.iter().any(|o| o == "*") {
        if origins.len() > 1 {
            return Err("`*` allows every origin and cannot be combined with a list".into());
        }
        return Ok(CorsOrigins::Any);
    }
    for origin in &origins {
        let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
            && HeaderValue::from_str(origin).is_ok()
            && !origin.ends_with('/');
        if !valid {
            return Err(format!(
                "{origin:?} is not an origin (expected e.g. https://play.example.org, no trailing slash)"
            ));
        }
    }
    Ok(CorsOrigins::List(origins))
}

/// The layer for `origins`: preflights answered, the API's methods and
/// headers allowed, `x-request-id` readable by scripts.
pub fn layer(origins: &CorsOrigins) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            http::header::AUTHORIZATION,
            http::header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([HeaderName::from_static("x-request-id")])
        .max_age(Duration::from_secs(3600));
    match origins {
        CorsOrigins::None => CorsLayer::new(),
        CorsOrigins::Any => layer.allow_origin(AllowOrigin::any()),
        CorsOrigins::List(list) => layer.allow_origin(AllowOrigin::list(
            list.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_read_and_checked() {
        assert_eq!(parse_cors("*"), Ok(CorsOrigins::Any));
        assert_eq!(
            parse_cors("https://a.example, http://localhost:3000"),
            Ok(CorsOrigins::List(vec![
                "https://a.example".into(),
                "http://localhost:3000".into()
            ]))
        );
        for bad in ["*, https://a.example", "a.example", "https://a.example/"] {
            assert!(parse_cors(bad).is_err(), "{bad}");
        }
        assert!(!CorsOrigins::None.is_enabled());
        assert!(CorsOrigins::Any.is_enabled());
    }
}
