//! Turnbase notifications.
//!
//! Domain changes write notices through the store in their own
//! transactions (`turnbase_store::notify`); from there this crate takes
//! over. The router ([`worker`]) reads each new notification with its
//! recipient's preferences and writes one route per channel (push at
//! once; email and webhook held by quiet hours or gathered into a daily
//! digest), publishing the push routes itself just before that commit. The route worker claims
//! due routes through the store's leased queue, dispatches (email through
//! the mail outbox, webhooks signed over HTTP), records every attempt and
//! leaves a route `failed` — a dead letter — after its attempt budget.
//! [`NotifyService`] is what people and admins do: the inbox,
//! preferences, unsubscribe links, dead letters and admin notices.

pub mod email;
pub mod keys;
pub mod prefs;
pub mod webhook;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge};
use serde_json::{Value, json};
use tokio::sync::Notify;
use turnbase_core::worker::{Clock, system_clock};
use turnbase_push::{ClientEventInput, JsonPayload, PushService};
use turnbase_store::accounts::AuditEntry;
use turnbase_store::notify::{
    Audience, Kind, NewNotice, NotificationRow, PreferencesRow, RouteAttemptRecord, RouteFilter,
    RouteRecord,
};
use turnbase_store::{Database, StoreError};
use uuid::Uuid;

pub use keys::Keys;
pub use prefs::{Preferences, PreferencesDoc};

#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Attempts of a route before it is a dead letter.
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a claimed route is held by its worker.
    pub lease: Duration,
    /// Route worker slots.
    pub workers: usize,
    /// Notifications routed, or routes claimed, per step.
    pub batch: i64,
    pub poll_interval: Duration,
    /// How long notifications stay in the inbox.
    pub retention: Duration,
    pub webhook_timeout: Duration,
    /// Webhooks may target loopback and private ranges (tests, intranets).
    pub allow_private: bool,
    /// Where people reach the API (links in mail start with it).
    pub public_url: String,
    /// Accounts one transaction of an admin notice to everyone writes.
    pub notice_batch: i64,
    /// The operator's webhook: every admin notice is also posted there
    /// once (signed with [`Keys::operator_secret`]).
    pub operator_webhook: Option<String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            max_attempts: 8,
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
            lease: Duration::from_secs(60),
            workers: 4,
            batch: 2_000,
            poll_interval: Duration::from_secs(2),
            retention: Duration::from_secs(90 * 86_400),
            webhook_timeout: Duration::from_secs(10),
            allow_private: false,
            public_url: "http://127.0.0.1:8080".into(),
            notice_batch: 1_000,
            operator_webhook: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0}")]
    NotFound(String),
    /// Problems by field.
    #[error("invalid preferences")]
    Invalid(Vec<(String, String)>),
    #[error("the unsubscribe link is {0}")]
    BadLink(keys::LinkError),
    #[error("the unsubscribe link was already used")]
    LinkUsed,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

pub type NotifyResult<T> = Result<T, NotifyError>;

/// Preferences as shown to their owner.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PreferencesView {
    pub channels: std::collections::BTreeMap<&'static str, Vec<&'static str>>,
    pub time_zone: String,
    pub quiet_hours: Option<prefs::QuietDoc>,
    pub digest: bool,
    pub webhook: Option<WebhookView>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct WebhookView {
    pub url: String,
    /// The key the signature header is made with.
    pub secret: String,
}

/// A preferences change; absent fields stay as they are.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencesChange {
    pub channels: Option<std::collections::BTreeMap<String, Vec<String>>>,
    pub time_zone: Option<String>,
    /// `null` clears quiet hours.
    #[serde(default, deserialize_with = "present")]
    pub quiet_hours: Option<Option<prefs::QuietDoc>>,
    pub digest: Option<bool>,
    /// `null` removes the webhook; a new URL gets a new secret.
    #[serde(default, deserialize_with = "present")]
    pub webhook_url: Option<Option<String>>,
}

fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Ok(Some(Option::deserialize(d)?))
}

