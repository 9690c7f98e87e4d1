//! Migration behaviour on both backends and the cross-backend schema check.

use turnbase_store::schema::{self, Schema};
use turnbase_store::{Database, DatabaseOptions, Migration, StoreError};
use turnbase_testkit::{DbKind, TestDb};

async fn migrated_schema(backend: DbKind) -> Schema {
    let test_db = TestDb::new(backend).await;
    let db = Database::connect(&test_db.options).await.expect("connect");
    db.migrate().await.expect("migrate");
    let described = schema::describe(&db).await.expect("describe");
    db.close().await;
    described
}

#[tokio::test]
async fn sqlite_and_postgres_schemas_match() {
    let sqlite = migrated_schema(DbKind::Sqlite).await;
    let postgres = migrated_schema(DbKind::Postgres).await;
    assert!(sqlite.tables.contains_key("instance"), "{sqlite:#?}");
    assert!(
        sqlite.tables.contains_key("schema_migrations"),
        "{sqlite:#?}"
    );
    for (name, table) in &sqlite.tables {
        for (column, c) in &table.columns {
            assert!(
                !c.class.starts_with("other"),
                "{name}.{column} has a type outside the shared classes: {}",
                c.class
            );
        }
    }
    assert_eq!(sqlite, postgres);
}

/// A migration whose second statement fails after its first succeeded.
const GOOD: Migration = Migration {
    version: 1,
    name: "good",
    sql: "CREATE TABLE kept (id BIGINT PRIMARY KEY NOT NULL);",
};
const HALF_BAD: Migration = Migration {
    version: 2,
    name: "half_bad",
    sql: "CREATE TABLE half (id BIGINT PRIMARY KEY NOT NULL);
          INSERT INTO no_such_table VALUES (1);",
};

async fn run_custom(db: &Database, migrations: &[Migration]) -> Result<Vec<String>, StoreError> {
    let report = match db {
        Database::Sqlite(s) => s.migrate(migrations).await?,
        Database::Postgres(p) => p.migrate(migrations).await?,
    };
    Ok(report.applied)
}

async fn failed_migration_rolls_back_and_is_named(backend: DbKind) {
    let test_db = TestDb::new(backend).await;
    let db = Database::connect(&test_db.options).await.expect("connect");
    let err = run_custom(&db, &[GOOD, HALF_BAD])
        .await
        .expect_err("the second migration fails");
    assert!(
        matches!(&err, StoreError::MigrationFailed { name, .. } if name == "0002_half_bad"),
        "{err}"
    );
    assert!(err.to_string().contains("0002_half_bad"), "{err}");
    let tables = schema::describe(&db).await.expect("describe").tables;
    assert!(tables.contains_key("kept"), "the first migration stays");
    assert!(
        !tables.contains_key("half"),
        "the failed migration left nothing behind"
    );
    // Fixing the migration lets the next run continue where it stopped.
    let fixed = Migration {
        sql: "CREATE TABLE half (id BIGINT PRIMARY KEY NOT NULL);",
        ..HALF_BAD
    };
    let err = run_custom(&db, &[GOOD, fixed]).await;
    assert_eq!(err.expect("fixed run"), ["0002_half_bad"]);
    db.close().await;
}

async fn edited_migration_is_refused(backend: DbKind) {
    let test_db = TestDb::new(backend).await;
    let db = Database::connect(&test_db.options).await.expect("connect");
    run_custom(&db, &[GOOD]).await.expect("first run");
    let edited = Migration {
        sql: "CREATE TABLE kept (id BIGINT PRIMARY KEY NOT NULL, extra TEXT);",
        ..GOOD
    };
    let err = run_custom(&db, &[edited]).await.expect_err("edited");
    assert!(
        matches!(err, StoreError::MigrationChanged { ref name } if name == "0001_good"),
        "{err}"
    );
    db.close().await;
}

async fn database_from_a_newer_turnbase_is_refused(backend: DbKind) {
    let test_db = TestDb::new(backend).await;
    let db = Database::connect(&test_db.options).await.expect("connect");
    run_custom(
        &db,
        &[
            GOOD,
            Migration {
                version: 2,
                name: "future",
                sql: "SELECT 1;",
            },
        ],
    )
    .await
    .expect("a newer build migrated this database");
    let err = run_custom(&db, &[GOOD]).await.expect_err("older build");
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    assert!(err.to_string().contains("0002_future"), "{err}");
    db.close().await;
}

turnbase_testkit::both_backends!(
    failed_migration_rolls_back_and_is_named,
    edited_migration_is_refused,
    database_from_a_newer_turnbase_is_refused,
);

/// `sslmode=verify-full` with the server's CA connects over TLS; without
/// the CA the certificate is refused. scripts/test gives its throwaway
/// server a private CA; a server of your own without one skips this.
#[tokio::test]
async fn postgres_over_tls_checks_the_server_certificate() {
    let Ok(ca) = std::env::var("TURNBASE_TEST_POSTGRES_TLS_CA") else {
        eprintln!("skipped: TURNBASE_TEST_POSTGRES_TLS_CA is not set (scripts/test sets it)");
        return;
    };
    let server = turnbase_testkit::postgres_server_url();
    let with = |params: &str| {
        let separator = if server.contains('?') { '&' } else { '?' };
        DatabaseOptions::Postgres {
            url: format!("{server}{separator}{params}"),
            max_connections: 1,
            connect_timeout: std::time::Duration::from_secs(10),
            statement_timeout: std::time::Duration::from_secs(30),
        }
    };
    let db = Database::connect(&with(&format!("sslmode=verify-full&sslrootcert={ca}")))
        .await
        .expect("TLS with the server's CA");
    let Database::Postgres(pg) = &db else {
        panic!("a Postgres URL opens Postgres")
    };
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(pg.pool())
            .await
            .expect("query");
    assert!(encrypted, "the connection is encrypted");
    db.close().await;

    let err = Database::connect(&with("sslmode=verify-full"))
        .await
        .expect_err("the public roots do not know the test CA");
    let text = err.to_string().to_lowercase();
    assert!(text.contains("certificate"), "{text}");
}

#[tokio::test]
async fn unreachable_postgres_is_a_clear_error_without_the_password() {
    let options = DatabaseOptions::Postgres {
        url: "postgres://turnbase:hunter2@127.0.0.1:1/turnbase".into(),
        max_connections: 1,
        connect_timeout: std::time::Duration::from_secs(2),
        statement_timeout: std::time::Duration::from_secs(30),
    };
    let err = Database::connect(&options)
        .await
        .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "cannot open the database at postgres://turnbase:***@127.0.0.1:1/turnbase"
        ),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn sqlite_in_an_unwritable_place_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "not a folder").expect("write");
    let options = DatabaseOptions::Sqlite {
        path: blocker.join("sub").join("turnbase.db"),
        busy_timeout: std::time::Duration::from_secs(1),
        max_connections: 1,
    };
    let err = Database::connect(&options)
        .await
        .expect_err("parent is a file");
    assert!(
        err.to_string().starts_with("cannot open the database at "),
        "{err}"
    );
}
