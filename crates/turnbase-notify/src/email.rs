//! The mail of each notification kind: a subject and a message per kind
//! (the mail crate's templates, so values are escaped into the HTML and
//! subjects stay on one line), inside one layout that carries the
//! unsubscribe link. Digests list a game's turn results of one day.

use std::collections::BTreeMap;

use serde_json::Value;
use turnbase_mail::template::{Template, escape_html};
use turnbase_store::notify::{Kind, NotificationRow};

const fn t(subject: &'static str, text: &'static str) -> Template {
    Template {
        subject,
        text,
        html: Some(text),
        secrets: &[],
    }
}

fn template(kind: Kind) -> Template {
    match kind {
        Kind::ApplicationReceived => t(
            "{{title}}: {{race_name}} applied",
            "{{race_name}} applied to join {{title}}. Approve or reject the application in the lobby.",
        ),
        Kind::ApplicationApproved => t(
            "{{title}}: you are in",
            "Your application to {{title}} as {{race_name}} was approved.",
        ),
        Kind::ApplicationRejected => t(
            "{{title}}: application rejected",
            "Your application to {{title}} as {{race_name}} was rejected. {{reason}}",
        ),
        Kind::ApplicationWithdrawn => t(
            "{{title}}: {{race_name}} withdrew",
            "{{race_name}} withdrew from {{title}}.",
        ),
        Kind::ApplicationExpired => t(
            "{{title}}: application expired",
            "Your application to {{title}} as {{race_name}} expired before it was decided.",
        ),
        Kind::ApplicationClosed => t(
            "{{title}}: application closed",
            "Your application to {{title}} was closed: {{reason}}",
        ),
        Kind::PlayerResigned => t(
            "{{title}}: {{race_name}} resigned",
            "{{race_name}} resigned from {{title}}.",
        ),
        Kind::GameUpdated => t(
            "{{title}} was changed",
            "The owner changed the settings of {{title}}.",
        ),
        Kind::GameOwnerChanged => t("{{title}} has a new owner", "{{title}} has a new owner."),
        Kind::GameStarting => t(
            "{{title}} is starting",
            "{{title}} is starting with {{players}} players. You will hear when the first turn opens.",
        ),
        Kind::GameStarted => t("{{title}} has started", "{{title}} has started. Good luck!"),
        Kind::GameCancelled => t(
            "{{title}} was cancelled",
            "{{title}} was cancelled: {{reason}}",
        ),
        Kind::GameStartFailed => t(
            "{{title}} could not start",
            "{{title}} could not start: {{reason}}",
        ),
        Kind::GameStateChanged => t(
            "{{title}} is now {{state}}",
            "{{title}} is now {{state}}. {{reason}}",
        ),
        Kind::TurnOpened => t(
            "{{title}}: turn {{turn}} is open",
            "Turn {{turn}} of {{title}} is open for orders until {{deadline}}.",
        ),
        Kind::TurnResolved => t(
            "{{title}}: turn {{turn}} resolved",
            "Turn {{turn}} of {{title}} has been resolved. {{next}}",
        ),
        Kind::YourMove => t(
            "{{title}}: your move",
            "It is your move in {{title}} (turn {{turn}}). Deadline: {{deadline}}.",
        ),
        Kind::OrdersDue => t(
            "{{title}}: orders due {{deadline}}",
            "Your orders for turn {{turn}} of {{title}} are due {{deadline}} and you have not sent them yet.",
        ),
        Kind::TurnExtended => t(
            "{{title}}: turn {{turn}} extended",
            "Turn {{turn}} of {{title}} now resolves at {{deadline}}.",
        ),
        Kind::SeatTakenOver => t(
            "{{title}}: a bot plays your seat",
            "You missed {{misses}} turns in {{title}}; the engine's bot plays your seat until you send orders again.",
        ),
        Kind::Eliminated => t(
            "{{title}}: you were eliminated",
            "You were eliminated from {{title}} in turn {{turn}}.",
        ),
        Kind::GameFinished => t(
            "{{title}} has finished",
            "{{title}} finished after turn {{turn}}. {{standings}}",
        ),
        Kind::NewDevice => t(
            "New sign-in on {{device_name}}",
            "Your account was signed in on a new device, {{device_name}} ({{country}}), at {{at}}. If this was not you, revoke the session from your account's sessions page.",
        ),
        Kind::AdminNotice => t("{{subject}}", "{{message}}"),
    }
}

