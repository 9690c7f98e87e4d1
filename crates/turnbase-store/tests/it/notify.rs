//! The notification store on both backends: notices written with a game
//! change reach the game's people as read in that transaction; routing
//! happens once even when two routers race; routes are a leased queue
//! (a route whose worker died is claimed again when its lease ends, and
//! only the holder records an outcome); dead letters are requeued by
//! filter; old notifications are pruned; a turn is reminded once.

use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use turnbase_store::lobby::{GameState, StateChange};
use turnbase_store::notify::{
    Audience, Channel, Kind, NewNotice, NewRoute, RouteAttempt, RouteFilter, RouteOutcome,
    RouteStatus,
};
use turnbase_testkit::{DbKind, TestDb};
use uuid::Uuid;

fn t(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

const LEASE: Duration = Duration::from_secs(60);

fn notice(kind: Kind, to: Audience) -> NewNotice {
    NewNotice::new(kind, None, r#"{"n":1}"#.into(), to)
}

fn route(n: Uuid, account: Uuid, channel: Channel, due: i64) -> NewRoute {
    NewRoute {
        id: Uuid::now_v7(),
        notification_id: n,
        account_id: account,
        kind: Kind::AdminNotice,
        channel,
        target: Some("somewhere".into()),
        digest_key: None,
        due_at: t(due),
        delivered_at: None,
    }
}

fn attempt(route: Uuid, outcome: RouteOutcome) -> RouteAttempt {
    RouteAttempt {
        route_id: route,
        outcome,
        started_at: t(1),
        finished_at: t(2),
        status_code: Some(500),
        error: Some("no".into()),
        mail: None,
    }
}

async fn members_are_read_with_the_change_and_routing_happens_once(backend: DbKind) {
    let (_g, db) = TestDb::open_migrated(backend).await;
    let owner = crate::lobby::member(&db).await;
    let game = db
        .lobby()
        .create_game(&crate::lobby::new_game(owner, 4), owner)
        .await
        .expect("game");
    let moved = db
        .lobby()
        .transition_game(
            &StateChange {
                id: Uuid::now_v7(),
                game_id: game.id,
                from: GameState::Enrolling,
                to: GameState::Cancelled,
                actor_id: None,
                reason: "test".into(),
                at: t(5),
                notices: vec![NewNotice::new(
                    Kind::GameCancelled,
                    Some(game.id),
                    "{}".into(),
                    Audience::Members(game.id),
                )],
            },
            None,
        )
        .await
        .expect("store");
    assert!(moved.is_some());
    let store = db.notify();
    let unrouted = store.unrouted(None, 10).await.expect("unrouted");
    assert_eq!(unrouted.len(), 1, "the owner, once");
    let n = &unrouted[0].notification;
    assert_eq!(n.account_id, owner);
    assert_eq!(n.game_title.as_deref(), Some(game.title.as_str()));
    assert!(!unrouted[0].blocked);

    // Two routers race for the same notification: one writes its routes.
    // The first published its push route before routing (delivered).
    let mut pushed = route(n.id, owner, Channel::Push, 5);
    pushed.delivered_at = Some(t(5));
    let a = [pushed, route(n.id, owner, Channel::Email, 5)];
    let b = [route(n.id, owner, Channel::Push, 5)];
    let first = store.save_routes(&[n.id], &a, t(5)).await.expect("save");
    let second = store.save_routes(&[n.id], &b, t(5)).await.expect("save");
    assert_eq!(first.len(), 2);
    assert!(second.is_empty(), "already routed");
    assert!(store.unrouted(None, 10).await.expect("unrouted").is_empty());
    // The push route was delivered by the router; the email route is due.
    let (pushed, _) = store.route(a[0].id).await.expect("route");
    assert_eq!((pushed.status.as_str(), pushed.attempts), ("delivered", 1));
    let claimed = store
        .claim_routes(t(6), LEASE, "w1", 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].channel, "email");
    // Its worker died: the route is claimed again when the lease ends.
    assert!(
        store
            .claim_routes(t(65), LEASE, "w2", 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let retaken = store
        .claim_routes(t(66), LEASE, "w2", 10)
        .await
        .expect("claim");
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].id, a[1].id);
    // Only the holder records: the first worker's late finish changes
    // nothing.
    let held = store
        .finish_routes("w1", &[attempt(a[1].id, RouteOutcome::Delivered)])
        .await
        .expect("finish");
    assert_eq!(held, [false]);
    // Shutdown hands the route back without spending an attempt.
    store
        .release_route(a[1].id, "w2", t(67))
        .await
        .expect("release");
    let again = store
        .claim_routes(t(67), LEASE, "w3", 10)
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 0);
    let held = store
        .finish_routes("w3", &[attempt(a[1].id, RouteOutcome::Delivered)])
        .await
        .expect("finish");
    assert_eq!(held, [true]);
    let (record, attempts) = store.route(a[1].id).await.expect("route");
    assert_eq!(record.status, "delivered");
    assert_eq!(attempts.len(), 1);
}

