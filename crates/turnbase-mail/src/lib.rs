//! Turnbase mail: typed addresses ([`Email`]), templates with escaping
//! ([`template`]), the transactional outbox ([`MailService`]) and the
//! worker that delivers it over SMTP or into a folder ([`worker`],
//! [`sender`], [`smtp`]).

pub mod email;
pub mod sender;
pub mod service;
pub mod smtp;
pub mod template;
pub mod worker;

pub use email::Email;
pub use lettre::message::Mailbox;
pub use sender::{FileSender, MailSender, MessageSettings, SendError};
pub use service::{MailError, MailService, OutgoingMail};
pub use smtp::SmtpSender;
pub use worker::{MailWorker, WorkerConfig};
