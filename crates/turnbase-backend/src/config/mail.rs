//! Mail: where it goes, who it is from, and the worker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use turnbase_core::config::{
    self, Reader, Secret, VarSpec, parse_positive_duration, parse_string, parse_u32_positive,
};
use turnbase_core::var;

use turnbase_core::config::parse_usize_positive;

/// Mail delivery and the mail worker.
pub(super) const VARIABLES: &[VarSpec] = &[
    var!(
        "BACKEND_MAIL_DELIVERY",
        None,
        "`smtp` or `file` (one `.eml` per mail in `BACKEND_MAIL_DIR`). Unset: `smtp` when `BACKEND_SMTP_URL` is set; `turnbase up` falls back to `file`, `turnbase backend` refuses to start."
    ),
    var!(
        "BACKEND_SMTP_URL",
        None,
        "SMTP relay: `smtp://host:25`, `smtps://user:pass@host:465`, or `smtp://user:pass@host:587?tls=required` for STARTTLS. Secret."
    ),
    var!(
        "BACKEND_SMTP_CA_FILE",
        None,
        "PEM file of certificates to trust for the relay besides the public roots (a private CA)."
    ),
    var!(
        "BACKEND_SMTP_TIMEOUT",
        Some("30s"),
        "Timeout of each SMTP step; a whole send may take three times this."
    ),
    var!(
        "BACKEND_MAIL_FROM",
        Some("Turnbase <noreply@turnbase.localhost>"),
        "Sender of every mail; its domain also names the Message-IDs."
    ),
    var!(
        "BACKEND_MAIL_DIR",
        None,
        "Folder for `file` delivery; unset means `mail` in the data folder."
    ),
    var!(
        "BACKEND_MAIL_WORKERS",
        Some("4"),
        "Mails sent at once (worker slots, and SMTP connections pooled)."
    ),
    var!(
        "BACKEND_MAIL_LEASE",
        Some("5m"),
        "How long a claimed mail is reserved for its worker; after that another worker may take it."
    ),
    var!(
        "BACKEND_MAIL_MAX_ATTEMPTS",
        Some("10"),
        "Attempts before a transiently failing mail is given up."
    ),
    var!(
        "BACKEND_MAIL_RETRY_BASE",
        Some("30s"),
        "Wait after the first failed attempt; doubles per attempt, ±20% jitter."
    ),
    var!(
        "BACKEND_MAIL_RETRY_MAX",
        Some("1h"),
        "Longest wait between attempts."
    ),
    var!(
        "BACKEND_MAIL_POLL_INTERVAL",
        Some("1s"),
        "How often idle workers look for due mail (new mail wakes them at once)."
    ),
    var!(
        "BACKEND_MAIL_CLAIM_BATCH",
        Some("32"),
        "Mails a worker slot claims at a time; their attempts are recorded together."
    ),
    var!(
        "BACKEND_MAIL_RETENTION",
        Some("720h"),
        "How long sent and failed mail is kept (with its attempts, for the admin API) before it is deleted; an idempotency key can be reused after that."
    ),
    var!(
        "BACKEND_MAIL_SECRET_RETENTION",
        Some("1h"),
        "How long a sent (or failed) mail that carries a secret, such as a sign-in code, keeps its body; then the body is erased and the delivery record stays for `BACKEND_MAIL_RETENTION`."
    ),
];

/// Where mail goes.
#[derive(Debug, Clone)]
pub enum MailDelivery {
    Smtp {
        url: Secret<String>,
        timeout: Duration,
        /// PEM certificates trusted besides the public roots.
        extra_roots: Option<Vec<u8>>,
    },
    Folder(PathBuf),
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    pub delivery: MailDelivery,
    pub from: turnbase_mail::Mailbox,
    pub worker: turnbase_mail::WorkerConfig,
}

pub(super) fn read(r: &mut Reader<'_>, data_dir: &Path) -> MailConfig {
    let url = r.optional("BACKEND_SMTP_URL", parse_smtp_url);
    let timeout = r.get("BACKEND_SMTP_TIMEOUT", parse_positive_duration);
    let choice = r.optional("BACKEND_MAIL_DELIVERY", |t| {
        config::parse_choice(t, &[("smtp", true), ("file", false)])
    });
    let dir = r
        .optional("BACKEND_MAIL_DIR", parse_string)
        .map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join("mail"));
    let delivery = match (choice, url) {
        (Some(false), Some(_)) => {
            r.report(
                "BACKEND_MAIL_DELIVERY",
                "is file, but BACKEND_SMTP_URL is set too; choose one".into(),
            );
            MailDelivery::Folder(dir)
        }
        (Some(false), None) => MailDelivery::Folder(dir),
        (_, Some(url)) => MailDelivery::Smtp {
            url,
            timeout,
            extra_roots: r.optional("BACKEND_SMTP_CA_FILE", parse_pem_file),
        },
        (_, None) => {
            if !r.has_problem("BACKEND_SMTP_URL") && !r.has_problem("BACKEND_MAIL_DELIVERY") {
                r.report(
                    "BACKEND_SMTP_URL",
                    "is required to send mail; set it, or set BACKEND_MAIL_DELIVERY=file to write mail to a folder".into(),
                );
            }
            MailDelivery::Folder(dir)
        }
    };
    let from = r.get("BACKEND_MAIL_FROM", parse_mailbox);
    let retry_base = r.get("BACKEND_MAIL_RETRY_BASE", parse_positive_duration);
    let retry_max = r.get("BACKEND_MAIL_RETRY_MAX", parse_positive_duration);
    if retry_base > retry_max {
        r.report(
            "BACKEND_MAIL_RETRY_BASE",
            "must not be longer than BACKEND_MAIL_RETRY_MAX".into(),
        );
    }
    let worker = turnbase_mail::WorkerConfig {
        lease: r.get("BACKEND_MAIL_LEASE", parse_positive_duration),
        max_attempts: r.get("BACKEND_MAIL_MAX_ATTEMPTS", parse_u32_positive),
        retry_base,
        retry_max,
        concurrency: r.get("BACKEND_MAIL_WORKERS", parse_usize_positive),
        poll_interval: r.get("BACKEND_MAIL_POLL_INTERVAL", parse_positive_duration),
        claim_batch: r.get("BACKEND_MAIL_CLAIM_BATCH", parse_usize_positive),
        retention: r.get("BACKEND_MAIL_RETENTION", parse_positive_duration),
        secret_retention: r.get("BACKEND_MAIL_SECRET_RETENTION", parse_positive_duration),
    };
    MailConfig {
        delivery,
        from,
        worker,
    }
}

fn parse_pem_file(text: &str) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(text).map_err(|e| format!("cannot read {text:?}: {e}"))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(format!("{text:?} holds no PEM certificate"));
    }
    Ok(pem)
}

fn parse_smtp_url(text: &str) -> Result<Secret<String>, String> {
    // The value may hold a password, so it is not echoed back (the reasons
    // `check_smtp_url` gives never quote it).
    match turnbase_mail::smtp::check_smtp_url(text) {
        Ok(()) => Ok(Secret::new(text.to_string())),
        Err(reason) => Err(format!(
            "{reason}; expected smtp://host:port, smtps://user:password@host:port or smtp://…?tls=required"
        )),
    }
}

fn parse_mailbox(text: &str) -> Result<turnbase_mail::Mailbox, String> {
    text.parse().map_err(|e| {
        format!("{text:?} is not a mailbox like `Turnbase <noreply@example.org>` ({e})")
    })
}
