//! Reaching a human end to end: the real server with its dispatcher, a Twilio-compatible API and
//! an ntfy server written for the tests, driven over HTTP only. A text carries a reply code that
//! acknowledges as the user; a provider that fails hands over to the next at once; a bad number
//! fails for good; a receipt of failure fails over; a call plays its document and digit 1
//! acknowledges; a push's button acknowledges; personal rules go out in turn and stop at the
//! acknowledge; a storm of texts keeps to the limits in bundles and loses nothing.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use klaxon::config::{Config, NotificationConfig, RateLimit};
use klaxon::domain::{Channel, EscalationLevel, EscalationPolicy};

use crate::common::app::TestApp;
use crate::common::ntfy::NtfyServer;
use crate::common::twilio::{FakeTwilio, Resource, INVALID_NUMBER};
use crate::common::{eventually, free_port, Backend};

crate::on_every_backend!(
    a_text_reply_acknowledges_as_the_user_and_a_forged_one_changes_nothing,
    a_provider_that_fails_hands_over_to_the_next_at_once,
    a_bad_number_fails_for_good_without_trying_the_next_provider,
    receipts_record_delivery_and_fail_over_when_undelivered,
    a_call_plays_its_document_and_digit_one_acknowledges,
    a_push_carries_a_button_that_acknowledges,
    personal_rules_go_out_in_turn_and_the_acknowledge_stops_the_call,
    a_storm_of_texts_keeps_to_the_limits_in_bundles_and_loses_nothing,
    a_call_nobody_answers_is_placed_again_through_the_next_provider,
    a_contact_methods_test_message_goes_out_or_says_why_not,
);

const DEADLINE: Duration = Duration::from_secs(15);
const ALICE_PHONE: &str = "+14155550100";
const PRIMARY_FROM: &str = "+15550000001";
const BACKUP_FROM: &str = "+15550000002";

/// Two Twilio-compatible accounts, each with its own API: the primary and the backup.
struct Providers {
    primary: FakeTwilio,
    backup: FakeTwilio,
}

impl Providers {
    async fn start() -> Self {
        Self {
            primary: FakeTwilio::start(&format!("AC{}", "a".repeat(32)), "primary-token").await,
            backup: FakeTwilio::start(&format!("AC{}", "b".repeat(32)), "backup-token").await,
        }
    }

    fn configure(&self, config: &mut Config) {
        let both = vec![
            self.primary.provider("primary", PRIMARY_FROM),
            self.backup.provider("backup", BACKUP_FROM),
        ];
        config.sms = both.clone();
        config.voice = both;
    }
}

/// One level at once over `channels` to alice, then nothing for an hour.
fn policy(channels: &[Channel]) -> EscalationPolicy {
    EscalationPolicy::new(vec![
        EscalationLevel {
            level: 1,
            delay: Duration::ZERO,
            channels: channels.to_vec(),
            targets: vec!["alice".into()],
            webhooks: Vec::new(),
            only_during: None,
        },
        EscalationLevel {
            level: 2,
            delay: Duration::from_secs(3600),
            channels: vec![Channel::InApp],
            targets: vec!["alice".into()],
            webhooks: Vec::new(),
            only_during: None,
        },
    ])
    .expect("a valid policy")
}

