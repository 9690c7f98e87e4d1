//! The accounts service: sign-in by mailed code, guests, sessions, upgrades
//! and admin actions. Every change to a session goes to the database, then
//! to the session cache, then (for revocations) to the push service, so
//! gateways drop the connections too.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use turnbase_mail::template::Template;
use turnbase_mail::{Email, MailService, OutgoingMail};
use turnbase_push::PushService;
use turnbase_store::accounts::{
    AccountFilter, AccountRow, AuditEntry, CodeCheck, EmailSignIn, LoginCount, NewAccount,
    NewLoginCode, NewSession, Role, SessionRow, Upgrade,
};
use turnbase_store::{Database, StoreError};
use uuid::Uuid;

use crate::batch::GuestWriter;
use crate::cache::{CachedSession, SessionCache};
use crate::geo::{GeoIp, LoginCounter};
use crate::names::{DeviceName, DisplayName};
use crate::secret::{CodeKey, LoginCode, SessionToken};
use turnbase_core::limiter::{Rate, RateLimiter};

/// The current time, injected (the one clock type of every worker and
/// service) so that TTLs and the reaper are tested without waiting.
pub use turnbase_core::worker::{Clock, system_clock};

#[derive(Debug, Clone)]
pub struct AccountsConfig {
    pub code_ttl: Duration,
    /// Wrong codes allowed before a code is void.
    pub code_tries: u32,
    /// Code requests per address.
    pub email_rate: Rate,
    /// Sign-in requests (codes, verifications, guests) per client address.
    pub ip_rate: Rate,
    pub admin_email: Option<Email>,
    pub session_cache_capacity: usize,
    /// A session's last-seen time is written at most this often.
    pub last_seen_resolution: Duration,
    /// What sign-in codes are hashed under.
    pub code_key: CodeKey,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("the code is wrong or has expired; ask for a new one")]
    InvalidCode,
    #[error("missing, unknown or revoked session token")]
    Unauthorized,
    #[error("too many requests; try again in {} s", .0.as_secs())]
    RateLimited(Duration),
    #[error("this account is blocked")]
    Blocked,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<StoreError> for AccountError {
    fn from(err: StoreError) -> Self {
        AccountError::Unexpected(err.into())
    }
}

impl From<turnbase_mail::MailError> for AccountError {
    fn from(err: turnbase_mail::MailError) -> Self {
        AccountError::Unexpected(err.into())
    }
}

/// A new session and the token that opens it (shown once, never stored).
#[derive(Debug)]
pub struct SignedIn {
    pub token: SessionToken,
    pub session: Arc<CachedSession>,
    /// Whether this sign-in created the account.
    pub created: bool,
}

/// Who is asking, as far as the network tells.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub ip: IpAddr,
}

/// An admin performing an action, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: Uuid,
    pub email: Option<String>,
}

impl Actor {
    pub fn of(session: &CachedSession) -> Actor {
        Actor {
            id: session.account.id,
            email: session.account.email.clone(),
        }
    }
}

/// What an admin sees of one account.
#[derive(Debug, Clone)]
pub struct AccountDetail {
    pub account: AccountRow,
    pub sessions: Vec<SessionRow>,
}

const LOGIN_CODE_MAIL: Template = Template {
    subject: "Your Turnbase sign-in code: {{code}}",
    text: "Your sign-in code is {{code}}\n\n\
           It is valid for {{minutes}} minutes. If you did not ask for it, ignore this mail.\n",
    html: Some(
        "<p>Your sign-in code is</p><p style=\"font-size:24px;letter-spacing:4px\"><b>{{code}}</b></p>\
         <p>It is valid for {{minutes}} minutes. If you did not ask for it, ignore this mail.</p>",
    ),
    secrets: &["code"],
};

struct Metrics {
    sign_ins: Counter<u64>,
    rate_limited: Counter<u64>,
    reaped: Counter<u64>,
}

