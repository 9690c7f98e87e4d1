//! The mail worker against a real SMTP server (aiosmtpd) and, for faults
//! aiosmtpd cannot produce on demand, a scripted SMTP listener; on SQLite
//! and Postgres.

mod faulty_smtp;
mod worker;

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(turnbase_testkit::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(turnbase_testkit::Backend::Postgres).await;
                }
            )*
        }
    };
}
pub(crate) use both_backends;