/// The server (its `public_url` its own address), alice with `phone`, and the providers.
async fn spawned(
    backend: Backend,
    channels: &[Channel],
    phone: &str,
    tweak: impl FnOnce(&mut Config),
) -> Option<(TestApp, String, Providers)> {
    let providers = Providers::start().await;
    let port = free_port();
    let app = TestApp::spawn_with(backend, |config| {
        config.listen = ([127, 0, 0, 1], port).into();
        config.public_url = format!("http://127.0.0.1:{port}");
        config.escalation.policy = policy(channels);
        config.notifications = NotificationConfig {
            max_attempts: 20,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_cap: Duration::from_millis(200),
            ..NotificationConfig::default()
        };
        providers.configure(config);
        tweak(config);
    })
    .await?;
    let (status, alice) = app
        .post(
            "/users",
            json!({"handle": "alice", "name": "Alice", "email": "alice@example.com", "phone": phone}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{alice}");
    let alice = alice["id"].as_str().unwrap().to_owned();
    Some((app, alice, providers))
}

async fn escalate(app: &TestApp, title: &str) -> String {
    let id = app.open_incident(title).await;
    let (status, reply) = app.act(&id, "escalate").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    id
}

fn public_url(app: &TestApp) -> String {
    app.config.public_url.clone()
}

/// The accepted requests of `kind` an account got, once there are `count`.
async fn accepted(
    twilio: &FakeTwilio,
    kind: Resource,
    count: usize,
) -> Vec<crate::common::twilio::TwilioRequest> {
    eventually(
        &format!("{count} accepted {kind:?} requests"),
        DEADLINE,
        || async {
            twilio
                .requests()
                .iter()
                .filter(|r| r.kind == Some(kind) && r.sid.is_some())
                .count()
                >= count
        },
    )
    .await;
    twilio
        .requests()
        .into_iter()
        .filter(|r| r.kind == Some(kind) && r.sid.is_some())
        .collect()
}

async fn notifications(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, reply) = app.get(&format!("/incidents/{id}/notifications")).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply["notifications"].as_array().unwrap().clone()
}

/// The incident's notification on `channel`, once `done` holds of it.
async fn notification(
    app: &TestApp,
    id: &str,
    channel: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let all = notifications(app, id).await;
        if let Some(found) = all.iter().find(|n| n["channel"] == channel && done(n)) {
            return found.clone();
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for the {channel} notification: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status_of(app: &TestApp, id: &str) -> String {
    let (_, incident) = app.get(&format!("/incidents/{id}")).await;
    incident["status"].as_str().unwrap_or_default().to_owned()
}

/// The word after `ACK ` in a text.
fn reply_code(body: &str) -> String {
    let after = body
        .split("ACK ")
        .nth(1)
        .expect("the text says how to acknowledge");
    after.split_whitespace().next().unwrap().to_owned()
}

async fn a_text_reply_acknowledges_as_the_user_and_a_forged_one_changes_nothing(backend: Backend) {
    let Some((app, _, providers)) = spawned(backend, &[Channel::Sms], ALICE_PHONE, |_| {}).await
    else {
        return;
    };
    let id = escalate(&app, "Payment API returns 500").await;
    let texts = accepted(&providers.primary, Resource::Message, 1).await;
    let text = &texts[0];
    assert_eq!(text.field("To"), Some(ALICE_PHONE));
    assert_eq!(text.field("From"), Some(PRIMARY_FROM));
    let body = text.field("Body").unwrap();
    assert!(
        body.chars().count() <= 160 && body.contains("Payment API returns 500"),
        "{body}"
    );
    assert_eq!(
        text.field("StatusCallback"),
        Some(format!("{}/integrations/twilio/status", public_url(&app)).as_str())
    );
    let code = reply_code(body);
    // A reply is matched to a page once the page's send is recorded, which can trail the
    // provider's answer by a moment.
    notification(&app, &id, "sms", |n| n["status"] == "SENT").await;
    let sms_url = format!("{}/integrations/twilio/sms", public_url(&app));

    let (status, _) = providers
        .primary
        .forged_inbound_sms(&sms_url, ALICE_PHONE, PRIMARY_FROM, &format!("ACK {code}"))
        .await;
    assert_eq!(status, 403);
    let (status, _) = providers
        .primary
        .unsigned_inbound_sms(&sms_url, ALICE_PHONE, PRIMARY_FROM, &format!("ACK {code}"))
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        status_of(&app, &id).await,
        "ESCALATING",
        "a forged reply changes nothing"
    );

    let (status, _) = providers
        .primary
        .inbound_sms(
            &sms_url,
            "+14155550999",
            PRIMARY_FROM,
            &format!("ACK {code}"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        status_of(&app, &id).await,
        "ESCALATING",
        "another number's reply does nothing"
    );

    let (status, answer) = providers
        .primary
        .inbound_sms(&sms_url, ALICE_PHONE, PRIMARY_FROM, &format!("ack {code}"))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains("<Message>") && answer.contains("Acknowledged"),
        "{answer}"
    );
    assert_eq!(status_of(&app, &id).await, "ACKNOWLEDGED");
    let (_, timeline) = app.get(&format!("/incidents/{id}/timeline")).await;
    let acknowledged = timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "incident.acknowledged")
        .expect("the acknowledge is on the timeline")
        .clone();
    assert_eq!(acknowledged["actor"], "alice", "as the user texted");
    app.finish().await;
}

async fn a_provider_that_fails_hands_over_to_the_next_at_once(backend: Backend) {
    // Room for two texts in a row to one phone (by default, one a minute).
    let roomy = |config: &mut Config| {
        config.notifications.sms_rates = vec![RateLimit {
            count: 10,
            per: Duration::from_secs(60),
        }]
    };
    let Some((app, _, providers)) = spawned(backend, &[Channel::Sms], ALICE_PHONE, roomy).await
    else {
        return;
    };
    providers.primary.fail_next(500, 1);
    let first = escalate(&app, "Disk full on db-1").await;
    let texts = accepted(&providers.backup, Resource::Message, 1).await;
    assert_eq!(texts[0].field("From"), Some(BACKUP_FROM));
    let sent = notification(&app, &first, "sms", |n| n["status"] == "SENT").await;
    assert_eq!(sent["provider"], "backup");
    assert_eq!(sent["attempts"], 2);
    assert!(sent["provider_message_id"]
        .as_str()
        .unwrap()
        .starts_with("SM"));
    let kinds = app.timeline_kinds(&first).await;
    assert!(
        kinds.contains(&"notification.retrying".to_owned()),
        "{kinds:?}"
    );
    let (_, timeline) = app.get(&format!("/incidents/{first}/timeline")).await;
    let providers_named: Vec<Value> = timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"].as_str().unwrap().starts_with("notification."))
        .map(|e| e["detail"]["provider"].clone())
        .collect();
    assert_eq!(providers_named, [json!("primary"), json!("backup")]);

    // A 429 hands over the same way.
    providers.primary.fail_next(429, 1);
    let second = escalate(&app, "Queue backlog").await;
    accepted(&providers.backup, Resource::Message, 2).await;
    let sent = notification(&app, &second, "sms", |n| n["status"] == "SENT").await;
    assert_eq!(sent["provider"], "backup");
    app.finish().await;
}

async fn a_bad_number_fails_for_good_without_trying_the_next_provider(backend: Backend) {
    let Some((app, _, providers)) = spawned(backend, &[Channel::Sms], INVALID_NUMBER, |_| {}).await
    else {
        return;
    };
    let id = escalate(&app, "Cache cluster down").await;
    let failed = notification(&app, &id, "sms", |n| n["status"] == "FAILED").await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("21211"),
        "{failed}"
    );
    assert_eq!(failed["attempts"], 1);
    assert!(
        providers.backup.requests().is_empty(),
        "a bad number is bad everywhere"
    );
    app.finish().await;
}

