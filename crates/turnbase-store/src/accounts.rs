//! Accounts as the store sees them: accounts, sessions, sign-in codes, the
//! admin audit log, game seats (for the guest reaper's rule) and daily
//! sign-in counts. Values arrive already validated by the accounts crate.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{StoreResult, Tx};

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Player,
    /// May use `/api/v1/admin`.
    Admin,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Player, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Player => "player",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl TryFrom<String> for Role {
    type Error = String;

    fn try_from(text: String) -> Result<Role, String> {
        Role::parse(&text).ok_or_else(|| format!("unknown role {text:?}"))
    }
}

impl PartialEq<&str> for Role {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccountRow {
    pub id: Uuid,
    pub email: Option<String>,
    pub display_name: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub is_guest: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub blocked_at: Option<DateTime<Utc>>,
    pub blocked_reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewAccount {
    pub id: Uuid,
    pub email: Option<String>,
    pub display_name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// Read from columns prefixed `s_` (selected beside an account's).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    #[sqlx(rename = "s_id")]
    pub id: Uuid,
    #[sqlx(rename = "s_account_id")]
    pub account_id: Uuid,
    #[sqlx(rename = "s_device_name")]
    pub device_name: String,
    #[sqlx(rename = "s_country")]
    pub country: Option<String>,
    #[sqlx(rename = "s_created_at")]
    pub created_at: DateTime<Utc>,
    #[sqlx(rename = "s_last_seen_at")]
    pub last_seen_at: DateTime<Utc>,
}

/// A session to create; its account is given beside it.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub token_hash: Vec<u8>,
    pub device_name: String,
    pub country: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A session found by its token, with its account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionWithAccount {
    #[sqlx(rename = "s_token_hash")]
    pub token_hash: Vec<u8>,
    #[sqlx(flatten)]
    pub session: SessionRow,
    #[sqlx(flatten)]
    pub account: AccountRow,
}

#[derive(Debug, Clone)]
pub struct NewLoginCode {
    /// Lower-cased address.
    pub email: String,
    pub code_hash: Vec<u8>,
    pub tries: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The result of checking a sign-in code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// The code matched and is used up.
    Accepted,
    /// Wrong code; this many tries remain (0: the code is gone).
    Rejected { tries_left: i64 },
    /// No live code for the address (never asked, expired or used up).
    Missing,
}

/// The result of a sign-in by a verified address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailSignIn {
    SignedIn { account: AccountRow, created: bool },
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    Done(AccountRow),
    NotGuest,
    EmailTaken,
}

/// Which accounts to list: newest first, before the id given (keyset
/// paging).
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    /// Matches the email or display name, case-insensitively.
    pub search: Option<String>,
    pub guest: Option<bool>,
    pub blocked: Option<bool>,
    pub role: Option<Role>,
    pub before: Option<Uuid>,
    pub limit: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: Uuid,
    pub actor_id: Uuid,
    pub actor_email: Option<String>,
    pub action: String,
    pub target: String,
    /// JSON text.
    pub detail: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LoginCount {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub country: String,
    pub logins: i64,
}

#[async_trait::async_trait]
pub trait AccountStore: Send + Sync {
    /// Stores a sign-in code for `code.email` inside `tx` (with the mail
    /// that carries it), replacing any earlier one.
    async fn put_login_code(&self, tx: &mut Tx, code: &NewLoginCode) -> StoreResult<()>;

    /// Checks a code for `email` and spends a try: a match of the stored
    /// hash with any of `code_hashes` (the same code hashed the ways the
    /// stored row may have been written) uses the code up; the last wrong
    /// try deletes it. The hashes are compared in constant time.
    async fn check_login_code(
        &self,
        email: &str,
        code_hashes: &[[u8; 32]],
        now: DateTime<Utc>,
    ) -> StoreResult<CodeCheck>;

    /// Signs in the account of `account.email`, creating it from `account`
    /// on first use, and opens `session` for it.
    async fn sign_in_by_email(
        &self,
        account: &NewAccount,
        session: &NewSession,
    ) -> StoreResult<EmailSignIn> {
        self.sign_in_by_email_telling(account, session, None).await
    }