async fn dead_letters_requeue_by_filter_and_old_notifications_go(backend: DbKind) {
    let (_g, db) = TestDb::open_migrated(backend).await;
    let (ann, bo) = (
        crate::lobby::member(&db).await,
        crate::lobby::member(&db).await,
    );
    let store = db.notify();
    store
        .write_notices(
            &[notice(Kind::AdminNotice, Audience::Users(vec![ann, bo]))],
            t(0),
        )
        .await
        .expect("write");
    let unrouted = store.unrouted(None, 10).await.expect("unrouted");
    let ids: Vec<Uuid> = unrouted.iter().map(|u| u.notification.id).collect();
    let routes: Vec<NewRoute> = unrouted
        .iter()
        .map(|u| {
            route(
                u.notification.id,
                u.notification.account_id,
                Channel::Webhook,
                0,
            )
        })
        .collect();
    store.save_routes(&ids, &routes, t(0)).await.expect("save");
    let claimed = store
        .claim_routes(t(1), LEASE, "w", 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    let failed: Vec<RouteAttempt> = claimed
        .iter()
        .map(|r| attempt(r.id, RouteOutcome::Failed))
        .collect();
    store.finish_routes("w", &failed).await.expect("finish");
    // Dead letters are left alone by claims.
    assert!(
        store
            .claim_routes(t(1_000), LEASE, "w", 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let dead = RouteFilter {
        status: Some(RouteStatus::Failed),
        limit: 10,
        ..RouteFilter::default()
    };
    assert_eq!(store.list_routes(&dead).await.expect("list").len(), 2);
    // Requeue only Ann's.
    let requeued = store
        .requeue_routes(
            &RouteFilter {
                account_id: Some(ann),
                limit: 10,
                ..RouteFilter::default()
            },
            t(2),
        )
        .await
        .expect("requeue");
    assert_eq!(requeued.len(), 1);
    let (record, _) = store.route(requeued[0]).await.expect("route");
    assert_eq!((record.status.as_str(), record.attempts), ("pending", 0));
    assert_eq!(record.attempts_total, 1);
    assert_eq!(store.list_routes(&dead).await.expect("list").len(), 1);
    let depths = store.route_depths().await.expect("depths");
    assert_eq!(depths, vec![("webhook".to_string(), 1)]);

    // The inbox: unread counts, read, read-all; then pruning by age.
    assert_eq!(store.unread_count(ann).await.expect("unread"), 1);
    let counts = store.unread_counts(&[ann, bo]).await.expect("counts");
    assert_eq!(counts.len(), 2);
    let mine = store.inbox(ann, None, true, 10).await.expect("inbox");
    assert!(store.mark_read(ann, mine[0].id, t(3)).await.expect("read"));
    assert!(
        !store
            .mark_read(bo, mine[0].id, t(3))
            .await
            .expect("not Bo's")
    );
    assert_eq!(store.unread_count(ann).await.expect("unread"), 0);
    assert_eq!(store.mark_all_read(bo, t(3)).await.expect("all"), 1);
    assert_eq!(
        store.prune_notifications(t(0), 100).await.expect("prune"),
        0
    );
    assert_eq!(
        store.prune_notifications(t(1), 100).await.expect("prune"),
        2
    );
    assert!(
        store
            .inbox(ann, None, false, 10)
            .await
            .expect("inbox")
            .is_empty()
    );
    assert!(
        store.route(requeued[0]).await.is_err(),
        "routes go with them"
    );
}

async fn a_turn_is_reminded_once_and_not_after_it_moved_on(backend: DbKind) {
    let (_g, db) = TestDb::open_migrated(backend).await;
    let owner = crate::lobby::member(&db).await;
    let game = db
        .lobby()
        .create_game(&crate::lobby::new_game(owner, 4), owner)
        .await
        .expect("game");
    let seat = Uuid::now_v7();
    turnbase_testkit::on_pool!(&db, |pool| {
        sqlx::query(
            "INSERT INTO game_players (id, game_id, account_id, is_bot, race_name, status, joined_at)
             VALUES ($1, $2, $3, FALSE, 'Ann', 'active', $4)",
        )
        .bind(seat)
        .bind(game.id)
        .bind(owner)
        .bind(t(0))
        .execute(pool)
        .await
        .expect("seat");
        sqlx::query(
            "INSERT INTO game_clocks (game_id, turn, opened_at, anchor_at, slot_at, due_at,
                 trigger, to_move, awaiting, extended, excused, paused_at, attempts, version,
                 updated_at)
             VALUES ($1, 3, $2, $2, NULL, $3, 'schedule', '[]', $4, FALSE, FALSE, NULL, 0, 0, $2)",
        )
        .bind(game.id)
        .bind(t(0))
        .bind(t(100))
        .bind(format!("[\"{seat}\"]"))
        .execute(pool)
        .await
        .expect("clock");
    });
    let store = db.notify();
    let due = store
        .reminder_candidates(t(10), t(200), 10)
        .await
        .expect("candidates");
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].turn, due[0].due_at), (3, t(100)));
    let remind = notice(Kind::OrdersDue, Audience::Users(vec![]));
    assert_eq!(
        store
            .remind(game.id, 3, &remind, t(60))
            .await
            .expect("remind"),
        Some(1)
    );
    assert_eq!(
        store
            .remind(game.id, 3, &remind, t(61))
            .await
            .expect("again"),
        None
    );
    assert!(
        store
            .reminder_candidates(t(10), t(200), 10)
            .await
            .expect("c")
            .is_empty()
    );
    let inbox = store.inbox(owner, None, false, 10).await.expect("inbox");
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].kind, "orders_due");
    // Past its deadline, or for a turn no longer open: nothing.
    assert_eq!(
        store.remind(game.id, 4, &remind, t(60)).await.expect("r"),
        None
    );
}

turnbase_testkit::both_backends!(
    members_are_read_with_the_change_and_routing_happens_once,
    dead_letters_requeue_by_filter_and_old_notifications_go,
    a_turn_is_reminded_once_and_not_after_it_moved_on,
);