use serde::Deserialize as _;

/// Who an admin notice goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeTarget {
    One(Uuid),
    Everyone,
}

pub(crate) struct Metrics {
    pub routes: Counter<u64>,
    pub dead: Counter<u64>,
    pub dispatch: Histogram<f64>,
    _depth: ObservableGauge<i64>,
}

/// Routes waiting per channel, as upkeep last counted them.
pub(crate) type Depths = Arc<std::sync::Mutex<Vec<(String, i64)>>>;

impl Metrics {
    fn new(meter: &Meter, depths: Depths) -> Metrics {
        Metrics {
            _depth: meter
                .i64_observable_gauge("notification_queue_depth")
                .with_description(
                    "Notification routes waiting (pending or being dispatched), by channel",
                )
                .with_callback(move |o| {
                    if let Ok(d) = depths.lock() {
                        for channel in ["push", "email", "webhook"] {
                            let n = d.iter().find(|(c, _)| c == channel).map_or(0, |(_, n)| *n);
                            o.observe(n, &[channel_attr(channel)]);
                        }
                    }
                })
                .build(),
            routes: meter
                .u64_counter("notification_routes_total")
                .with_description("Notification route attempts by channel and outcome")
                .build(),
            dead: meter
                .u64_counter("notification_dead_letters_total")
                .with_description("Notification routes that failed for good, by channel")
                .build(),
            dispatch: meter
                .f64_histogram("notification_dispatch_duration_seconds")
                .with_description("Time to dispatch one notification route, by channel")
                .with_unit("s")
                .build(),
        }
    }
}

pub(crate) struct Inner {
    pub db: Database,
    pub push: PushService,
    pub mail_wake: Arc<Notify>,
    pub config: NotifyConfig,
    pub keys: Keys,
    pub clock: Clock,
    /// Wakes the router (new notifications).
    pub wake: Arc<Notify>,
    /// Wakes the route worker (routes due now).
    pub routes_wake: Arc<Notify>,
    pub webhooks: webhook::WebhookSender,
    pub metrics: Metrics,
    pub depths: Depths,
}

#[derive(Clone)]
pub struct NotifyService {
    pub(crate) inner: Arc<Inner>,
}

impl NotifyService {
    pub fn new(
        db: Database,
        push: PushService,
        mail_wake: Arc<Notify>,
        config: NotifyConfig,
        keys: Keys,
        meter: &Meter,
    ) -> NotifyService {
        let webhooks = webhook::WebhookSender::new(config.webhook_timeout, config.allow_private);
        let depths = Depths::default();
        NotifyService {
            inner: Arc::new(Inner {
                db,
                push,
                mail_wake,
                config,
                keys,
                clock: system_clock(),
                wake: Arc::new(Notify::new()),
                routes_wake: Arc::new(Notify::new()),
                webhooks,
                metrics: Metrics::new(meter, depths.clone()),
                depths,
            }),
        }
    }

