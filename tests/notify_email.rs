//! The email channel against a real SMTP server (`common::smtp::SmtpSink`).

mod common;

use std::net::TcpListener;
use std::time::Instant;

use klaxon::config::{EmailConfig, SmtpTls};
use klaxon::domain::{Incident, IncidentStatus, Severity, Timestamp};
use klaxon::notify::email::{EmailSender, SEND_TIMEOUT};
use klaxon::notify::{Item, Links, Outgoing, Person, Recipient, SendError, Sender};

use common::smtp::{part, SmtpSink};

fn config(port: u16, tls: SmtpTls) -> EmailConfig {
    EmailConfig {
        smtp_host: "127.0.0.1".to_owned(),
        smtp_port: port,
        tls,
        username: None,
        password: None,
        from: "Klaxon <klaxon@example.com>".to_owned(),
    }
}

fn sender(port: u16) -> EmailSender {
    EmailSender::new(&config(port, SmtpTls::None)).expect("a valid email config")
}

/// An incident with links as long as real signed ones, longer than a mail line may be unencoded.
fn item(title: &str, severity: Severity, n: u128) -> Item {
    let id = uuid::Uuid::from_u128(n);
    let signature = "5f1c9a".repeat(12);
    Item {
        incident: Incident {
            id,
            title: title.to_owned(),
            severity,
            status: IncidentStatus::Escalating,
            dedup_key: None,
            event_count: 1,
            escalation_level: 2,
            resolution_note: None,
            created_at: Timestamp::from_millis(1_795_780_800_123),
            updated_at: Timestamp::from_millis(1_795_780_800_123),
            acknowledged_at: None,
            resolved_at: None,
            cancelled_at: None,
            service_id: None,
        },
        escalation_level: 2,
        links: Links {
            incident: format!("https://klaxon.example.com/incidents/{id}"),
            acknowledge: format!("https://klaxon.example.com/act/{id}/acknowledge?sig={signature}"),
            resolve: format!("https://klaxon.example.com/act/{id}/resolve?sig={signature}"),
        },
    }
}

fn to(email: &str, items: Vec<Item>) -> Outgoing {
    Outgoing::new(
        "0190b7a1-6f2e-7c3d-9a4b-5e6f7a8b9c0d".to_owned(),
        Recipient::Person(Person {
            handle: "ada".to_owned(),
            name: "Ada Lovelace".to_owned(),
            address: email.to_owned(),
        }),
        items,
    )
}

fn assert_link_lines(text: &str, item: &Item) {
    let lines = text.lines().collect::<Vec<_>>();
    for line in [
        format!("Incident: {}", item.links.incident),
        format!("Acknowledge: {}", item.links.acknowledge),
        format!("Resolve: {}", item.links.resolve),
    ] {
        assert!(
            lines.contains(&line.as_str()),
            "no line {line:?} in:\n{text}"
        );
    }
}

#[tokio::test]
async fn a_mail_reaches_the_server_with_its_links_and_both_parts() {
    let sink = SmtpSink::start();
    let message = to(
        "ada@example.com",
        vec![item("Database down", Severity::Critical, 1)],
    );

    let delivered = sender(sink.port)
        .send(&message)
        .await
        .expect("the sink accepts the mail");

    let provider_id = delivered.provider_id.expect("the sink's reply text");
    assert!(provider_id.contains("queued as SINK1"), "{provider_id}");
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail["mail_from"], "klaxon@example.com");
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["ada@example.com"]));
    assert_eq!(mail["subject"], "[CRITICAL] Level 2: Database down");
    let data = mail["data"].as_str().expect("the raw mail");
    assert!(
        data.contains("Message-ID: <0190b7a1-6f2e-7c3d-9a4b-5e6f7a8b9c0d@klaxon>\r\n"),
        "{data}"
    );
    assert_link_lines(part(mail, "text/plain"), &message.items[0]);
    assert!(part(mail, "text/html").contains("Database down"));
}

#[tokio::test]
async fn a_digest_is_one_mail_with_a_block_per_incident() {
    let sink = SmtpSink::start();
    let message = to(
        "ada@example.com",
        vec![
            item("Disk filling", Severity::Warning, 1),
            item("Database down", Severity::Critical, 2),
            item("Queue slow", Severity::Info, 3),
        ],
    );

    sender(sink.port)
        .send(&message)
        .await
        .expect("the sink accepts the digest");

    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(
        mails[0]["subject"],
        "[CRITICAL] 3 incidents need you: Disk filling and 2 more"
    );
    let text = part(&mails[0], "text/plain");
    for item in &message.items {
        assert_link_lines(text, item);
    }
}

#[tokio::test]
async fn no_server_listening_is_retryable() {
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind a probe listener");
        probe.local_addr().expect("the probe's address").port()
    };
    let message = to(
        "ada@example.com",
        vec![item("Database down", Severity::Critical, 1)],
    );

    let error = sender(port)
        .send(&message)
        .await
        .expect_err("nothing listens");

    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_is_retryable_after_the_send_timeout() {
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind a silent listener");
    let port = silent.local_addr().expect("the listener's address").port();
    let message = to(
        "ada@example.com",
        vec![item("Database down", Severity::Critical, 1)],
    );

    let started = Instant::now();
    let outcome = tokio::time::timeout(SEND_TIMEOUT * 2, sender(port).send(&message))
        .await
        .expect("the send gives up by itself");

    let error = outcome.expect_err("a server that never greets takes no mail");
    assert!(error.is_retryable(), "{error:?}");
    assert!(started.elapsed() >= SEND_TIMEOUT);
}

#[tokio::test]
async fn an_unknown_user_is_fatal() {
    let sink = SmtpSink::start();
    let message = to(
        "reject-ada@example.com",
        vec![item("Database down", Severity::Critical, 1)],
    );

    let error = sender(sink.port)
        .send(&message)
        .await
        .expect_err("the sink refuses the recipient");

    assert!(
        matches!(&error, SendError::Fatal(text) if text.contains("550")),
        "{error:?}"
    );
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn a_busy_mailbox_is_retryable() {
    let sink = SmtpSink::start();
    let message = to(
        "busy-ada@example.com",
        vec![item("Database down", Severity::Critical, 1)],
    );

    let error = sender(sink.port)
        .send(&message)
        .await
        .expect_err("the sink says try later");

    assert!(
        matches!(&error, SendError::Retryable(text) if text.contains("451")),
        "{error:?}"
    );
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn starttls_required_against_a_plain_server_delivers_nothing() {
    let sink = SmtpSink::start();
    let sender = EmailSender::new(&config(sink.port, SmtpTls::Starttls)).expect("a valid config");
    let message = to(
        "ada@example.com",
        vec![item("Database down", Severity::Critical, 1)],
    );

    let outcome = sender.send(&message).await;

    assert!(outcome.is_err(), "{outcome:?}");
    assert!(sink.mails().is_empty());
}
