//! The account store on both backends: every statement of `AccountStore`
//! runs here against SQLite and Postgres.

use chrono::{TimeZone as _, Utc};
use turnbase_store::accounts::{
    AccountFilter, AuditEntry, CodeCheck, EmailSignIn, LoginCount, NewAccount, NewLoginCode,
    NewSession, Role, Upgrade,
};
use turnbase_store::{Database, StoreError};
use turnbase_testkit::{DbKind, TestDb};
use uuid::Uuid;

fn t(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

async fn open(backend: DbKind) -> (TestDb, Database) {
    TestDb::open_migrated(backend).await
}

fn account(email: Option<&str>, name: &str, at: i64) -> NewAccount {
    NewAccount {
        id: Uuid::now_v7(),
        email: email.map(String::from),
        display_name: name.into(),
        role: Role::Player,
        created_at: t(at),
    }
}

fn session(token: u8, at: i64) -> NewSession {
    NewSession {
        id: Uuid::now_v7(),
        token_hash: vec![token; 32],
        device_name: format!("device {token}"),
        country: Some("SE".into()),
        created_at: t(at),
    }
}

fn audit(actor: Uuid, action: &str, target: Uuid, at: i64) -> AuditEntry {
    AuditEntry {
        id: Uuid::now_v7(),
        actor_id: actor,
        actor_email: Some("admin@example.org".into()),
        action: action.into(),
        target: target.to_string(),
        detail: "{}".into(),
        at: t(at),
    }
}

async fn guest(db: &Database, token: u8, at: i64) -> Uuid {
    let a = account(None, "Guest", at);
    db.accounts()
        .create_guest(&a, &session(token, at))
        .await
        .expect("guest");
    a.id
}

async fn seat(db: &Database, account_id: Uuid) {
    crate::lobby::seat_in_new_game(db, account_id).await;
}

async fn login_codes_are_checked_and_spent(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let store = db.accounts();
    let code = |hash: u8, tries| NewLoginCode {
        email: "ann@example.org".into(),
        code_hash: vec![hash; 32],
        tries,
        created_at: t(0),
        expires_at: t(600),
    };
    let put = |c: NewLoginCode| {
        let db = db.clone();
        async move {
            let mut tx = db.begin().await.expect("begin");
            db.accounts()
                .put_login_code(&mut tx, &c)
                .await
                .expect("put");
            tx.commit().await.expect("commit");
        }
    };
    let check = |hash: u8, at| {
        let db = db.clone();
        async move {
            db.accounts()
                .check_login_code("ann@example.org", &[[9; 32], [hash; 32]], t(at))
                .await
        }
    };
    assert_eq!(check(1, 1).await.expect("check"), CodeCheck::Missing);

    // Any of the candidates may match: the second here, the first below.
    put(code(1, 3)).await;
    assert_eq!(
        check(2, 1).await.expect("check"),
        CodeCheck::Rejected { tries_left: 2 }
    );
    assert_eq!(check(1, 2).await.expect("check"), CodeCheck::Accepted);
    assert_eq!(
        check(1, 3).await.expect("check"),
        CodeCheck::Missing,
        "used up"
    );
    put(code(9, 3)).await;
    assert_eq!(check(4, 2).await.expect("check"), CodeCheck::Accepted);

    put(code(1, 2)).await;
    assert_eq!(
        check(2, 1).await.expect("check"),
        CodeCheck::Rejected { tries_left: 1 }
    );
    assert_eq!(
        check(2, 1).await.expect("check"),
        CodeCheck::Rejected { tries_left: 0 }
    );
    assert_eq!(
        check(1, 1).await.expect("check"),
        CodeCheck::Missing,
        "no tries left"
    );

    put(code(1, 5)).await;
    put(code(3, 5)).await;
    assert_eq!(
        check(1, 1).await.expect("check"),
        CodeCheck::Rejected { tries_left: 4 },
        "a new code replaces the old one"
    );
    assert_eq!(
        check(3, 600).await.expect("check"),
        CodeCheck::Missing,
        "expired"
    );

    // A code stored in a transaction that rolls back does not exist.
    let mut tx = db.begin().await.expect("begin");
    store
        .put_login_code(&mut tx, &code(7, 5))
        .await
        .expect("put");
    tx.rollback().await.expect("rollback");
    assert_eq!(check(7, 1).await.expect("check"), CodeCheck::Missing);
}

async fn email_sign_in_creates_once_and_refuses_blocked(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let store = db.accounts();
    let first = account(Some("bo@example.org"), "Bo", 0);
    let EmailSignIn::SignedIn {
        account: a,
        created,
    } = store
        .sign_in_by_email(&first, &session(1, 0))
        .await
        .expect("sign in")
    else {
        panic!("not blocked yet");
    };
    assert!(created);
    assert_eq!(a.id, first.id);
    assert!(!a.is_guest);
    let again = account(Some("bo@example.org"), "Other", 5);
    let EmailSignIn::SignedIn {
        account: b,
        created,
    } = store
        .sign_in_by_email(&again, &session(2, 5))
        .await
        .expect("sign in")
    else {
        panic!("not blocked yet");
    };
    assert!(!created);
    assert_eq!(b.id, first.id, "the same account");
    assert_eq!(b.display_name, "Bo");
    assert_eq!(store.session_count(a.id).await.expect("count"), 2);

    let admin = Uuid::now_v7();
    let (blocked, sessions) = store
        .block_account(a.id, "cheating", &audit(admin, "block", a.id, 10))
        .await
        .expect("block");
    assert_eq!(blocked.blocked_reason.as_deref(), Some("cheating"));
    assert_eq!(sessions.len(), 2);
    assert_eq!(store.session_count(a.id).await.expect("count"), 0);
    assert_eq!(
        store
            .sign_in_by_email(&again, &session(3, 20))
            .await
            .expect("sign in"),
        EmailSignIn::Blocked
    );
    assert!(
        store
            .session_by_token(&[3; 32])
            .await
            .expect("lookup")
            .is_none()
    );
    let unblocked = store
        .unblock_account(a.id, &audit(admin, "unblock", a.id, 30))
        .await
        .expect("unblock");
    assert!(unblocked.blocked_at.is_none());
    let log = store.list_audit(None, 10).await.expect("audit");
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["unblock", "block"], "newest first");
    let page = store
        .list_audit(Some(log[0].id), 10)
        .await
        .expect("audit page");
    assert_eq!(page.len(), 1);
    assert!(matches!(
        store
            .block_account(Uuid::now_v7(), "x", &audit(admin, "block", admin, 40))
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.list_audit(None, 10).await.expect("audit").len(),
        2,
        "a failed action writes no audit entry"
    );
}

async fn sessions_resolve_touch_and_delete(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let store = db.accounts();
    let a = guest(&db, 1, 0).await;
    let b = guest(&db, 9, 0).await;
    let found = store
        .session_by_token(&[1; 32])
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.account.id, a);
    assert!(found.account.is_guest);
    assert_eq!(found.session.country.as_deref(), Some("SE"));
    assert!(
        store
            .session_by_token(&[2; 32])
            .await
            .expect("lookup")
            .is_none()
    );

    // An id that names no session is ignored.
    let unknown = Uuid::now_v7();
    store
        .sign_in_by_email(&account(Some("x@example.org"), "X", 0), &session(5, 0))
        .await
        .expect("sign in");
    let first = found.session.id;
    store
        .touch_sessions(&[(first, t(100)), (unknown, t(100))])
        .await
        .expect("touch");
    store
        .touch_sessions(&[(first, t(50))])
        .await
        .expect("touch");
    let listed = store.sessions(a).await.expect("sessions");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_seen_at, t(100), "never moves back");
    let recent = store.recent_sessions(10).await.expect("recent");
    assert_eq!(recent[0].session.id, first, "most recently seen first");
    assert_eq!(recent.len(), 3);

    assert!(
        !store.delete_session(b, first).await.expect("delete"),
        "another account's session is not touched"
    );
    assert!(store.delete_session(a, first).await.expect("delete"));
    assert!(store.sessions(a).await.expect("sessions").is_empty());
}