    /// The same service reading time from `clock` (build it before
    /// cloning).
    pub fn with_clock(mut self, clock: Clock) -> NotifyService {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.clock = clock;
        }
        self
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.inner.clock)()
    }

    pub fn config(&self) -> &NotifyConfig {
        &self.inner.config
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The operator's webhook and its signing secret, when configured.
    pub fn operator_webhook(&self) -> Option<WebhookView> {
        self.inner
            .config
            .operator_webhook
            .as_ref()
            .map(|url| WebhookView {
                url: url.clone(),
                secret: self.inner.keys.operator_secret(),
            })
    }

    /// Tells the router that notifications were written.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The wake handle domains hold (they only need to nudge the router).
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    // ---- the inbox -----------------------------------------------------

    pub async fn inbox(
        &self,
        account: Uuid,
        before: Option<Uuid>,
        unread_only: bool,
        limit: i64,
    ) -> NotifyResult<(Vec<NotificationRow>, i64)> {
        let store = self.inner.db.notify();
        let items = store
            .inbox(account, before, unread_only, limit.clamp(1, 200))
            .await?;
        let unread = store.unread_count(account).await?;
        Ok((items, unread))
    }

    pub async fn unread(&self, account: Uuid) -> NotifyResult<i64> {
        Ok(self.inner.db.notify().unread_count(account).await?)
    }

    pub async fn mark_read(&self, account: Uuid, id: Uuid) -> NotifyResult<i64> {
        if !self
            .inner
            .db
            .notify()
            .mark_read(account, id, self.now())
            .await?
        {
            return Err(NotifyError::NotFound(format!("no notification {id}")));
        }
        self.tell_unread(account).await
    }

    pub async fn mark_all_read(&self, account: Uuid) -> NotifyResult<i64> {
        self.inner
            .db
            .notify()
            .mark_all_read(account, self.now())
            .await?;
        self.tell_unread(account).await
    }

    /// Pushes the account's unread count (best effort) and returns it.
    async fn tell_unread(&self, account: Uuid) -> NotifyResult<i64> {
        let unread = self.unread(account).await?;
        publish(
            &self.inner.push,
            account,
            "notifications.unread",
            &json!({ "unread": unread }),
            Uuid::now_v7(),
        );
        Ok(unread)
    }

    // ---- preferences ---------------------------------------------------

    pub async fn preferences(&self, account: Uuid) -> NotifyResult<PreferencesView> {
        let row = self.inner.db.notify().preferences(account).await?;
        Ok(self.view(account, row.as_ref()))
    }

    fn view(&self, account: Uuid, row: Option<&PreferencesRow>) -> PreferencesView {
        let p = Preferences::from_stored(row.map(|r| r.settings.as_str()));
        let doc = p.doc();
        PreferencesView {
            channels: p.effective(),
            time_zone: p.time_zone.name().to_string(),
            quiet_hours: doc.quiet_hours,
            digest: p.digest,
            webhook: row.and_then(|r| match (&r.webhook_url, &r.webhook_salt) {
                (Some(url), Some(salt)) => Some(WebhookView {
                    url: url.clone(),
                    secret: self.inner.keys.webhook_secret(account, salt),
                }),
                _ => None,
            }),
        }
    }

    /// Changes preferences; every problem is named by field.
    pub async fn put_preferences(
        &self,
        account: Uuid,
        has_email: bool,
        change: PreferencesChange,
    ) -> NotifyResult<PreferencesView> {
        let store = self.inner.db.notify();
        let current = store.preferences(account).await?;
        let mut doc = Preferences::from_stored(current.as_ref().map(|r| r.settings.as_str())).doc();
        if let Some(channels) = change.channels {
            doc.channels = channels;
        }
        if let Some(zone) = change.time_zone {
            doc.time_zone = Some(zone);
        }
        if let Some(quiet) = change.quiet_hours {
            doc.quiet_hours = quiet;
        }
        if let Some(digest) = change.digest {
            doc.digest = digest;
        }
        let mut problems = match Preferences::parse(&doc) {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        };
        if !has_email {
            for (kind, chosen) in &doc.channels {
                if chosen.iter().any(|c| c == "email") {
                    problems.push((
                        format!("channels.{kind}"),
                        "a guest account has no email address; add one first".into(),
                    ));
                }
            }
        }
        let (mut url, mut salt) = current
            .as_ref()
            .map(|r| (r.webhook_url.clone(), r.webhook_salt.clone()))
            .unwrap_or((None, None));
        match change.webhook_url {
            Some(Some(text)) => {
                match webhook::check_url(&text, self.inner.config.allow_private).await {
                    Ok(checked) => {
                        if url.as_deref() != Some(checked.as_str()) {
                            salt = Some(Uuid::new_v4().simple().to_string());
                        }
                        url = Some(checked.as_str().to_string());
                    }
                    Err(e) => problems.push(("webhook_url".into(), e.to_string())),
                }
            }
            Some(None) => {
                url = None;
                salt = None;
            }
            None => {}
        }
        if !problems.is_empty() {
            return Err(NotifyError::Invalid(problems));
        }
        let parsed = Preferences::parse(&doc).map_err(NotifyError::Invalid)?;
        let row = PreferencesRow {
            account_id: account,
            settings: serde_json::to_string(&parsed.doc())
                .map_err(|e| NotifyError::Unexpected(e.into()))?,
            webhook_url: url,
            webhook_salt: salt,
            updated_at: self.now(),
        };
        store.put_preferences(&row).await?;
        Ok(self.view(account, Some(&row)))
    }

    /// The link in a mail of `kind` to `account`, usable once.
    pub fn unsubscribe_link(&self, account: Uuid, kind: Kind, token_id: Uuid) -> String {
        let token = self.inner.keys.unsubscribe_token(&keys::Unsubscribe {
            account,
            kind,
            token_id,
        });
        format!(
            "{}/api/v1/public/notifications/unsubscribe?token={token}",
            self.inner.config.public_url.trim_end_matches('/')
        )
    }

    /// Follows an unsubscribe link: that kind stops coming by email.
    pub async fn unsubscribe(&self, token: &str) -> NotifyResult<Kind> {
        let link = self
            .inner
            .keys
            .check_unsubscribe(token)
            .map_err(NotifyError::BadLink)?;
        // An account deleted since the mail was sent: the link is void.
        if let Err(StoreError::NotFound) = self.inner.db.accounts().account(link.account).await {
            return Err(NotifyError::NotFound("the account no longer exists".into()));
        }
        let store = self.inner.db.notify();
        let current = store.preferences(link.account).await?;
        let mut p = Preferences::from_stored(current.as_ref().map(|r| r.settings.as_str()));
        let mut chosen = p
            .channels
            .get(&link.kind)
            .cloned()
            .unwrap_or_else(|| prefs::default_channels(link.kind));
        chosen.retain(|c| *c != turnbase_store::notify::Channel::Email);
        p.channels.insert(link.kind, chosen);
        let row = PreferencesRow {
            account_id: link.account,
            settings: serde_json::to_string(&p.doc())
                .map_err(|e| NotifyError::Unexpected(e.into()))?,
            webhook_url: current.as_ref().and_then(|r| r.webhook_url.clone()),
            webhook_salt: current.as_ref().and_then(|r| r.webhook_salt.clone()),
            updated_at: self.now(),
        };
        match store
            .unsubscribe(link.token_id, link.kind, &row, self.now())
            .await
        {
            Ok(true) => Ok(link.kind),
            Ok(false) => Err(NotifyError::LinkUsed),
            Err(e) => Err(e.into()),
        }
    }

    // ---- admins --------------------------------------------------------

    pub async fn routes(&self, filter: &RouteFilter) -> NotifyResult<Vec<RouteRecord>> {
        Ok(self.inner.db.notify().list_routes(filter).await?)
    }

    pub async fn route(&self, id: Uuid) -> NotifyResult<(RouteRecord, Vec<RouteAttemptRecord>)> {
        match self.inner.db.notify().route(id).await {
            Err(StoreError::NotFound) => Err(NotifyError::NotFound(format!("no route {id}"))),
            other => Ok(other?),
        }
    }

    /// Requeues dead letters matching `filter` (audited); the ids.
    pub async fn requeue(
        &self,
        filter: &RouteFilter,
        audit: AuditEntry,
    ) -> NotifyResult<Vec<Uuid>> {
        let ids = self
            .inner
            .db
            .notify()
            .requeue_routes(filter, self.now())
            .await?;
        let mut audit = audit;
        audit.detail = with_count(&audit.detail, "routes", ids.len() as u64);
        self.inner.db.accounts().record_audit(&audit).await?;
        self.inner.routes_wake.notify_waiters();
        self.inner.routes_wake.notify_one();
        Ok(ids)
    }

    /// An admin notice (audited); the number of people it was written to.
    /// To everyone it is written in short transactions of
    /// `notice_batch` accounts, yielding between them.
    pub async fn send_notice(
        &self,
        target: NoticeTarget,
        subject: &str,
        message: &str,
        audit: AuditEntry,
    ) -> NotifyResult<u64> {
        let problems: Vec<(String, String)> =
            [("subject", subject, 200), ("message", message, 5000)]
                .into_iter()
                .filter(|(_, v, max)| v.trim().is_empty() || v.chars().count() > *max)
                .map(|(f, _, max)| (f.to_string(), format!("1 to {max} characters")))
                .collect();
        if !problems.is_empty() {
            return Err(NotifyError::Invalid(problems));
        }
        let payload = json!({ "subject": subject.trim(), "message": message.trim() }).to_string();
        let store = self.inner.db.notify();
        let now = self.now();
        let written = match target {
            NoticeTarget::One(account) => {
                match self.inner.db.accounts().account(account).await {
                    Err(StoreError::NotFound) => {
                        return Err(NotifyError::NotFound(format!("no account {account}")));
                    }
                    other => other?,
                };
                let notice = NewNotice::new(
                    Kind::AdminNotice,
                    None,
                    payload,
                    Audience::Users(vec![account]),
                );
                store.write_notices(&[notice], now).await?
            }
            NoticeTarget::Everyone => {
                let notice =
                    NewNotice::new(Kind::AdminNotice, None, payload, Audience::Users(vec![]));
                let mut after = None;
                let mut total = 0;
                loop {
                    let (n, last) = store
                        .notice_everyone(&notice, after, self.inner.config.notice_batch, now)
                        .await?;
                    total += n;
                    self.wake();
                    match last {
                        Some(last) => after = Some(last),
                        None => break,
                    }
                    tokio::task::yield_now().await;
                }
                total
            }
        };
        if self.inner.config.operator_webhook.is_some() {
            // One copy for the operator's webhook, recorded in the sending
            // admin's inbox (the notice's own record there).
            let payload = json!({
                "subject": subject.trim(),
                "message": message.trim(),
                "operator": true,
                "recipients": written,
                "everyone": target == NoticeTarget::Everyone,
            });
            let copy = NewNotice::new(
                Kind::AdminNotice,
                None,
                payload.to_string(),
                Audience::Users(vec![audit.actor_id]),
            );
            store.write_notices(&[copy], now).await?;
        }
        let mut audit = audit;
        audit.detail = with_count(&audit.detail, "recipients", written);
        self.inner.db.accounts().record_audit(&audit).await?;
        self.wake();
        Ok(written)
    }
}

