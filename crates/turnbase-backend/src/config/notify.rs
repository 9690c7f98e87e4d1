//! Notifications: the route worker's budget and pace, the inbox's
//! retention, webhooks, links in mail, and the turn reminders.

use std::time::Duration;

use turnbase_core::config::{
    Reader, VarSpec, parse_bool, parse_positive_duration, parse_u32_positive, parse_usize_positive,
};
use turnbase_core::var;
use turnbase_notify::NotifyConfig;

pub(super) const VARIABLES: &[VarSpec] = &[
    var!(
        "BACKEND_NOTIFICATION_MAX_ATTEMPTS",
        Some("8"),
        "Attempts of a notification route (email hand-over, webhook, push) before it becomes a dead letter."
    ),
    var!(
        "BACKEND_NOTIFICATION_RETRY_BASE",
        Some("10s"),
        "Wait after a route's first failed attempt; doubles per attempt, ±20% jitter."
    ),
    var!(
        "BACKEND_NOTIFICATION_RETRY_MAX",
        Some("1h"),
        "Longest wait between attempts of a route."
    ),
    var!(
        "BACKEND_NOTIFICATION_LEASE",
        Some("60s"),
        "How long a claimed route is reserved for its worker; after that another worker may take it."
    ),
    var!(
        "BACKEND_NOTIFICATION_WORKERS",
        Some("4"),
        "Route worker slots (each dispatches up to 64 routes at once)."
    ),
    var!(
        "BACKEND_NOTIFICATION_BATCH",
        Some("2000"),
        "Notifications the router turns into routes per transaction."
    ),
    var!(
        "BACKEND_NOTIFICATION_POLL_INTERVAL",
        Some("2s"),
        "How often idle notification workers look for work (new notifications wake them at once)."
    ),
    var!(
        "BACKEND_NOTIFICATION_RETENTION",
        Some("2160h"),
        "How long notifications stay in the inbox (with their routes and attempts)."
    ),
    var!(
        "BACKEND_NOTIFICATION_WEBHOOK_TIMEOUT",
        Some("10s"),
        "Deadline of one webhook request, connection to answer; a receiver slower than this counts as failed."
    ),
    var!(
        "BACKEND_WEBHOOK_ALLOW_PRIVATE",
        Some("false"),
        "Let webhooks target loopback, private and link-local addresses (tests, intranets); refused otherwise, at registration and at each request."
    ),
    var!(
        "BACKEND_PUBLIC_URL",
        Some("http://127.0.0.1:8090"),
        "Where people reach the API (the gateway); links in mail, such as unsubscribe links, start with it."
    ),
    var!(
        "BACKEND_NOTIFICATION_OPERATOR_WEBHOOK",
        None,
        "The operators' webhook (http or https): every admin notice is also posted there once, signed like people's webhooks with the secret shown at `GET /api/v1/admin/notifications/operator-webhook`."
    ),
    var!(
        "BACKEND_NOTIFICATION_REMINDER_INTERVAL",
        Some("30s"),
        "Longest the orders-due reminder job waits between looks at the running games' deadlines (clock changes wake it at once)."
    ),
];

/// The notification settings.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    pub service: NotifyConfig,
    pub reminder_interval: Duration,
}

pub(super) fn read(r: &mut Reader<'_>) -> NotifySettings {
    let service = NotifyConfig {
        max_attempts: r.get("BACKEND_NOTIFICATION_MAX_ATTEMPTS", parse_u32_positive),
        retry_base: r.get("BACKEND_NOTIFICATION_RETRY_BASE", parse_positive_duration),
        retry_max: r.get("BACKEND_NOTIFICATION_RETRY_MAX", parse_positive_duration),
        lease: r.get("BACKEND_NOTIFICATION_LEASE", parse_positive_duration),
        workers: r.get("BACKEND_NOTIFICATION_WORKERS", parse_usize_positive),
        batch: r.get("BACKEND_NOTIFICATION_BATCH", |t| {
            parse_usize_positive(t).map(|n| n.min(10_000) as i64)
        }),
        poll_interval: r.get(
            "BACKEND_NOTIFICATION_POLL_INTERVAL",
            parse_positive_duration,
        ),
        retention: r.get("BACKEND_NOTIFICATION_RETENTION", parse_positive_duration),
        webhook_timeout: r.get(
            "BACKEND_NOTIFICATION_WEBHOOK_TIMEOUT",
            parse_positive_duration,
        ),
        allow_private: r.get("BACKEND_WEBHOOK_ALLOW_PRIVATE", parse_bool),
        public_url: r.get("BACKEND_PUBLIC_URL", super::parse_http_url),
        notice_batch: 1_000,
        operator_webhook: r.optional(
            "BACKEND_NOTIFICATION_OPERATOR_WEBHOOK",
            super::parse_http_url,
        ),
    };
    if service.retry_max < service.retry_base {
        r.report(
            "BACKEND_NOTIFICATION_RETRY_MAX",
            format!(
                "must be at least BACKEND_NOTIFICATION_RETRY_BASE ({:?})",
                service.retry_base
            ),
        );
    }
    NotifySettings {
        service,
        reminder_interval: r.get(
            "BACKEND_NOTIFICATION_REMINDER_INTERVAL",
            parse_positive_duration,
        ),
    }
}