async fn receipts_record_delivery_and_fail_over_when_undelivered(backend: Backend) {
    let Some((app, _, providers)) = spawned(backend, &[Channel::Sms], ALICE_PHONE, |_| {}).await
    else {
        return;
    };
    let id = escalate(&app, "Checkout latency high").await;
    let text = accepted(&providers.primary, Resource::Message, 1)
        .await
        .remove(0);
    let sid = text.sid.clone().unwrap();
    notification(&app, &id, "sms", |n| n["status"] == "SENT").await;
    let (status, _) = providers.primary.send_status(&sid, "sent", None).await;
    assert!(status < 300, "a progress receipt is taken: {status}");
    let (status, _) = providers
        .primary
        .send_status(&sid, "undelivered", Some("30006"))
        .await;
    assert!(status < 300, "{status}");
    // At once on the backup, not after the level's delay or a backoff.
    let again = accepted(&providers.backup, Resource::Message, 1)
        .await
        .remove(0);
    assert_eq!(again.field("Body"), text.field("Body"), "the same message");
    let resent = notification(&app, &id, "sms", |n| {
        n["status"] == "SENT" && n["provider"] == "backup"
    })
    .await;
    let backup_sid = again.sid.clone().unwrap();
    assert_eq!(resent["provider_message_id"], backup_sid.as_str());
    let (status, _) = providers
        .backup
        .send_status(&backup_sid, "delivered", None)
        .await;
    assert!(status < 300);
    notification(&app, &id, "sms", |n| n["status"] == "DELIVERED").await;
    let kinds = app.timeline_kinds(&id).await;
    assert!(
        kinds.contains(&"notification.undelivered".to_owned()),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"notification.delivered".to_owned()),
        "{kinds:?}"
    );
    app.finish().await;
}