async fn delete_sessions_keeps_the_named_one(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let store = db.accounts();
    let new = account(Some("cy@example.org"), "Cy", 0);
    let mut ids = Vec::new();
    for token in 1..=3 {
        let s = session(token, i64::from(token));
        ids.push(s.id);
        store.sign_in_by_email(&new, &s).await.expect("sign in");
    }
    let mut gone = store
        .delete_sessions(new.id, Some(ids[1]))
        .await
        .expect("revoke others");
    gone.sort();
    assert_eq!(gone, vec![ids[0], ids[2]]);
    let left = store.sessions(new.id).await.expect("sessions");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, ids[1]);
    assert_eq!(
        store.delete_sessions(new.id, None).await.expect("all"),
        vec![ids[1]]
    );
}

async fn rename_upgrade_and_admin(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let store = db.accounts();
    let g = guest(&db, 1, 0).await;
    let renamed = store
        .rename_account(g, "Captain", t(5))
        .await
        .expect("rename");
    assert_eq!(renamed.display_name, "Captain");
    assert!(matches!(
        store.rename_account(Uuid::now_v7(), "X", t(5)).await,
        Err(StoreError::NotFound)
    ));
    seat(&db, g).await;

    store
        .sign_in_by_email(&account(Some("taken@example.org"), "T", 0), &session(2, 0))
        .await
        .expect("sign in");
    assert_eq!(
        store
            .upgrade_guest(g, "taken@example.org", t(6))
            .await
            .expect("upgrade"),
        Upgrade::EmailTaken
    );
    let Upgrade::Done(up) = store
        .upgrade_guest(g, "cap@example.org", t(7))
        .await
        .expect("upgrade")
    else {
        panic!("the upgrade should succeed");
    };
    assert_eq!(up.id, g, "the account id is kept");
    assert!(!up.is_guest);
    assert_eq!(up.email.as_deref(), Some("cap@example.org"));
    assert_eq!(
        store
            .upgrade_guest(g, "again@example.org", t(8))
            .await
            .expect("upgrade"),
        Upgrade::NotGuest
    );

    let admin = store
        .ensure_admin(&account(Some("boss@example.org"), "Boss", 0))
        .await
        .expect("admin");
    assert_eq!(admin.role, Role::Admin);
    let promoted = store
        .ensure_admin(&account(Some("taken@example.org"), "ignored", 0))
        .await
        .expect("promote");
    assert_eq!(promoted.role, Role::Admin);
    assert_eq!(
        promoted.display_name, "T",
        "an existing account keeps its name"
    );
    let again = store
        .ensure_admin(&account(Some("boss@example.org"), "Boss", 0))
        .await
        .expect("idempotent");
    assert_eq!(again.id, admin.id);

    let all = store
        .list_accounts(&AccountFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 4, "with the owner of the game the guest sits in");
    let admins = store
        .list_accounts(&AccountFilter {
            role: Some(Role::Admin),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(admins.len(), 2);
    let found = store
        .list_accounts(&AccountFilter {
            search: Some("CAP".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("search");
    assert_eq!(found.len(), 1, "matches the name Captain and cap@…");
    let none = store
        .list_accounts(&AccountFilter {
            search: Some("%".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("search");
    assert!(none.is_empty(), "a wildcard is matched literally");
    let page1 = store
        .list_accounts(&AccountFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("page");
    let page2 = store
        .list_accounts(&AccountFilter {
            limit: 2,
            before: Some(page1[1].id),
            ..Default::default()
        })
        .await
        .expect("page");
    assert_eq!(page1.len() + page2.len(), 4);
    assert!(page2.iter().all(|a| page1.iter().all(|b| a.id != b.id)));
    let blocked = store
        .list_accounts(&AccountFilter {
            blocked: Some(true),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(blocked.is_empty());
    let guests = store
        .list_accounts(&AccountFilter {
            guest: Some(false),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        guests.len(),
        4,
        "the upgraded guest is no longer one (with the game owner)"
    );
}

async fn reaper_takes_only_old_seatless_guests(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let store = db.accounts();
    let old = guest(&db, 1, 0).await;
    let young = guest(&db, 2, 1000).await;
    let seated = guest(&db, 3, 0).await;
    seat(&db, seated).await;
    // A guest who owns a game is kept too (games keep their owner).
    let owner = guest(&db, 5, 0).await;
    db.lobby()
        .create_game(&crate::lobby::new_game(owner, 2), owner)
        .await
        .expect("a game");
    let member = account(Some("m@example.org"), "M", 0);
    store
        .sign_in_by_email(&member, &session(4, 0))
        .await
        .expect("member");

    let reaped = store.reap_abandoned_guests(t(500)).await.expect("reap");
    assert_eq!(reaped, vec![old]);
    assert!(matches!(
        store.account(old).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .session_by_token(&[1; 32])
            .await
            .expect("lookup")
            .is_none(),
        "sessions go with the account"
    );
    for kept in [young, seated, member.id] {
        store.account(kept).await.expect("kept");
    }
    assert!(
        store
            .reap_abandoned_guests(t(500))
            .await
            .expect("reap")
            .is_empty()
    );
}

async fn login_counts_add_up(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let store = db.accounts();
    let c = |day: &str, country: &str, logins| LoginCount {
        day: day.into(),
        country: country.into(),
        logins,
    };
    store
        .add_login_counts(&[c("2026-11-24", "SE", 2), c("2026-11-25", "GB", 1)])
        .await
        .expect("add");
    store
        .add_login_counts(&[c("2026-11-25", "GB", 4), c("2026-11-25", "ZZ", 1)])
        .await
        .expect("add");
    store.add_login_counts(&[]).await.expect("nothing");
    let counts = store
        .login_counts("2026-11-25", "2026-11-25")
        .await
        .expect("counts");
    assert_eq!(
        counts,
        vec![c("2026-11-25", "GB", 5), c("2026-11-25", "ZZ", 1)]
    );
    assert_eq!(
        store
            .login_counts("2026-11-01", "2026-11-30")
            .await
            .expect("counts")
            .len(),
        3
    );
}

async fn guests_are_created_in_batches(backend: DbKind) {
    let (_g, db) = open(backend).await;
    let store = db.accounts();
    store.create_guests(&[]).await.expect("nothing to do");
    let batch: Vec<_> = (1..=130u8)
        .map(|i| {
            (
                account(None, &format!("G{i}"), i64::from(i)),
                session(i, i64::from(i)),
            )
        })
        .collect();
    store.create_guests(&batch).await.expect("a batch");
    for (a, s) in &batch {
        let found = store
            .session_by_token(&s.token_hash)
            .await
            .expect("lookup")
            .expect("each guest has its session");
        assert_eq!(found.account.id, a.id);
        assert_eq!(found.account.display_name, a.display_name);
        assert!(found.account.is_guest);
        assert_eq!(found.account.email, None);
        assert_eq!(found.session.id, s.id);
    }
    // One bad row fails the whole batch, which writes nothing.
    let mut dup = vec![(account(None, "New", 0), session(200, 0))];
    dup.push(batch[0].clone());
    assert!(store.create_guests(&dup).await.is_err());
    assert!(
        store
            .session_by_token(&[200; 32])
            .await
            .expect("lookup")
            .is_none()
    );
}

turnbase_testkit::both_backends!(
    guests_are_created_in_batches,
    login_codes_are_checked_and_spent,
    email_sign_in_creates_once_and_refuses_blocked,
    sessions_resolve_touch_and_delete,
    delete_sessions_keeps_the_named_one,
    rename_upgrade_and_admin,
    reaper_takes_only_old_seatless_guests,
    login_counts_add_up,
);
