//! Store tests: one suite, run on both backends, plus the schema comparison.

mod mail;
mod migrations;
mod suite;

/// Runs an async test body once per backend, each with a fresh database.
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
