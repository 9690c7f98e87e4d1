//! The notification worker: three core worker [`Job`]s on [`Runner`]s.
//!
//! - The **router** reads new notifications with their recipients'
//!   preferences and writes their routes (one transaction per batch,
//!   which also marks them routed, so two routers never route one twice).
//!   The router publishes the push routes itself just before that
//!   commit and writes them delivered; a router that dies in between
//!   leaves the notifications unrouted, and the next publishes them again
//!   under the same event id (the notification's), so push is
//!   at-least-once like every channel. Email and webhook routes wait for the route worker, due at
//!   once, when quiet hours end, or (turn results by digest) when the
//!   person's day ends.
//! - The **route worker** claims due routes through the leased queue and
//!   dispatches them: email becomes a mail in the outbox (in the same
//!   transaction as the route's delivery, keyed by the route), a webhook
//!   a signed POST. Failures are retried with jittered exponential
//!   backoff until `max_attempts`; then the route is `failed`, a dead
//!   letter admins can requeue.
//! - **Upkeep** counts the queue per channel and prunes notifications past
//!   their retention.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::SeedableRng as _;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use turnbase_core::backoff::Backoff;
use turnbase_core::worker::{Job, Outcome, Runner};
use turnbase_store::mail::NewMail;
use turnbase_store::notify::{
    Channel, ClaimedRoute, Kind, NewRoute, NotificationRow, RouteAttempt, RouteOutcome, Unrouted,
};
use uuid::Uuid;

use crate::keys::{self, DELIVERY_HEADER, KIND_HEADER, SIGNATURE_HEADER};
use crate::prefs::Preferences;
use crate::{NotifyService, channel_attr, client_event, email, publish};
use turnbase_push::ClientEventInput;

/// How often upkeep runs, and how many notifications one prune deletes.
const UPKEEP_EVERY: Duration = Duration::from_secs(60);
const PRUNE_BATCH: i64 = 1_000;
/// Routes one claim takes (webhooks are sent together, so a slow
/// receiver holds only its own request).
const CLAIM_BATCH: i64 = 64;

impl NotifyService {
    /// Runs the router, the route worker's slots and upkeep until `stop`.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let instance = Uuid::now_v7().simple().to_string();
        let config = &self.inner.config;
        tracing::info!(
            workers = config.workers,
            "notification worker started; routing pending notifications"
        );
        let mut tasks = tokio::task::JoinSet::new();
        let router = Arc::new(Router {
            service: self.clone(),
            saving: tokio::sync::Mutex::new(None),
        });
        let runner = Runner::new(config.poll_interval)
            .with_clock(self.inner.clock.clone())
            .with_wake(self.inner.wake.clone());
        let s = stop.clone();
        tasks.spawn(async move { runner.run(router, s).await });
        let dispatcher = Arc::new(Dispatcher {
            service: self.clone(),
            owner: format!("routes-{instance}"),
        });
        let runner = Runner::new(config.poll_interval)
            .with_clock(self.inner.clock.clone())
            .with_slots(config.workers)
            .with_wake(self.inner.routes_wake.clone());
        let s = stop.clone();
        tasks.spawn(async move { runner.run(dispatcher, s).await });
        let upkeep = Arc::new(Upkeep::new(self.clone()));
        let runner = Runner::new(UPKEEP_EVERY)
            .with_clock(self.inner.clock.clone())
            .with_wake(Arc::new(Notify::new()));
        tasks.spawn(async move { runner.run(upkeep, stop).await });
        while let Some(joined) = tasks.join_next().await {
            joined??;
        }
        Ok(())
    }

    fn backoff(&self) -> Backoff {
        let mut b = Backoff::new(self.inner.config.retry_base, self.inner.config.retry_max);
        b.jitter = 0.2;
        b
    }

    /// What becomes of a route whose attempt number `attempt` (from 1)
    /// failed at `now`.
    fn after_failure(&self, attempt: i64, now: DateTime<Utc>) -> RouteOutcome {
        if attempt >= i64::from(self.inner.config.max_attempts) {
            return RouteOutcome::Failed;
        }
        let mut rng = rand::rngs::StdRng::from_os_rng();
        let failures = u32::try_from(attempt.max(1)).unwrap_or(u32::MAX);
        let wait = self.backoff().delay(failures, &mut rng);
        RouteOutcome::Retry(now + chrono::Duration::from_std(wait).unwrap_or_default())
    }

    fn count(&self, channel: &str, outcome: RouteOutcome, started: Instant) {
        let m = &self.inner.metrics;
        m.routes.add(
            1,
            &[
                channel_attr(channel),
                opentelemetry::KeyValue::new("outcome", outcome.as_str()),
            ],
        );
        if outcome == RouteOutcome::Failed {
            m.dead.add(1, &[channel_attr(channel)]);
        }
        m.dispatch
            .record(started.elapsed().as_secs_f64(), &[channel_attr(channel)]);
    }
}