/// An audit entry's JSON detail with a count added.
fn with_count(detail: &str, key: &str, n: u64) -> String {
    let mut v: Value = serde_json::from_str(detail).unwrap_or_else(|_| json!({}));
    if let Some(obj) = v.as_object_mut() {
        obj.insert(key.to_string(), json!(n));
    }
    v.to_string()
}

/// The live event of a notification for one account.
pub(crate) fn client_event(
    account: Uuid,
    kind: &'static str,
    payload: &Value,
    event_id: Uuid,
) -> ClientEventInput {
    ClientEventInput {
        user_id: account,
        device_session_id: None,
        kind: kind.into(),
        payload: JsonPayload::from_value(payload),
        event_id: event_id.to_string(),
        request_id: String::new(),
        trace_id: String::new(),
    }
}

/// Publishes a client event (best effort: a full or closed push service
/// is reported by the caller's outcome).
pub(crate) fn publish(
    push: &PushService,
    account: Uuid,
    kind: &'static str,
    payload: &Value,
    event_id: Uuid,
) -> bool {
    match push.publish_client_event(client_event(account, kind, payload, event_id)) {
        Ok(_) => true,
        Err(err) => {
            tracing::warn!(%account, kind, error = %err, "notification not published");
            false
        }
    }
}

pub(crate) fn channel_attr(channel: &str) -> KeyValue {
    KeyValue::new("channel", channel.to_string())
}