#[derive(Clone)]
pub struct AccountService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    guests: GuestWriter,
    mail: MailService,
    push: PushService,
    cache: SessionCache,
    by_email: RateLimiter<String>,
    by_ip: RateLimiter<IpAddr>,
    geo: GeoIp,
    logins: LoginCounter,
    /// Last-seen times waiting to be written.
    touched: std::sync::Mutex<BTreeMap<Uuid, DateTime<Utc>>>,
    config: AccountsConfig,
    clock: Clock,
    metrics: Option<Metrics>,
    /// Wakes the notification router after a sign-in wrote a notice.
    notices: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
}

impl AccountService {
    pub fn new(
        db: Database,
        mail: MailService,
        push: PushService,
        geo: GeoIp,
        config: AccountsConfig,
        clock: Clock,
        meter: &Meter,
    ) -> Self {
        let metrics = Some(meter).map(|m| Metrics {
            sign_ins: m
                .u64_counter("accounts_sign_ins")
                .with_description("Sessions opened, by method")
                .build(),
            rate_limited: m
                .u64_counter("accounts_rate_limited")
                .with_description("Sign-in requests refused by a rate limit, by scope")
                .build(),
            reaped: m
                .u64_counter("accounts_guests_reaped")
                .with_description("Abandoned guest accounts deleted by the reaper")
                .build(),
        });
        AccountService {
            inner: Arc::new(Inner {
                guests: GuestWriter::start(db.clone()),
                db,
                mail,
                push,
                cache: SessionCache::new(config.session_cache_capacity),
                by_email: RateLimiter::new(config.email_rate),
                by_ip: RateLimiter::new(config.ip_rate),
                geo,
                logins: LoginCounter::default(),
                touched: std::sync::Mutex::default(),
                config,
                clock,
                metrics,
                notices: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Wires in the notification router's wake (once, at start).
    pub fn set_notifier(&self, wake: Arc<tokio::sync::Notify>) {
        let _ = self.inner.notices.set(wake);
    }

    fn now(&self) -> DateTime<Utc> {
        (self.inner.clock)()
    }

    /// The clock this service reads, for the jobs that run beside it.
    pub fn clock(&self) -> Clock {
        self.inner.clock.clone()
    }

    fn limit_ip(&self, client: Client) -> Result<(), AccountError> {
        self.inner.by_ip.check(client.ip).map_err(|wait| {
            self.count_limited("ip");
            AccountError::RateLimited(wait)
        })
    }

    fn count_limited(&self, scope: &'static str) {
        if let Some(m) = &self.inner.metrics {
            m.rate_limited.add(1, &[KeyValue::new("scope", scope)]);
        }
    }

    /// Creates (or promotes) the admin named in the configuration.
    pub async fn ensure_admin(&self) -> Result<Option<AccountRow>, AccountError> {
        let Some(email) = &self.inner.config.admin_email else {
            return Ok(None);
        };
        let key = email_key(email);
        let admin = self
            .inner
            .db
            .accounts()
            .ensure_admin(&NewAccount {
                id: Uuid::now_v7(),
                display_name: DisplayName::from_email(&key).as_str().to_string(),
                email: Some(key),
                role: Role::Admin,
                created_at: self.now(),
            })
            .await?;
        self.inner.cache.update_account(&admin);
        Ok(Some(admin))
    }

    /// Loads the most recently seen sessions into the cache.
    pub async fn warm_cache(&self) -> Result<usize, AccountError> {
        let limit =
            i64::try_from(self.inner.config.session_cache_capacity.min(10_000)).unwrap_or(10_000);
        let generation = self.inner.cache.generation();
        let rows = self.inner.db.accounts().recent_sessions(limit).await?;
        let n = rows.len();
        for row in rows {
            if let Ok(hash) = <[u8; 32]>::try_from(row.token_hash.as_slice())
                && row.account.blocked_at.is_none()
            {
                self.inner
                    .cache
                    .fill(hash, Arc::new(CachedSession::from_row(row)), generation);
            }
        }
        Ok(n)
    }

    /// Mails a sign-in code to `email`. Answers the same whether or not
    /// the address has an account.
    pub async fn start_email_sign_in(
        &self,
        email: &str,
        client: Client,
    ) -> Result<(), AccountError> {
        self.limit_ip(client)?;
        let email = parse_email(email)?;
        let key = email_key(&email);
        self.inner.by_email.check(key.clone()).map_err(|wait| {
            self.count_limited("email");
            AccountError::RateLimited(wait)
        })?;
        let code = LoginCode::generate();
        let now = self.now();
        let ttl = self.inner.config.code_ttl;
        let minutes = ttl.as_secs().div_ceil(60).max(1);
        let content = LOGIN_CODE_MAIL
            .render(&BTreeMap::from([
                ("code", code.as_str().to_string()),
                ("minutes", minutes.to_string()),
            ]))
            .map_err(|e| anyhow::anyhow!("the sign-in mail template: {e}"))?;
        let mut tx = self.inner.db.begin().await?;
        self.inner
            .db
            .accounts()
            .put_login_code(
                &mut tx,
                &NewLoginCode {
                    code_hash: code.hash(&self.inner.config.code_key, &key).to_vec(),
                    email: key,
                    tries: i64::from(self.inner.config.code_tries),
                    created_at: now,
                    expires_at: now
                        + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
                },
            )
            .await?;
        self.inner
            .mail
            .enqueue(
                &mut tx,
                OutgoingMail {
                    to: email,
                    content,
                    idempotency_key: None,
                },
            )
            .await?;
        tx.commit().await?;
        self.inner.mail.wake();
        Ok(())
    }

    /// Checks a mailed code; spends a try whatever the outcome.
    async fn check_code(&self, email: &str, code: &str) -> Result<(Email, String), AccountError> {
        let email = parse_email(email)?;
        let key = email_key(&email);
        let Some(code) = LoginCode::parse(code) else {
            return Err(AccountError::Invalid("code must be six digits".into()));
        };
        match self
            .inner
            .db
            .accounts()
            .check_login_code(
                &key,
                &[
                    code.hash(&self.inner.config.code_key, &key),
                    code.legacy_hash(&key),
                ],
                self.now(),
            )
            .await?
        {
            CodeCheck::Accepted => Ok((email, key)),
            CodeCheck::Rejected { .. } | CodeCheck::Missing => Err(AccountError::InvalidCode),
        }
    }

    /// Signs in with a mailed code, creating the account on first use.
    pub async fn verify_email_sign_in(
        &self,
        email: &str,
        code: &str,
        device_name: Option<&str>,
        client: Client,
    ) -> Result<SignedIn, AccountError> {
        self.limit_ip(client)?;
        let device = DeviceName::parse(device_name).map_err(invalid)?;
        let (_, key) = self.check_code(email, code).await?;
        let now = self.now();
        let (token, new_session) = self.new_session(&device, client, now);
        let new_account = NewAccount {
            id: Uuid::now_v7(),
            display_name: DisplayName::from_email(&key).as_str().to_string(),
            email: Some(key),
            role: Role::Player,
            created_at: now,
        };
        // Written with the session when an existing account signs in on a
        // device (by name) it never used: the person hears of it.
        let new_device = turnbase_store::notify::NewNotice::new(
            turnbase_store::notify::Kind::NewDevice,
            None,
            serde_json::json!({
                "device_name": new_session.device_name,
                "country": new_session.country,
                "at": now,
            })
            .to_string(),
            turnbase_store::notify::Audience::Users(Vec::new()),
        );
        match self
            .inner
            .db
            .accounts()
            .sign_in_by_email_telling(&new_account, &new_session, Some(&new_device))
            .await?
        {
            EmailSignIn::Blocked => Err(AccountError::Blocked),
            EmailSignIn::SignedIn { account, created } => {
                if !created && let Some(wake) = self.inner.notices.get() {
                    wake.notify_one();
                }
                Ok(self.opened(token, new_session, account, created, "email"))
            }
        }
    }

    /// Creates a guest account and its session.
    pub async fn guest_sign_in(
        &self,
        display_name: &str,
        device_name: Option<&str>,
        client: Client,
    ) -> Result<SignedIn, AccountError> {
        self.limit_ip(client)?;
        let name = DisplayName::parse(display_name).map_err(invalid)?;
        let device = DeviceName::parse(device_name).map_err(invalid)?;
        let now = self.now();
        let (token, new_session) = self.new_session(&device, client, now);
        let new_account = NewAccount {
            id: Uuid::now_v7(),
            email: None,
            display_name: name.as_str().to_string(),
            role: Role::Player,
            created_at: now,
        };
        self.inner
            .guests
            .create(new_account.clone(), new_session.clone())
            .await?;
        let account = AccountRow {
            id: new_account.id,
            email: None,
            display_name: new_account.display_name,
            role: Role::Player,
            is_guest: true,
            created_at: now,
            updated_at: now,
            blocked_at: None,
            blocked_reason: None,
        };
        Ok(self.opened(token, new_session, account, true, "guest"))
    }

    fn new_session(
        &self,
        device: &DeviceName,
        client: Client,
        now: DateTime<Utc>,
    ) -> (SessionToken, NewSession) {
        let token = SessionToken::generate();
        let session = NewSession {
            id: Uuid::now_v7(),
            token_hash: token.hash().to_vec(),
            device_name: device.as_str().to_string(),
            country: self.inner.geo.country(client.ip),
            created_at: now,
        };
        (token, session)
    }

    /// Caches and counts a session just opened.
    fn opened(
        &self,
        token: SessionToken,
        session: NewSession,
        account: AccountRow,
        created: bool,
        method: &'static str,
    ) -> SignedIn {
        self.inner
            .logins
            .record(session.created_at, session.country.as_deref());
        if let Some(m) = &self.inner.metrics {
            m.sign_ins.add(1, &[KeyValue::new("method", method)]);
        }
        let cached = Arc::new(CachedSession {
            session_id: session.id,
            device_name: session.device_name,
            country: session.country,
            created_at: session.created_at,
            last_seen_recorded: session.created_at.timestamp().into(),
            account,
        });
        self.inner.cache.insert(token.hash(), cached.clone());
        SignedIn {
            token,
            session: cached,
            created,
        }
    }

    /// The session a bearer token opens.
    pub async fn resolve(&self, token: &str) -> Result<Arc<CachedSession>, AccountError> {
        let token = SessionToken::parse(token).ok_or(AccountError::Unauthorized)?;
        let hash = token.hash();
        let entry = match self.inner.cache.get(&hash) {
            Some(entry) => entry,
            None => {
                let generation = self.inner.cache.generation();
                let row = self
                    .inner
                    .db
                    .accounts()
                    .session_by_token(&hash)
                    .await?
                    .ok_or(AccountError::Unauthorized)?;
                if row.account.blocked_at.is_some() {
                    return Err(AccountError::Unauthorized);
                }
                let entry = Arc::new(CachedSession::from_row(row));
                self.inner.cache.fill(hash, entry.clone(), generation);
                entry
            }
        };
        self.touch(&entry);
        Ok(entry)
    }

    /// Notes that the session was used; written at the next flush if the
    /// recorded time is older than the resolution.
    fn touch(&self, entry: &CachedSession) {
        let now = self.now();
        let recorded = entry.last_seen_recorded.load(Ordering::Relaxed);
        let resolution =
            i64::try_from(self.inner.config.last_seen_resolution.as_secs()).unwrap_or(i64::MAX);
        if now.timestamp().saturating_sub(recorded) < resolution {
            return;
        }
        // One request per session wins the right to record this interval.
        if entry
            .last_seen_recorded
            .compare_exchange(
                recorded,
                now.timestamp(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            self.inner
                .touched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(entry.session_id, now);
        }
    }

    pub async fn rename(
        &self,
        me: &CachedSession,
        display_name: &str,
    ) -> Result<AccountRow, AccountError> {
        let name = DisplayName::parse(display_name).map_err(invalid)?;
        let account = self
            .inner
            .db
            .accounts()
            .rename_account(me.account.id, name.as_str(), self.now())
            .await
            .map_err(gone)?;
        self.inner.cache.update_account(&account);
        Ok(account)
    }

    /// Turns a guest into an email account, proven by a mailed code.
    pub async fn upgrade(
        &self,
        me: &CachedSession,
        email: &str,
        code: &str,
        client: Client,
    ) -> Result<AccountRow, AccountError> {
        self.limit_ip(client)?;
        if !me.account.is_guest {
            return Err(AccountError::Conflict(
                "this account already has an email address".into(),
            ));
        }
        let (_, key) = self.check_code(email, code).await?;
        match self
            .inner
            .db
            .accounts()
            .upgrade_guest(me.account.id, &key, self.now())
            .await?
        {
            Upgrade::Done(account) => {
                self.inner.cache.update_account(&account);
                Ok(account)
            }
            Upgrade::NotGuest => Err(AccountError::Conflict(
                "this account already has an email address".into(),
            )),
            Upgrade::EmailTaken => Err(AccountError::Conflict(
                "another account already uses this address; sign in with it instead".into(),
            )),
        }
    }

    pub async fn sessions(&self, me: &CachedSession) -> Result<Vec<SessionRow>, AccountError> {
        Ok(self.inner.db.accounts().sessions(me.account.id).await?)
    }

    /// Revokes one of the caller's own sessions.
    pub async fn revoke_session(&self, me: &CachedSession, id: Uuid) -> Result<(), AccountError> {
        let deleted = self
            .inner
            .db
            .accounts()
            .delete_session(me.account.id, id)
            .await?;
        if !deleted {
            return Err(AccountError::NotFound(format!("you have no session {id}")));
        }
        self.revoked(me.account.id, &[id], "revoked");
        Ok(())
    }

    pub async fn logout(&self, me: &CachedSession) -> Result<(), AccountError> {
        self.inner
            .db
            .accounts()
            .delete_session(me.account.id, me.session_id)
            .await?;
        self.revoked(me.account.id, &[me.session_id], "logout");
        Ok(())
    }

    /// Revokes every session of the caller but the one in use.
    pub async fn revoke_others(&self, me: &CachedSession) -> Result<usize, AccountError> {
        let ids = self
            .inner
            .db
            .accounts()
            .delete_sessions(me.account.id, Some(me.session_id))
            .await?;
        self.revoked(me.account.id, &ids, "revoked");
        Ok(ids.len())
    }

    /// Drops revoked sessions from the cache and tells the gateways.
    fn revoked(&self, account: Uuid, sessions: &[Uuid], reason: &str) {
        self.inner.cache.remove_sessions(sessions);
        for id in sessions {
            if let Err(err) =
                self.inner
                    .push
                    .publish_session_invalidation(account, Some(*id), reason)
            {
                tracing::warn!(%account, session = %id, error = %err, "session invalidation not published");
            }
        }
    }

    /// Drops whole accounts from the cache and tells the gateways.
    fn accounts_gone(&self, accounts: &[Uuid], reason: &str) {
        self.inner.cache.remove_accounts(accounts);
        for id in accounts {
            if let Err(err) = self
                .inner
                .push
                .publish_session_invalidation(*id, None, reason)
            {
                tracing::warn!(account = %id, error = %err, "session invalidation not published");
            }
        }
    }

    pub async fn list_accounts(
        &self,
        filter: &AccountFilter,
    ) -> Result<Vec<AccountRow>, AccountError> {
        Ok(self.inner.db.accounts().list_accounts(filter).await?)
    }

    pub async fn account_detail(&self, id: Uuid) -> Result<AccountDetail, AccountError> {
        let account = self.inner.db.accounts().account(id).await.map_err(gone)?;
        let sessions = self.inner.db.accounts().sessions(id).await?;
        Ok(AccountDetail { account, sessions })
    }

    /// Blocks an account for good: every session is revoked at once.
    pub async fn block(
        &self,
        actor: &Actor,
        id: Uuid,
        reason: &str,
    ) -> Result<AccountRow, AccountError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(AccountError::Invalid(
                "reason must be 1 to 500 characters".into(),
            ));
        }
        if actor.id == id {
            return Err(AccountError::Conflict(
                "an admin cannot block their own account".into(),
            ));
        }
        let entry = self.audit_entry(
            actor,
            "account.block",
            id.to_string(),
            serde_json::json!({ "reason": reason }),
        );
        let (account, _sessions) = self
            .inner
            .db
            .accounts()
            .block_account(id, reason, &entry)
            .await
            .map_err(gone)?;
        self.accounts_gone(&[id], "blocked");
        Ok(account)
    }

    pub async fn unblock(&self, actor: &Actor, id: Uuid) -> Result<AccountRow, AccountError> {
        let entry = self.audit_entry(
            actor,
            "account.unblock",
            id.to_string(),
            serde_json::json!({}),
        );
        let account = self
            .inner
            .db
            .accounts()
            .unblock_account(id, &entry)
            .await
            .map_err(gone)?;
        self.inner.cache.update_account(&account);
        Ok(account)
    }

    fn audit_entry(
        &self,
        actor: &Actor,
        action: &str,
        target: String,
        detail: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            id: Uuid::now_v7(),
            actor_id: actor.id,
            actor_email: actor.email.clone(),
            action: action.to_string(),
            target,
            detail: detail.to_string(),
            at: self.now(),
        }
    }

    /// Writes an admin action taken elsewhere (e.g. a mail retry).
    pub async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: String,
        detail: serde_json::Value,
    ) -> Result<(), AccountError> {
        let entry = self.audit_entry(actor, action, target, detail);
        Ok(self.inner.db.accounts().record_audit(&entry).await?)
    }

    pub async fn audit_log(
        &self,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, AccountError> {
        Ok(self.inner.db.accounts().list_audit(before, limit).await?)
    }

    pub async fn login_counts(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Vec<LoginCount>, AccountError> {
        Ok(self.inner.db.accounts().login_counts(from, to).await?)
    }

    /// Writes the counters and last-seen times gathered in memory. What
    /// cannot be written is kept for the next flush.
    pub async fn flush(&self) -> Result<(), AccountError> {
        let counts = self.inner.logins.take();
        if let Err(err) = self.inner.db.accounts().add_login_counts(&counts).await {
            self.inner.logins.restore(counts);
            return Err(err.into());
        }
        let touched: Vec<(Uuid, DateTime<Utc>)> =
            std::mem::take(&mut *self.inner.touched.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if let Err(err) = self.inner.db.accounts().touch_sessions(&touched).await {
            let mut pending = self.inner.touched.lock().unwrap_or_else(|p| p.into_inner());
            for (id, at) in touched {
                pending.entry(id).or_insert(at);
            }
            return Err(err.into());
        }
        Ok(())
    }

    /// Deletes guests older than `retention` that hold no seat, with their
    /// sessions; returns how many.
    pub async fn reap_guests(&self, retention: Duration) -> Result<usize, AccountError> {
        let cutoff =
            self.now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let reaped = self
            .inner
            .db
            .accounts()
            .reap_abandoned_guests(cutoff)
            .await?;
        if !reaped.is_empty() {
            self.accounts_gone(&reaped, "account_deleted");
            if let Some(m) = &self.inner.metrics {
                m.reaped.add(reaped.len() as u64, &[]);
            }
        }
        Ok(reaped.len())
    }

    pub fn cached_sessions(&self) -> usize {
        self.inner.cache.len()
    }
}

fn parse_email(text: &str) -> Result<Email, AccountError> {
    Email::parse(text).map_err(|e| AccountError::Invalid(format!("email: {e}")))
}

/// Accounts are found by the whole address in lower case.
fn email_key(email: &Email) -> String {
    email.as_str().to_lowercase()
}

fn invalid(err: crate::names::NameError) -> AccountError {
    AccountError::Invalid(err.to_string())
}

fn gone(err: StoreError) -> AccountError {
    match err {
        StoreError::NotFound => AccountError::NotFound("no such account".into()),
        other => other.into(),
    }
}
