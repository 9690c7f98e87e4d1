//! Accounts: sign-in, sessions, the guest reaper, geo, and the internal
//! secret gateways present.

use std::path::{Path, PathBuf};
use std::time::Duration;

use turnbase_core::config::{
    Reader, Secret, VarSpec, parse_duration, parse_positive_duration, parse_rate,
    parse_u32_positive,
};
use turnbase_core::var;

use super::Config;
use turnbase_core::config::parse_usize_positive;

/// Accounts, sessions, the reaper, geo and the internal secret.
pub(super) const VARIABLES: &[VarSpec] = &[
    var!(
        "BACKEND_INTERNAL_TOKEN",
        None,
        "Shared secret gateways send to `/api/v1/internal/*` and the push listener (at least 32 characters). Required (`turnbase up` makes one per start). Secret."
    ),
    var!(
        "BACKEND_ADMIN_EMAIL",
        None,
        "Address of the first admin: created (or promoted) at startup; signs in by code like anyone."
    ),
    var!(
        "BACKEND_LOGIN_CODE_TTL",
        Some("10m"),
        "How long a mailed sign-in code stays valid."
    ),
    var!(
        "BACKEND_LOGIN_CODE_TRIES",
        Some("5"),
        "Wrong codes allowed before a code is void."
    ),
    var!(
        "BACKEND_LOGIN_EMAIL_RATE",
        Some("5/15m"),
        "Sign-in codes mailed per address: `count/period`."
    ),
    var!(
        "BACKEND_LOGIN_IP_RATE",
        Some("60/1m"),
        "Sign-in requests (codes, verifications, guests, upgrades) per client address: `count/period`."
    ),
    var!(
        "BACKEND_SESSION_CACHE_CAPACITY",
        Some("100000"),
        "Sessions kept in the in-memory session cache."
    ),
    var!(
        "BACKEND_SESSION_LAST_SEEN_RESOLUTION",
        Some("5m"),
        "A session's last-seen time is written at most this often."
    ),
    var!(
        "BACKEND_GUEST_RETENTION",
        Some("720h"),
        "Guest accounts older than this holding no seat in any game are deleted."
    ),
    var!(
        "BACKEND_GUEST_REAP_INTERVAL",
        Some("1h"),
        "How often the guest reaper runs."
    ),
    var!(
        "BACKEND_GEOIP_DB",
        None,
        "MaxMind-format country database (e.g. GeoLite2-Country.mmdb); unset means countries are unknown."
    ),
    var!(
        "BACKEND_TRUSTED_PROXIES",
        None,
        "Comma-separated addresses or CIDR networks whose `X-Forwarded-For` is believed (e.g. the gateways)."
    ),
    var!(
        "BACKEND_ACCOUNTS_FLUSH_INTERVAL",
        Some("30s"),
        "How often sign-in counts per country and last-seen times are written (and at shutdown)."
    ),
];

/// Accounts, sessions, the reaper and geo.
#[derive(Debug, Clone)]
pub struct AccountsSettings {
    pub service: turnbase_accounts::AccountsConfig,
    pub internal_token: Secret<String>,
    pub geoip_db: Option<PathBuf>,
    pub trusted_proxies: turnbase_accounts::TrustedProxies,
    pub guest_retention: Duration,
    pub guest_reap_interval: Duration,
    pub flush_interval: Duration,
}

pub(super) fn read(r: &mut Reader<'_>) -> AccountsSettings {
    let internal_token = r
        .required("BACKEND_INTERNAL_TOKEN", parse_internal_token)
        .unwrap_or_else(|| Secret::new(String::new()));
    let service = turnbase_accounts::AccountsConfig {
        code_key: turnbase_accounts::CodeKey::derive(internal_token.expose()),
        code_ttl: r.get("BACKEND_LOGIN_CODE_TTL", parse_positive_duration),
        code_tries: r.get("BACKEND_LOGIN_CODE_TRIES", parse_u32_positive),
        email_rate: r.get("BACKEND_LOGIN_EMAIL_RATE", parse_rate),
        ip_rate: r.get("BACKEND_LOGIN_IP_RATE", parse_rate),
        admin_email: r.optional("BACKEND_ADMIN_EMAIL", |t| {
            turnbase_mail::Email::parse(t).map_err(|e| e.to_string())
        }),
        session_cache_capacity: r.get("BACKEND_SESSION_CACHE_CAPACITY", parse_usize_positive),
        last_seen_resolution: r.get("BACKEND_SESSION_LAST_SEEN_RESOLUTION", parse_duration),
    };
    AccountsSettings {
        service,
        internal_token,
        geoip_db: r.optional("BACKEND_GEOIP_DB", parse_geoip_db),
        trusted_proxies: r
            .optional(
                "BACKEND_TRUSTED_PROXIES",
                turnbase_accounts::TrustedProxies::parse,
            )
            .unwrap_or_default(),
        guest_retention: r.get("BACKEND_GUEST_RETENTION", parse_positive_duration),
        guest_reap_interval: r.get("BACKEND_GUEST_REAP_INTERVAL", parse_positive_duration),
        flush_interval: r.get("BACKEND_ACCOUNTS_FLUSH_INTERVAL", parse_positive_duration),
    }
}

/// Where `up` keeps the internal secret it made, in the data folder.
pub const INTERNAL_TOKEN_FILE: &str = "internal-token";

pub(super) fn read_internal_token_file(path: &Path) -> Option<Secret<String>> {
    turnbase_core::private_fs::tighten(path);
    let text = std::fs::read_to_string(path).ok()?;
    parse_internal_token(text.trim()).ok()
}

/// Keeps the secret `up` uses in its 0600 file (in a 0700 data folder),
/// when the configuration says where.
pub fn write_internal_token_file(config: &Config) -> std::io::Result<()> {
    let Some(path) = &config.internal_token_file else {
        return Ok(());
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        turnbase_core::private_fs::create_private_dir(dir)?;
    }
    let token = config.accounts.internal_token.expose();
    if read_internal_token_file(path).is_some_and(|t| t.expose() == token) {
        return Ok(());
    }
    turnbase_core::private_fs::write_private(path, format!("{token}\n").as_bytes())
}

fn parse_internal_token(text: &str) -> Result<Secret<String>, String> {
    // The value is secret, so it is not echoed back.
    if text.chars().count() < 32 {
        return Err("must be at least 32 characters (e.g. `openssl rand -hex 32`)".into());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(Secret::new(text.to_string()))
}

fn parse_geoip_db(text: &str) -> Result<PathBuf, String> {
    // Opened here too, so that a bad file stops the start with the
    // variable's name rather than later.
    let path = PathBuf::from(text);
    turnbase_accounts::GeoIp::open(&path)?;
    Ok(path)
}