/// Whether an admin notice is the operator's copy.
fn is_operator_copy(payload: &str) -> bool {
    serde_json::from_str::<Value>(payload)
        .ok()
        .and_then(|p| p.get("operator").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// The live event of a notification: its payload, with its id, kind and
/// game title. (Each such event adds one to the recipient's unread count;
/// reading pushes `notifications.unread` with the count.)
fn live_payload(n: &NotificationRow) -> Value {
    let mut payload: Value = serde_json::from_str(&n.payload).unwrap_or_else(|_| json!({}));
    if let Some(obj) = payload.as_object_mut() {
        obj.insert("notification_id".into(), json!(n.id));
        obj.insert("notification_kind".into(), json!(n.kind));
        if let Some(game) = n.game_id {
            obj.entry("game_id").or_insert(json!(game));
        }
        if let Some(title) = &n.game_title {
            obj.entry("title").or_insert(json!(title));
        }
    }
    payload
}

/// The router. Its steps overlap: while one batch's routes are being
/// saved, the next batch is read (after it, so not read twice); a batch
/// is published only once the save before it has committed, so at most
/// one batch is published and unsaved at a time.
struct Router {
    service: NotifyService,
    /// The batch being saved: the last notification id in it, and the
    /// save's task.
    saving: tokio::sync::Mutex<Option<(Uuid, tokio::task::JoinHandle<anyhow::Result<()>>)>>,
}

impl Router {
    fn routes_of(&self, u: &Unrouted, prefs: &Preferences, now: DateTime<Utc>) -> Vec<NewRoute> {
        let n = &u.notification;
        let Some(kind) = Kind::parse(&n.kind) else {
            return Vec::new();
        };
        if u.blocked {
            return Vec::new();
        }
        if kind == Kind::AdminNotice && is_operator_copy(&n.payload) {
            // The operator's copy goes to the operator's webhook only.
            return self
                .service
                .inner
                .config
                .operator_webhook
                .iter()
                .map(|url| NewRoute {
                    id: Uuid::now_v7(),
                    notification_id: n.id,
                    account_id: n.account_id,
                    kind,
                    channel: Channel::Webhook,
                    target: Some(url.clone()),
                    digest_key: None,
                    due_at: now,
                    delivered_at: None,
                })
                .collect();
        }
        let route = |channel, target: Option<String>, digest_key, due_at| NewRoute {
            id: Uuid::now_v7(),
            notification_id: n.id,
            account_id: n.account_id,
            kind,
            channel,
            target,
            digest_key,
            due_at,
            delivered_at: None,
        };
        let mut routes = Vec::with_capacity(2);
        if prefs.wants(kind, Channel::Push) {
            routes.push(route(Channel::Push, None, None, now));
        }
        let held = prefs.held_until(now).unwrap_or(now);
        if let Some(address) = &u.email
            && prefs.wants(kind, Channel::Email)
        {
            match (kind, n.game_id) {
                (Kind::TurnResolved, Some(game)) if prefs.digest => {
                    let (_, day_end) = prefs.day_bounds(n.created_at);
                    let due = prefs.held_until(day_end).unwrap_or(day_end);
                    let key = format!("{}:{game}:{}", n.account_id, prefs.digest_day(n.created_at));
                    routes.push(route(Channel::Email, Some(address.clone()), Some(key), due));
                }
                _ => routes.push(route(Channel::Email, Some(address.clone()), None, held)),
            }
        }
        if let Some(url) = &u.webhook_url
            && prefs.wants(kind, Channel::Webhook)
        {
            routes.push(route(Channel::Webhook, Some(url.clone()), None, held));
        }
        routes
    }
}

#[async_trait::async_trait]
impl Job for Router {
    fn name(&self) -> &'static str {
        "notification-router"
    }

    async fn try_execute(
        &self,
        now: DateTime<Utc>,
        _stop: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let inner = &self.service.inner;
        let store = inner.db.notify();
        let mut saving = self.saving.lock().await;
        let after = saving.as_ref().map(|(last, _)| *last);
        let batch = store.unrouted(after, inner.config.batch).await?;
        if batch.is_empty() {
            return match saving.take() {
                // Nothing after the batch being saved: finish it, and
                // look again from the start (a notification committed
                // late with an older id is routed then).
                Some((_, save)) => {
                    save.await??;
                    Ok(Outcome::Done)
                }
                None => Ok(Outcome::Idle { next_due: None }),
            };
        }
        let mut prefs: HashMap<Uuid, Preferences> = HashMap::new();
        let mut routes = Vec::with_capacity(batch.len() * 2);
        for u in &batch {
            let p = prefs
                .entry(u.notification.account_id)
                .or_insert_with(|| Preferences::from_stored(u.settings.as_deref()));
            routes.extend(self.routes_of(u, p, now));
        }
        // The previous batch's routes are committed before this one is
        // published.
        if let Some((_, save)) = saving.take() {
            save.await??;
        }
        // Push first, then record: the live events go out before the
        // routing commit (a router that dies in between leaves the
        // notifications unrouted, and the next one publishes them again
        // under the same event id, the notification's).
        let by_id: HashMap<Uuid, &NotificationRow> = batch
            .iter()
            .map(|u| (u.notification.id, &u.notification))
            .collect();
        // One publish for the batch's live events (a turn resolving tells
        // every seat at once): one turn of the ring's lock for them all.
        let started = Instant::now();
        let (places, events): (Vec<usize>, Vec<ClientEventInput>) = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.channel == Channel::Push)
            .filter_map(|(i, r)| {
                let n = by_id.get(&r.notification_id)?;
                Some((
                    i,
                    client_event(r.account_id, r.kind.event(), &live_payload(n), n.id),
                ))
            })
            .unzip();
        let published = inner.push.publish_client_events(&events);
        for (i, result) in places.into_iter().zip(published) {
            let r = &mut routes[i];
            match result {
                Ok(_) => {
                    r.delivered_at = Some(self.service.now());
                    self.service.count("push", RouteOutcome::Delivered, started);
                }
                Err(err) => {
                    tracing::warn!(account = %r.account_id, kind = r.kind.event(), error = %err, "notification not published");
                    // The route worker tries again (this failure is not
                    // counted against its budget).
                    r.due_at = now + chrono::Duration::from_std(inner.config.retry_base)?;
                    self.service
                        .count("push", RouteOutcome::Retry(r.due_at), started);
                }
            }
        }
        let ids: Vec<Uuid> = batch.iter().map(|u| u.notification.id).collect();
        let last = *ids.last().expect("the batch is not empty");
        let service = self.service.clone();
        let save = tokio::spawn(async move {
            let inner = &service.inner;
            let written = inner.db.notify().save_routes(&ids, &routes, now).await?;
            if written
                .iter()
                .any(|r| r.channel != Channel::Push && r.due_at <= now)
            {
                inner.routes_wake.notify_one();
            }
            Ok(())
        });
        *saving = Some((last, save));
        Ok(Outcome::Done)
    }

    async fn stopped(&self, _now: DateTime<Utc>) -> anyhow::Result<()> {
        // The batch published last is saved before the worker ends.
        if let Some((_, save)) = self.saving.lock().await.take() {
            save.await??;
        }
        Ok(())
    }
}

