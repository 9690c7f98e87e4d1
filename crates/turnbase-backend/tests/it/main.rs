//! Backend API tests: a real backend on loopback per test, on SQLite and on
//! Postgres.

mod admin_mail;
mod api;
mod helpers;

/// Runs an async test body once per backend.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(turnbase_testkit::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(turnbase_testkit::Backend::Postgres).await;
                }
            )*
        }
    };
}
pub(crate) use both_backends;