async fn a_call_plays_its_document_and_digit_one_acknowledges(backend: Backend) {
    let Some((app, _, providers)) = spawned(backend, &[Channel::Voice], ALICE_PHONE, |_| {}).await
    else {
        return;
    };
    let id = escalate(&app, "Primary database down").await;
    let call = accepted(&providers.primary, Resource::Call, 1)
        .await
        .remove(0);
    assert_eq!(call.field("To"), Some(ALICE_PHONE));
    let url = call.field("Url").unwrap();
    assert!(
        url.starts_with(&format!("{}/integrations/twilio/voice/", public_url(&app))),
        "{url}"
    );
    notification(&app, &id, "voice", |n| n["status"] == "SENT").await;
    // A document fetched with the URL changed is refused.
    let tampered = reqwest::Client::new()
        .post(url.replace("sig=", "sig=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), StatusCode::FORBIDDEN);

    let (document, status, answer) = providers
        .primary
        .answer_call(call.sid.as_deref().unwrap(), "1")
        .await;
    assert!(
        document.contains("<Gather") && document.contains("Primary database down"),
        "{document}"
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("<Say>"), "{answer}");
    assert_eq!(status_of(&app, &id).await, "ACKNOWLEDGED");
    let (status, _) = providers
        .primary
        .send_status(call.sid.as_deref().unwrap(), "completed", None)
        .await;
    assert!(status < 300);
    notification(&app, &id, "voice", |n| n["status"] == "DELIVERED").await;
    app.finish().await;
}

async fn a_push_carries_a_button_that_acknowledges(backend: Backend) {
    let ntfy = NtfyServer::start(Some("tk_klaxontesttoken0000000000000")).await;
    let push = ntfy.config();
    let Some((app, alice, _)) = spawned(backend, &[Channel::Push], ALICE_PHONE, |config| {
        config.push = Some(push);
    })
    .await
    else {
        return;
    };
    let (status, method) = app
        .post(
            &format!("/users/{alice}/contact-methods"),
            json!({"type": "push", "address": "alice-pager"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{method}");
    let id = escalate(&app, "Login errors spiking").await;
    eventually("the push", DEADLINE, || async {
        ntfy.messages().iter().any(|m| m.status == 200)
    })
    .await;
    let published = ntfy
        .messages()
        .into_iter()
        .find(|m| m.status == 200)
        .unwrap();
    assert_eq!(published.json["topic"], "alice-pager");
    let actions = published.json["actions"].as_array().unwrap();
    let acknowledge = actions
        .iter()
        .find(|a| a["action"] == "http")
        .expect("an http action");
    assert_eq!(acknowledge["method"], "POST");
    let index = ntfy
        .messages()
        .iter()
        .position(|m| m.status == 200)
        .unwrap();
    let (status, _) = ntfy
        .press(index, acknowledge["label"].as_str().unwrap())
        .await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&app, &id).await, "ACKNOWLEDGED");
    app.finish().await;
}

async fn personal_rules_go_out_in_turn_and_the_acknowledge_stops_the_call(backend: Backend) {
    let ntfy = NtfyServer::start(None).await;
    let push = ntfy.config();
    let Some((app, alice, providers)) =
        spawned(backend, &[Channel::Personal], ALICE_PHONE, |config| {
            config.push = Some(push);
        })
        .await
    else {
        return;
    };
    let (_, methods) = app.get(&format!("/users/{alice}/contact-methods")).await;
    let id_of = |kind: &str| {
        methods["contact_methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["type"] == kind)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (sms, voice) = (id_of("sms"), id_of("voice"));
    let (_, push) = app
        .post(
            &format!("/users/{alice}/contact-methods"),
            json!({"type": "push", "address": "alice-pager"}),
        )
        .await;
    for (method, delay) in [
        (push["id"].as_str().unwrap().to_owned(), "0s"),
        (sms, "1s"),
        (voice, "2s"),
    ] {
        let (status, rule) = app
            .post(
                &format!("/users/{alice}/notification-rules"),
                json!({"contact_method_id": method, "delay": delay}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{rule}");
        assert_eq!(rule["delay"], delay, "shown as written");
    }
    let id = escalate(&app, "Search index stale").await;
    eventually("the push", DEADLINE, || async {
        ntfy.messages().iter().any(|m| m.status == 200)
    })
    .await;
    let text = accepted(&providers.primary, Resource::Message, 1)
        .await
        .remove(0);
    assert!(
        providers
            .primary
            .requests()
            .iter()
            .all(|r| r.kind != Some(Resource::Call)),
        "the call waits for its 2 s"
    );
    let code = reply_code(text.field("Body").unwrap());
    notification(&app, &id, "sms", |n| n["status"] == "SENT").await;
    let (status, _) = providers
        .primary
        .inbound_sms(
            &format!("{}/integrations/twilio/sms", public_url(&app)),
            ALICE_PHONE,
            PRIMARY_FROM,
            &format!("ACK {code}"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&app, &id).await, "ACKNOWLEDGED");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        providers
            .primary
            .requests()
            .iter()
            .chain(&providers.backup.requests())
            .all(|r| r.kind != Some(Resource::Call)),
        "acknowledged after the text: no call"
    );
    let voice = notification(&app, &id, "voice", |_| true).await;
    assert_eq!(voice["status"], "CANCELLED");
    app.finish().await;
}

/// How many incidents the storm opens for one person.
const STORM: usize = 50;

async fn a_storm_of_texts_keeps_to_the_limits_in_bundles_and_loses_nothing(backend: Backend) {
    let limits = vec![
        RateLimit {
            count: 1,
            per: Duration::from_secs(2),
        },
        RateLimit {
            count: 3,
            per: Duration::from_secs(3600),
        },
    ];
    let Some((app, _, providers)) = spawned(backend, &[Channel::Sms], ALICE_PHONE, |config| {
        config.notifications.sms_rates = limits;
    })
    .await
    else {
        return;
    };
    let mut ids = Vec::new();
    for n in 0..STORM {
        ids.push(escalate(&app, &format!("Node {n} unreachable")).await);
    }
    // Every notification goes out, alone or in a bundle, within the limits: at most 3 texts.
    eventually(
        "every notification sent",
        Duration::from_secs(30),
        || async {
            let mut all_sent = true;
            for id in &ids {
                let sent = notifications(&app, id).await;
                all_sent &= sent.iter().all(|n| n["status"] == "SENT");
            }
            all_sent
        },
    )
    .await;
    let texts = accepted(&providers.primary, Resource::Message, 1).await;
    assert!(texts.len() <= 3, "{} texts", texts.len());
    assert!(
        texts.len() >= 2,
        "a bundle follows the first: {}",
        texts.len()
    );
    let bundle = texts.last().unwrap().field("Body").unwrap().to_owned();
    assert!(bundle.contains("incidents"), "{bundle}");
    assert!(bundle.chars().count() <= 160);
    // A reply to the bundle acknowledges everything in it.
    let code = reply_code(&bundle);
    let (status, answer) = providers
        .primary
        .inbound_sms(
            &format!("{}/integrations/twilio/sms", public_url(&app)),
            ALICE_PHONE,
            PRIMARY_FROM,
            &format!("ACKALL {code}"),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let mut acknowledged = 0;
    for id in &ids {
        if status_of(&app, id).await == "ACKNOWLEDGED" {
            acknowledged += 1;
        }
    }
    let (_, timeline) = app
        .get(&format!("/incidents/{}/timeline", ids[STORM - 1]))
        .await;
    let digest_of = timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "notification.sent")
        .and_then(|e| e["detail"]["digest_of"].as_u64())
        .unwrap_or(1) as usize;
    assert_eq!(
        acknowledged, digest_of,
        "the bundle's reply acts on each incident it carried"
    );
    assert!(acknowledged > 1);
    app.finish().await;
}

async fn a_call_nobody_answers_is_placed_again_through_the_next_provider(backend: Backend) {
    let Some((app, _, providers)) = spawned(backend, &[Channel::Voice], ALICE_PHONE, |_| {}).await
    else {
        return;
    };
    let id = escalate(&app, "Payments failing").await;
    let call = accepted(&providers.primary, Resource::Call, 1)
        .await
        .remove(0);
    notification(&app, &id, "voice", |n| n["status"] == "SENT").await;
    let (status, _) = providers
        .primary
        .send_status(call.sid.as_deref().unwrap(), "no-answer", None)
        .await;
    assert!(status < 300, "{status}");
    let again = accepted(&providers.backup, Resource::Call, 1)
        .await
        .remove(0);
    assert_eq!(again.field("To"), Some(ALICE_PHONE));
    let placed = notification(&app, &id, "voice", |n| n["provider"] == "backup").await;
    assert_eq!(placed["status"], "SENT");
    let (_, timeline) = app.get(&format!("/incidents/{id}/timeline")).await;
    let undelivered = timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "notification.undelivered")
        .expect("the unanswered call is on the timeline")
        .clone();
    assert_eq!(undelivered["detail"]["status"], "no-answer");
    assert_eq!(undelivered["detail"]["provider"], "primary");
    assert_eq!(undelivered["detail"]["then"], "failover");
    app.finish().await;
}

async fn a_contact_methods_test_message_goes_out_or_says_why_not(backend: Backend) {
    let Some((app, alice, providers)) =
        spawned(backend, &[Channel::Sms], ALICE_PHONE, |_| {}).await
    else {
        return;
    };
    let (_, methods) = app.get(&format!("/users/{alice}/contact-methods")).await;
    let sms = methods["contact_methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["type"] == "sms")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Alice may test her own; another responder may not.
    let own = app.user_token(&alice).await;
    let tested = app
        .client
        .post(format!(
            "{}/users/{alice}/contact-methods/{sms}/test",
            app.base
        ))
        .bearer_auth(&own)
        .send()
        .await
        .unwrap();
    assert_eq!(tested.status(), StatusCode::OK);
    let result: Value = tested.json().await.unwrap();
    assert_eq!(result["status"], "SENT");
    assert_eq!(result["provider"], "primary");
    let text = accepted(&providers.primary, Resource::Message, 1)
        .await
        .remove(0);
    assert!(
        text.field("Body").unwrap().contains("Test message"),
        "{text:?}"
    );
    assert_eq!(text.field("To"), Some(ALICE_PHONE));

    let bob = app.user("bob", "responder").await;
    let bobs = app.user_token(&bob).await;
    let refused = app
        .client
        .post(format!(
            "{}/users/{alice}/contact-methods/{sms}/test",
            app.base
        ))
        .bearer_auth(&bobs)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // Push is not configured: the test says so.
    let (_, push) = app
        .post(
            &format!("/users/{alice}/contact-methods"),
            json!({"type": "push", "address": "alice-pager"}),
        )
        .await;
    let push = push["id"].as_str().unwrap();
    let (status, reply) = app
        .post(
            &format!("/users/{alice}/contact-methods/{push}/test"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("push is not configured"));
    // A bad address is refused with the field named.
    let (status, reply) = app
        .post(
            &format!("/users/{alice}/contact-methods"),
            json!({"type": "sms", "address": "0044 20 7946"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("address"));
    app.finish().await;
}