struct Dispatcher {
    service: NotifyService,
    owner: String,
}

impl Dispatcher {
    async fn dispatch(&self, r: &ClaimedRoute, now: DateTime<Utc>) -> RouteAttempt {
        let started = Instant::now();
        let attempt_no = r.attempts + 1;
        let result = self.attempt(r, now).await;
        let finished_at = self.service.now();
        let (outcome, status_code, error, mail) = match result {
            Ok(mail) => (RouteOutcome::Delivered, Some(200), None, mail),
            Err((status, error)) => (
                self.service.after_failure(attempt_no, finished_at),
                status.map(i64::from),
                Some(error),
                None,
            ),
        };
        self.service.count(&r.channel, outcome, started);
        if let RouteOutcome::Failed = outcome {
            tracing::warn!(route = %r.id, channel = %r.channel, attempts = attempt_no, error = ?error, "notification route failed for good (dead letter)");
        }
        RouteAttempt {
            route_id: r.id,
            outcome,
            started_at: now,
            finished_at,
            status_code: if r.channel == "webhook" {
                status_code
            } else {
                None
            },
            error,
            mail,
        }
    }

    /// One attempt: `Ok` with the mail to hand to the outbox (email), or
    /// the failure with the receiver's status when there was one.
    async fn attempt(
        &self,
        r: &ClaimedRoute,
        now: DateTime<Utc>,
    ) -> Result<Option<NewMail>, (Option<u16>, String)> {
        let inner = &self.service.inner;
        let store = inner.db.notify();
        let n = store
            .notification(r.notification_id)
            .await
            .map_err(|e| (None, format!("reading the notification: {e}")))?;
        let kind = Kind::parse(&r.kind).ok_or((None, format!("unknown kind {}", r.kind)))?;
        match r.channel.as_str() {
            "push" => {
                if publish(
                    &inner.push,
                    r.account_id,
                    kind.event(),
                    &live_payload(&n),
                    n.id,
                ) {
                    Ok(None)
                } else {
                    Err((None, "the push service did not take the event".into()))
                }
            }
            "email" => {
                let to = r.target.clone().ok_or((None, "no address".to_string()))?;
                let link = self.service.unsubscribe_link(r.account_id, kind, r.id);
                let mail = match (&r.digest_key, n.game_id) {
                    (Some(_), Some(game)) => {
                        let prefs = store
                            .preferences(r.account_id)
                            .await
                            .map_err(|e| (None, format!("reading preferences: {e}")))?;
                        let p =
                            Preferences::from_stored(prefs.as_ref().map(|p| p.settings.as_str()));
                        let (from, to_day) = p.day_bounds(n.created_at);
                        let items = store
                            .digest_items(r.account_id, game, kind, from, to_day)
                            .await
                            .map_err(|e| (None, format!("reading the digest: {e}")))?;
                        email::render_digest(&items, &link)
                    }
                    _ => email::render(kind, &n, &link),
                };
                Ok(Some(NewMail {
                    id: Uuid::now_v7(),
                    idempotency_key: Some(format!("notification-route:{}", r.id)),
                    to,
                    subject: mail.subject,
                    text_body: mail.text,
                    html_body: Some(mail.html),
                    created_at: now,
                    masked_subject: None,
                }))
            }
            "webhook" => {
                let url = r.target.clone().ok_or((None, "no URL".to_string()))?;
                let secret = if kind == Kind::AdminNotice && is_operator_copy(&n.payload) {
                    inner.keys.operator_secret()
                } else {
                    let prefs = store
                        .preferences(r.account_id)
                        .await
                        .map_err(|e| (None, format!("reading preferences: {e}")))?;
                    let salt = prefs
                        .and_then(|p| p.webhook_salt)
                        .ok_or((None, "the webhook was removed".to_string()))?;
                    inner.keys.webhook_secret(r.account_id, &salt)
                };
                let body = json!({
                    "id": r.id,
                    "notification_id": n.id,
                    "account_id": n.account_id,
                    "kind": n.kind,
                    "game_id": n.game_id,
                    "title": n.game_title,
                    "created_at": n.created_at,
                    "payload": serde_json::from_str::<Value>(&n.payload).unwrap_or(Value::Null),
                })
                .to_string();
                let signature =
                    keys::sign(&secret, self.service.now().timestamp(), body.as_bytes());
                let headers = [
                    (SIGNATURE_HEADER, signature),
                    (DELIVERY_HEADER, r.id.to_string()),
                    (KIND_HEADER, r.kind.clone()),
                ];
                let delivery = inner.webhooks.post(&url, &headers, body.into()).await;
                if delivery.ok() {
                    Ok(None)
                } else {
                    Err((
                        delivery.status,
                        delivery.error.unwrap_or_else(|| "failed".into()),
                    ))
                }
            }
            other => Err((None, format!("unknown channel {other}"))),
        }
    }
}

