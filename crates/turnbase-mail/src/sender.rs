//! Turning an outbox row into a message and handing it to a transport:
//! SMTP (`smtp`), or a folder of `.eml` files for `turnbase up`.

use std::path::PathBuf;

use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use turnbase_store::mail::ClaimedMail;
use uuid::Uuid;

/// How a send went wrong, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later: 4xx replies, timeouts, connection trouble.
    #[error("{message}")]
    Transient { code: Option<u16>, message: String },
    /// Will never work: 5xx replies, a message that cannot be built.
    #[error("{message}")]
    Permanent { code: Option<u16>, message: String },
}

/// The relay's answer to a message it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub code: Option<u16>,
}

#[async_trait::async_trait]
pub trait MailSender: Send + Sync {
    async fn send(&self, id: Uuid, message: Message) -> Result<Accepted, SendError>;
    /// Where mail goes, for logs.
    fn describe(&self) -> String;
}

/// What every message shares: the sender and the Message-ID domain.
#[derive(Debug, Clone)]
pub struct MessageSettings {
    pub from: Mailbox,
    pub message_id_domain: String,
}

impl MessageSettings {
    pub fn new(from: Mailbox) -> Self {
        let message_id_domain = from.email.domain().to_string();
        Self {
            from,
            message_id_domain,
        }
    }
}

/// The Message-ID of an outbox row: the same for every attempt, so a
/// receiver can drop the duplicates that at-least-once delivery allows.
pub fn message_id(id: Uuid, domain: &str) -> String {
    format!("<{}@{domain}>", id.simple())
}

pub fn build_message(settings: &MessageSettings, mail: &ClaimedMail) -> Result<Message, SendError> {
    let permanent = |message: String| SendError::Permanent {
        code: None,
        message,
    };
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|e| permanent(format!("recipient {:?}: {e}", mail.to)))?;
    let builder = Message::builder()
        .from(settings.from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .message_id(Some(message_id(mail.id, &settings.message_id_domain)));
    let text = SinglePart::builder()
        .header(ContentType::TEXT_PLAIN)
        .body(mail.text_body.clone());
    let built = match &mail.html_body {
        Some(html) => builder.multipart(
            MultiPart::alternative().singlepart(text).singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_HTML)
                    .body(html.clone()),
            ),
        ),
        None => builder.singlepart(text),
    };
    built.map_err(|e| permanent(format!("cannot build the message: {e}")))
}

/// Writes each message as `<outbox id>.eml` into a folder: `turnbase up`'s
/// default, so sign-in codes work without a mail server.
pub struct FileSender {
    dir: PathBuf,
}

impl FileSender {
    /// The folder is made 0700 (or narrowed to it) and every mail is
    /// written 0600: mails carry sign-in codes.
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        turnbase_core::private_fs::create_private_dir(&dir)?;
        Ok(Self { dir })
    }
}

#[async_trait::async_trait]
impl MailSender for FileSender {
    async fn send(&self, id: Uuid, message: Message) -> Result<Accepted, SendError> {
        let path = self.dir.join(format!("{id}.eml"));
        let partial = self.dir.join(format!(".{id}.eml.partial"));
        let bytes = message.formatted();
        // Written aside and renamed, so a reader never sees half a mail.
        let written = async {
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(turnbase_core::private_fs::FILE_MODE)
                .open(&partial)
                .await?;
            tokio::io::AsyncWriteExt::write_all(&mut file, &bytes).await?;
            drop(file);
            tokio::fs::rename(&partial, &path).await
        }
        .await;
        match written {
            Ok(()) => {
                tracing::info!(path = %path.display(), "mail written to the mail folder");
                Ok(Accepted { code: None })
            }
            Err(e) => Err(SendError::Transient {
                code: None,
                message: format!("cannot write {}: {e}", path.display()),
            }),
        }
    }

    fn describe(&self) -> String {
        format!("folder {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(html: Option<&str>) -> ClaimedMail {
        ClaimedMail {
            id: Uuid::from_u128(0x0123),
            to: "player@example.org".into(),
            subject: "Your turn".into(),
            text_body: "Turn 3 has run.".into(),
            html_body: html.map(String::from),
            attempts: 0,
        }
    }

    #[test]
    fn messages_carry_a_stable_message_id_and_both_bodies() {
        let settings = MessageSettings::new(
            "Turnbase <noreply@turnbase.example>"
                .parse()
                .expect("mailbox"),
        );
        let text = String::from_utf8(
            build_message(&settings, &mail(Some("<p>Turn 3</p>")))
                .expect("builds")
                .formatted(),
        )
        .expect("utf-8");
        assert!(
            text.contains("Message-ID: <00000000000000000000000000000123@turnbase.example>"),
            "{text}"
        );
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(
            text.contains("Turn 3 has run.") && text.contains("<p>Turn 3</p>"),
            "{text}"
        );
        let plain = String::from_utf8(
            build_message(&settings, &mail(None))
                .expect("builds")
                .formatted(),
        )
        .expect("utf-8");
        assert!(!plain.contains("multipart"), "{plain}");
        let mut bad = mail(None);
        bad.to = "not an address".into();
        assert!(matches!(
            build_message(&settings, &bad),
            Err(SendError::Permanent { .. })
        ));
    }
}
