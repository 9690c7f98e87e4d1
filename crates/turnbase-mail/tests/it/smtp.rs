//! The SMTP sender's own connections: reuse, relays that close them, and
//! authentication against a real server.

use std::time::Duration;

use turnbase_mail::sender::{SendError, build_message};
use turnbase_mail::{MailSender as _, MessageSettings, SmtpSender};
use turnbase_store::mail::ClaimedMail;
use turnbase_testkit::SmtpSink;
use uuid::Uuid;

use crate::faulty_smtp::{Behaviour, FaultySmtp};

fn message(n: u32) -> (Uuid, lettre::Message) {
    let settings =
        MessageSettings::new("Turnbase <noreply@turnbase.test>".parse().expect("mailbox"));
    let mail = ClaimedMail {
        id: Uuid::now_v7(),
        to: format!("player{n}@example.org"),
        subject: format!("Turn {n}"),
        text_body: format!("Turn {n} has run."),
        html_body: None,
        attempts: 0,
    };
    (mail.id, build_message(&settings, &mail).expect("builds"))
}

fn sender(url: &str) -> SmtpSender {
    SmtpSender::new(url, Duration::from_secs(5), 1, None).expect("valid URL")
}

#[tokio::test]
async fn one_connection_carries_message_after_message() {
    let server = FaultySmtp::start(vec![Behaviour::Accept]).await;
    let smtp = sender(&server.url());
    for n in 0..5 {
        let (id, m) = message(n);
        smtp.send(id, m).await.expect("accepted");
    }
    assert_eq!(*server.accepted.lock().expect("lock"), 5);
    assert_eq!(*server.connections.lock().expect("lock"), 1);
}

#[tokio::test]
async fn a_connection_the_relay_closed_is_not_reused() {
    // Every connection takes one message and is closed by the relay; each
    // following message must go over a new one instead of failing.
    let server = FaultySmtp::start(vec![Behaviour::AcceptOnce]).await;
    let smtp = sender(&server.url());
    for n in 0..3 {
        let (id, m) = message(n);
        smtp.send(id, m).await.expect("accepted on the first try");
        // Room for the relay's close to arrive, as it would between mails.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*server.accepted.lock().expect("lock"), 3);
    assert_eq!(*server.connections.lock().expect("lock"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_from_the_url_are_presented_to_the_relay() {
    let sink = SmtpSink::start_with_login("game@turnbase.test", "p:ss w%rd");
    let url = |password: &str| {
        format!(
            "smtp://game%40turnbase.test:{password}@127.0.0.1:{}",
            sink.port
        )
    };
    let (id, m) = message(1);
    sender(&url("p%3Ass%20w%25rd"))
        .send(id, m)
        .await
        .expect("accepted with the right password");
    assert_eq!(sink.message_ids().len(), 1);

    let (id, m) = message(2);
    match sender(&url("wrong")).send(id, m).await {
        Err(SendError::Permanent { code, .. }) => assert_eq!(code, Some(535)),
        other => panic!("a wrong password is a permanent failure, got {other:?}"),
    }
    assert_eq!(sink.message_ids().len(), 1);
}