/// A payload's top-level values as template values (text as it is,
/// numbers and the like as JSON), with the game's title and the
/// placeholders some kinds need made readable.
fn values(n: &NotificationRow) -> BTreeMap<&'static str, String> {
    let payload: Value = serde_json::from_str(&n.payload).unwrap_or(Value::Null);
    let get = |key: &str| -> String {
        match payload.get(key) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }
    };
    let mut v: BTreeMap<&'static str, String> = BTreeMap::new();
    for key in [
        "race_name",
        "reason",
        "players",
        "state",
        "turn",
        "deadline",
        "misses",
        "device_name",
        "country",
        "at",
        "subject",
        "message",
    ] {
        v.insert(key, get(key));
    }
    v.insert(
        "title",
        n.game_title.clone().unwrap_or_else(|| get("title")),
    );
    let next = match payload.get("deadline").and_then(Value::as_str) {
        Some(d) => format!("The next turn is due {d}."),
        None => String::new(),
    };
    v.insert("next", next);
    let standings = payload
        .get("standings")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .enumerate()
                .map(|(i, r)| {
                    let name = r
                        .get("name")
                        .or_else(|| r.get("player"))
                        .and_then(Value::as_str)
                        .unwrap_or("?");
                    format!("{}. {name}", i + 1)
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .map(|s| format!("Standings: {s}"))
        .unwrap_or_default();
    v.insert("standings", standings);
    if v["country"].is_empty() {
        v.insert("country", "unknown country".into());
    }
    if v["subject"].is_empty() {
        v.insert("subject", "A notice from the operators".into());
    }
    v
}

/// A rendered mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The mail of one notification; `unsubscribe` is the link's URL.
pub fn render(kind: Kind, n: &NotificationRow, unsubscribe: &str) -> Mail {
    let filled = template(kind)
        .render(&values(n))
        .expect("every placeholder of the kind templates has a value");
    layout(
        filled.subject,
        &filled.text,
        filled.html.as_deref().unwrap_or_default(),
        unsubscribe,
    )
}

/// One mail for a day's turn results of one game.
pub fn render_digest(items: &[NotificationRow], unsubscribe: &str) -> Mail {
    let title = items
        .first()
        .and_then(|n| n.game_title.clone())
        .unwrap_or_else(|| "your game".into());
    let mut text = String::new();
    let mut html = String::new();
    for n in items {
        let line = template(Kind::TurnResolved)
            .render(&values(n))
            .expect("every placeholder of the kind templates has a value");
        text.push_str(&format!("- {}\n", line.text));
        html.push_str(&format!("<li>{}</li>", line.html.unwrap_or_default()));
    }
    let subject = format!(
        "{}: {} turn{} resolved today",
        title.replace(['\r', '\n'], " "),
        items.len(),
        if items.len() == 1 { "" } else { "s" }
    );
    layout(subject, &text, &format!("<ul>{html}</ul>"), unsubscribe)
}

fn layout(subject: String, text: &str, html: &str, unsubscribe: &str) -> Mail {
    Mail {
        subject,
        text: format!("{text}\n\n--\nTurnbase. To stop these mails: {unsubscribe}\n"),
        html: format!(
            "<!doctype html><html><body><p>{html}</p><hr><p style=\"font-size:small\">Turnbase. \
             <a href=\"{link}\">Stop these mails</a></p></body></html>",
            link = escape_html(unsubscribe)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn row(kind: Kind, title: &str, payload: Value) -> NotificationRow {
        NotificationRow {
            id: Uuid::now_v7(),
            account_id: Uuid::now_v7(),
            kind: kind.as_str().into(),
            game_id: Some(Uuid::now_v7()),
            game_title: Some(title.into()),
            payload: payload.to_string(),
            created_at: Utc::now(),
            read_at: None,
        }
    }

    #[test]
    fn every_kind_renders_and_names_are_escaped() {
        for kind in Kind::ALL {
            let n = row(
                *kind,
                "<b>War</b> & Peace",
                serde_json::json!({"race_name": "<i>Zorg</i>"}),
            );
            let mail = render(*kind, &n, "https://t.example/u?token=a&b");
            assert!(!mail.subject.contains('\n'), "{kind:?}");
            assert!(!mail.html.contains("<b>War"), "{kind:?}: {}", mail.html);
            assert!(!mail.html.contains("<i>Zorg"), "{kind:?}");
            assert!(mail.html.contains("token=a&amp;b"), "{kind:?}");
            assert!(
                mail.text.contains("https://t.example/u?token=a&b"),
                "{kind:?}"
            );
        }
        let n = row(
            Kind::YourMove,
            "Orion\r\nBcc: x",
            serde_json::json!({"turn": 4, "deadline": "2026-01-01T00:00:00Z"}),
        );
        let mail = render(Kind::YourMove, &n, "u");
        assert_eq!(mail.subject, "Orion  Bcc: x: your move");
        assert!(mail.text.contains("turn 4"), "{}", mail.text);
    }

    #[test]
    fn digests_list_each_turn() {
        let items: Vec<_> = (1..=3)
            .map(|t| row(Kind::TurnResolved, "Orion", serde_json::json!({"turn": t})))
            .collect();
        let mail = render_digest(&items, "u");
        assert_eq!(mail.subject, "Orion: 3 turns resolved today");
        assert_eq!(mail.text.matches("- Turn").count(), 3, "{}", mail.text);
    }
}