#[async_trait::async_trait]
impl Job for Dispatcher {
    fn name(&self) -> &'static str {
        "notification-routes"
    }

    async fn try_execute(
        &self,
        now: DateTime<Utc>,
        stop: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let inner = &self.service.inner;
        let store = inner.db.notify();
        let claimed = store
            .claim_routes(now, inner.config.lease, &self.owner, CLAIM_BATCH)
            .await?;
        if claimed.is_empty() {
            return Ok(Outcome::Idle { next_due: None });
        }
        if claimed.len() as i64 == CLAIM_BATCH {
            // More is due: another slot takes the next batch meanwhile.
            inner.routes_wake.notify_one();
        }
        let work = futures::future::join_all(claimed.iter().map(|r| self.dispatch(r, now)));
        let attempts = tokio::select! {
            done = work => done,
            () = stop.cancelled() => {
                // Stopping: the routes go back without spending an attempt.
                for r in &claimed {
                    store.release_route(r.id, &self.owner, self.service.now()).await?;
                }
                return Ok(Outcome::Done);
            }
        };
        let mails = attempts.iter().any(|a| a.mail.is_some());
        store.finish_routes(&self.owner, &attempts).await?;
        if mails {
            inner.mail_wake.notify_one();
        }
        Ok(Outcome::Done)
    }
}

struct Upkeep {
    service: NotifyService,
}

impl Upkeep {
    fn new(service: NotifyService) -> Upkeep {
        Upkeep { service }
    }
}

#[async_trait::async_trait]
impl Job for Upkeep {
    fn name(&self) -> &'static str {
        "notification-upkeep"
    }

    async fn try_execute(
        &self,
        now: DateTime<Utc>,
        _stop: &CancellationToken,
    ) -> anyhow::Result<Outcome> {
        let store = self.service.inner.db.notify();
        let depths = store.route_depths().await?;
        if let Ok(mut d) = self.service.inner.depths.lock() {
            *d = depths;
        }
        let before = now - chrono::Duration::from_std(self.service.inner.config.retention)?;
        let pruned = store.prune_notifications(before, PRUNE_BATCH).await?;
        if pruned as i64 == PRUNE_BATCH {
            return Ok(Outcome::Done);
        }
        Ok(Outcome::Idle {
            next_due: Some(now + chrono::Duration::from_std(UPKEEP_EVERY)?),
        })
    }
}
