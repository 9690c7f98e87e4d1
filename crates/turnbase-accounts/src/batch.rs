//! Group commit for guest sign-ups: concurrent sign-ups queue here and one
//! task writes whatever has gathered in one transaction. Under light load
//! a batch is a single sign-up, so nothing waits; under heavy load the
//! database does one commit for many sign-ups (on SQLite, whose writes are
//! serial, this is what lets sign-ups scale).

use tokio::sync::{mpsc, oneshot};
use turnbase_store::accounts::{NewAccount, NewSession};
use turnbase_store::{Database, StoreError};

/// The most sign-ups one transaction writes.
const MAX_BATCH: usize = 128;

/// What every caller of a batch hears: on failure, whether the database was
/// unavailable, and why.
type Reply = oneshot::Sender<Result<(), (bool, String)>>;

#[derive(Clone)]
pub struct GuestWriter {
    queue: mpsc::Sender<(NewAccount, NewSession, Reply)>,
}

impl GuestWriter {
    /// Starts the writing task; it ends when every handle is dropped.
    pub fn start(db: Database) -> Self {
        let (queue, mut rx) = mpsc::channel::<(NewAccount, NewSession, Reply)>(MAX_BATCH * 4);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (guests, replies): (Vec<_>, Vec<_>) =
                    batch.drain(..).map(|(a, s, reply)| ((a, s), reply)).unzip();
                let result = db
                    .accounts()
                    .create_guests(&guests)
                    .await
                    .map_err(|e| match e {
                        // Shared by every caller of the batch, so kept as
                        // text, but an outage stays an outage.
                        StoreError::Unavailable(why) => (true, why),
                        other => (false, other.to_string()),
                    });
                for reply in replies {
                    // A caller that went away no longer needs the answer.
                    let _ = reply.send(result.clone());
                }
            }
        });
        Self { queue }
    }

    pub async fn create(&self, account: NewAccount, session: NewSession) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((account, session, reply))
            .await
            .map_err(|_| StoreError::Unexpected(anyhow::anyhow!("the guest writer has stopped")))?;
        answer
            .await
            .map_err(|_| StoreError::Unexpected(anyhow::anyhow!("the guest writer has stopped")))?
            .map_err(|(unavailable, why)| {
                if unavailable {
                    StoreError::Unavailable(why)
                } else {
                    StoreError::Unexpected(anyhow::anyhow!("creating guests: {why}"))
                }
            })
    }
}