    /// [`AccountStore::sign_in_by_email`] that also writes `new_device`
    /// (to the account signing in) with the session when the account has
    /// other sessions, none of them on a device of this name.
    async fn sign_in_by_email_telling(
        &self,
        account: &NewAccount,
        session: &NewSession,
        new_device: Option<&crate::notify::NewNotice>,
    ) -> StoreResult<EmailSignIn>;

    /// Creates guest accounts, each with its first session, in one
    /// transaction (callers batch concurrent sign-ups into one write).
    async fn create_guests(&self, guests: &[(NewAccount, NewSession)]) -> StoreResult<()>;

    /// [`AccountStore::create_guests`] for one guest.
    async fn create_guest(&self, account: &NewAccount, session: &NewSession) -> StoreResult<()> {
        self.create_guests(&[(account.clone(), session.clone())])
            .await
    }

    async fn session_by_token(&self, token_hash: &[u8]) -> StoreResult<Option<SessionWithAccount>>;

    /// The sessions seen most recently, for warming a cache.
    async fn recent_sessions(&self, limit: i64) -> StoreResult<Vec<SessionWithAccount>>;

    /// Moves sessions' last-seen times forward (never back).
    async fn touch_sessions(&self, seen: &[(Uuid, DateTime<Utc>)]) -> StoreResult<()>;

    async fn sessions(&self, account_id: Uuid) -> StoreResult<Vec<SessionRow>>;

    /// Deletes one session of the account; false if it has no such session.
    async fn delete_session(&self, account_id: Uuid, session_id: Uuid) -> StoreResult<bool>;

    /// Deletes every session of the account but `keep`; returns their ids.
    async fn delete_sessions(&self, account_id: Uuid, keep: Option<Uuid>)
    -> StoreResult<Vec<Uuid>>;

    async fn rename_account(
        &self,
        id: Uuid,
        display_name: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<AccountRow>;

    /// Gives a guest account an email address; the id (and with it every
    /// seat) is kept.
    async fn upgrade_guest(
        &self,
        id: Uuid,
        email: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Upgrade>;

    async fn account(&self, id: Uuid) -> StoreResult<AccountRow>;

    async fn list_accounts(&self, filter: &AccountFilter) -> StoreResult<Vec<AccountRow>>;

    async fn session_count(&self, account_id: Uuid) -> StoreResult<i64>;

    /// Blocks the account, deletes its sessions, rejects its pending game
    /// applications and writes `audit`, in one transaction; returns the
    /// account and the deleted sessions' ids.
    async fn block_account(
        &self,
        id: Uuid,
        reason: &str,
        audit: &AuditEntry,
    ) -> StoreResult<(AccountRow, Vec<Uuid>)>;

    /// Lifts a block and writes `audit`, in one transaction.
    async fn unblock_account(&self, id: Uuid, audit: &AuditEntry) -> StoreResult<AccountRow>;

    /// Makes the account of `account.email` an admin, creating it from
    /// `account` if there is none.
    async fn ensure_admin(&self, account: &NewAccount) -> StoreResult<AccountRow>;

    async fn record_audit(&self, entry: &AuditEntry) -> StoreResult<()>;

    /// Newest first, before the id given.
    async fn list_audit(&self, before: Option<Uuid>, limit: i64) -> StoreResult<Vec<AuditEntry>>;

    /// Deletes guest accounts created before `created_before` that hold no
    /// seat in any game and own none; their sessions (and pending
    /// applications) go with them. Returns their ids.
    async fn reap_abandoned_guests(&self, created_before: DateTime<Utc>) -> StoreResult<Vec<Uuid>>;

    /// Adds to the daily counts in one transaction.
    async fn add_login_counts(&self, counts: &[LoginCount]) -> StoreResult<()>;

    /// Counts for the days from `from` to `to` (inclusive, `YYYY-MM-DD`).
    async fn login_counts(&self, from: &str, to: &str) -> StoreResult<Vec<LoginCount>>;
}
