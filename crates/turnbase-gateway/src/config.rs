//! The gateway's configuration: every `GATEWAY_*` variable ([`VARIABLES`],
//! mirrored by the README table). So far only the push client's.

use std::path::Path;
use std::time::Duration;

use turnbase_core::config::{
    ConfigError, Reader, Source, VarSpec, parse_positive_duration, parse_string,
};

pub const PREFIX: &str = "GATEWAY_";

/// Every gateway variable; the README table is checked against it.
pub const VARIABLES: &[VarSpec] = &[
    VarSpec {
        name: "GATEWAY_GRPC_PUSH_URL",
        default: Some("http://127.0.0.1:8081"),
        help: "The backend's push listener (`BACKEND_GRPC_PUSH_ADDR`) as an `http://` URL.",
    },
    VarSpec {
        name: "GATEWAY_CLIENT_ID",
        default: None,
        help: "This gateway's id on the push stream; unset means the host name plus a random suffix. Two gateways must not share one.",
    },
    VarSpec {
        name: "GATEWAY_PUSH_RECONNECT_BASE_BACKOFF",
        default: Some("500ms"),
        help: "First wait before reconnecting to the push stream; doubles per failure, ±20% jitter.",
    },
    VarSpec {
        name: "GATEWAY_PUSH_RECONNECT_MAX_BACKOFF",
        default: Some("30s"),
        help: "Longest wait between push reconnects.",
    },
];

#[derive(Debug, Clone)]
pub struct PushClientConfig {
    pub url: String,
    pub client_id: String,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl PushClientConfig {
    pub fn load(
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let source = Source::load(PREFIX, VARIABLES, env, file);
        let mut r = Reader::new(&source, VARIABLES);
        let url = r.get("GATEWAY_GRPC_PUSH_URL", parse_push_url);
        let client_id = r
            .optional("GATEWAY_CLIENT_ID", parse_client_id)
            .unwrap_or_else(default_client_id);
        let base_backoff = r.get(
            "GATEWAY_PUSH_RECONNECT_BASE_BACKOFF",
            parse_positive_duration,
        );
        let max_backoff = r.get(
            "GATEWAY_PUSH_RECONNECT_MAX_BACKOFF",
            parse_positive_duration,
        );
        if base_backoff > max_backoff
            && !r.has_problem("GATEWAY_PUSH_RECONNECT_BASE_BACKOFF")
            && !r.has_problem("GATEWAY_PUSH_RECONNECT_MAX_BACKOFF")
        {
            r.report(
                "GATEWAY_PUSH_RECONNECT_BASE_BACKOFF",
                "must not be longer than GATEWAY_PUSH_RECONNECT_MAX_BACKOFF".into(),
            );
        }
        r.finish()?;
        Ok(Self {
            url,
            client_id,
            base_backoff,
            max_backoff,
        })
    }
}

/// An `http://host:port` URL (TLS to the backend is not supported yet).
pub fn parse_push_url(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| format!("{text:?} is not an http:// URL"))?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains(char::is_whitespace) {
        return Err(format!("{text:?} is not an http://host:port URL"));
    }
    Ok(format!("http://{authority}"))
}

fn parse_client_id(text: &str) -> Result<String, String> {
    if text.len() > 256 || text.chars().any(char::is_control) {
        return Err("must be at most 256 printable characters".into());
    }
    parse_string(text)
}

/// The host name plus a random suffix, so that two gateways on one host
/// (or a restarted one racing its predecessor) do not replace each other.
pub fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// The README's configuration table for the gateway.
pub fn markdown_table() -> String {
    turnbase_core::config::markdown_table(VARIABLES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<PushClientConfig, ConfigError> {
        PushClientConfig::load(
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            None,
        )
    }

    #[test]
    fn defaults() {
        let c = load(&[]).expect("defaults are valid");
        assert_eq!(c.url, "http://127.0.0.1:8081");
        assert_eq!(c.base_backoff, Duration::from_millis(500));
        assert_eq!(c.max_backoff, Duration::from_secs(30));
        let (host, suffix) = c.client_id.rsplit_once('-').expect("host-suffix");
        assert!(!host.is_empty());
        assert_eq!(suffix.len(), 8);
        assert_ne!(
            c.client_id,
            load(&[]).expect("valid").client_id,
            "random suffix"
        );
    }

    #[test]
    fn invalid_values_name_their_variable() {
        type Env<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Env<'_>, &str, &str)] = &[
            (
                &[("GATEWAY_GRPC_PUSH_URL", "127.0.0.1:8081")],
                "GATEWAY_GRPC_PUSH_URL",
                "not an http://",
            ),
            (
                &[("GATEWAY_GRPC_PUSH_URL", "https://backend:8081")],
                "GATEWAY_GRPC_PUSH_URL",
                "not an http://",
            ),
            (
                &[("GATEWAY_GRPC_PUSH_URL", "http://a/b")],
                "GATEWAY_GRPC_PUSH_URL",
                "host:port",
            ),
            (
                &[("GATEWAY_PUSH_RECONNECT_BASE_BACKOFF", "0s")],
                "GATEWAY_PUSH_RECONNECT_BASE_BACKOFF",
                "greater than zero",
            ),
            (
                &[("GATEWAY_PUSH_RECONNECT_MAX_BACKOFF", "soon")],
                "GATEWAY_PUSH_RECONNECT_MAX_BACKOFF",
                "not a duration",
            ),
            (
                &[
                    ("GATEWAY_PUSH_RECONNECT_BASE_BACKOFF", "1m"),
                    ("GATEWAY_PUSH_RECONNECT_MAX_BACKOFF", "30s"),
                ],
                "GATEWAY_PUSH_RECONNECT_BASE_BACKOFF",
                "must not be longer",
            ),
            (
                &[("GATEWAY_CLIENT_ID", "a\u{7}b")],
                "GATEWAY_CLIENT_ID",
                "printable",
            ),
        ];
        for (env, name, expected) in cases {
            let err = load(env).expect_err("refused");
            assert_eq!(err.problems.len(), 1, "{env:?}: {err}");
            assert_eq!(err.problems[0].subject, *name, "{env:?}: {err}");
            assert!(err.problems[0].message.contains(expected), "{env:?}: {err}");
        }
    }

    #[test]
    fn readme_table_matches_the_variable_list() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
                .expect("README.md at the repository root");
        let begin = "<!-- gateway-config:begin -->\n";
        let start = readme
            .find(begin)
            .expect("README has the gateway-config markers")
            + begin.len();
        let stop = readme[start..]
            .find("<!-- gateway-config:end -->")
            .expect("end marker")
            + start;
        let expected = markdown_table();
        assert!(
            readme[start..stop] == expected,
            "the README's gateway configuration table differs from VARIABLES; \
             put this between the markers:\n{expected}"
        );
    }
}
