//! Email: each message becomes one mail, handed to the SMTP relay of `[email]`.
//!
//! The mail is multipart/alternative, plain text and HTML. The plain text carries each link on a
//! line of its own (`Incident: `, `Acknowledge: `, `Resolve: ` and the URL), and incident text never
//! starts a line, so a title cannot pass for a link. The HTML escapes all incident text. The mail's
//! `Message-ID` is `<key@klaxon>`, from the message's idempotency key, so that a repeated send is
//! recognisably the same mail.
//!
//! Every mail opens a connection of its own. lettre's timeout covers only the TCP connect, so
//! the whole exchange runs under [`SEND_TIMEOUT`]; a pooled connection cancelled by that timeout
//! mid-command would go back to lettre's pool out of step with the relay, hence no pool.
//!
//! With `starttls` or `tls`, the relay's certificate is checked against the Mozilla roots built
//! in (webpki-roots), not the system's store.
//!
//! Failures are classed as SMTP has it: the relay's 4xx replies and failing to reach or follow it
//! are retryable, its 5xx replies and an address that does not parse are fatal.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{Address, AsyncTransport, Message, Tokio1Executor};
use tokio::net::TcpStream;

use super::{escape_html as escape, Delivered, Item, Outgoing, Recipient, SendError, Sender};
use crate::config::{ConfigError, EmailConfig, SmtpTls};
use crate::domain::Severity;

/// The longest one mail may take, from connecting to the relay to its answer to the message.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The domain of every `Message-ID`: `<key@klaxon>`.
const MESSAGE_ID_DOMAIN: &str = "klaxon";

/// Sends mail through one SMTP relay.
pub struct EmailSender {
    /// lettre's transport: for implicit TLS, which it alone can open.
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// For plain and STARTTLS relays, the exchange runs on a connection Klaxon opens itself, with
    /// Nagle's algorithm off: lettre writes a message and its closing `.` in two writes, and with
    /// Nagle on, the second waits for the relay's delayed ACK (40 ms on Linux) on every mail.
    direct: Option<Direct>,
    from: Mailbox,
    /// `host:port`, to say in errors which relay failed.
    relay: String,
}

/// What a direct exchange needs: where the relay is, whether to upgrade with STARTTLS, and the
/// credentials.
struct Direct {
    host: String,
    port: u16,
    starttls: Option<TlsParameters>,
    credentials: Option<Credentials>,
}

impl EmailSender {
    /// A sender for `config`, which authenticates when `username` is set. Connects to nothing
    /// yet: the relay is first reached by a send.
    ///
    /// Fails when `from` is not a mail address or, with TLS, `smtp_host` is not a name a
    /// certificate can be checked against.
    pub fn new(config: &EmailConfig) -> Result<Self, ConfigError> {
        let from = config
            .from
            .parse::<Mailbox>()
            .map_err(|error| invalid("email.from", error))?;
        let tls_parameters = || {
            TlsParameters::new(config.smtp_host.clone())
                .map_err(|error| invalid("email.smtp_host", error))
        };
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(tls_parameters()?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let credentials = config.username.as_ref().map(|username| {
            Credentials::new(
                username.clone(),
                config.password.clone().unwrap_or_default(),
            )
        });
        let direct = match &tls {
            Tls::None => Some(None),
            Tls::Required(parameters) => Some(Some(parameters.clone())),
            _ => None,
        }
        .map(|starttls| Direct {
            host: config.smtp_host.clone(),
            port: config.smtp_port,
            starttls,
            credentials: credentials.clone(),
        });
        let mut transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.smtp_host)
                .port(config.smtp_port)
                .tls(tls)
                .timeout(Some(SEND_TIMEOUT));
        if let Some(credentials) = credentials {
            transport = transport.credentials(credentials);
        }
        Ok(Self {
            transport: transport.build(),
            direct,
            from,
            relay: format!("{}:{}", config.smtp_host, config.smtp_port),
        })
    }
}

fn invalid(key: &str, error: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: error.to_string(),
    }
}

#[async_trait]
impl Sender for EmailSender {
    async fn send(&self, message: &Outgoing) -> Result<Delivered, SendError> {
        let mail = compose(&self.from, message)?;
        let exchange = async {
            match &self.direct {
                Some(direct) => direct.send(&mail).await,
                None => self.transport.send(mail).await.map_err(Failure::Smtp),
            }
        };
        let reply = tokio::time::timeout(SEND_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                SendError::Retryable(format!(
                    "SMTP relay {}: no answer within {SEND_TIMEOUT:?}",
                    self.relay
                ))
            })?
            .map_err(|failure| match failure {
                Failure::Connect(error) => {
                    SendError::Retryable(format!("SMTP relay {}: {error}", self.relay))
                }
                Failure::Smtp(error) => {
                    let text = format!("SMTP relay {}: {error}", self.relay);
                    if retryable(error.status().map(u16::from), error.is_client()) {
                        SendError::Retryable(text)
                    } else {
                        SendError::Fatal(text)
                    }
                }
            })?;
        let said = reply.message().collect::<Vec<_>>().join(" ");
        Ok(Delivered {
            provider: None,
            provider_id: (!said.is_empty()).then_some(said),
        })
    }
}

/// Why an exchange with the relay failed.
enum Failure {
    /// The relay could not be reached.
    Connect(std::io::Error),
    /// The relay was reached; lettre says what went wrong.
    Smtp(lettre::transport::smtp::Error),
}

impl Direct {
    /// Connects, greets, upgrades and authenticates as lettre's transport would, sends `mail`,
    /// and says goodbye.
    async fn send(&self, mail: &Message) -> Result<Response, Failure> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(Failure::Connect)?;
        stream.set_nodelay(true).map_err(Failure::Connect)?;
        let hello = ClientId::default();
        let mut connection = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello)
            .await
            .map_err(Failure::Smtp)?;
        if let Some(parameters) = &self.starttls {
            connection
                .starttls(parameters.clone(), &hello)
                .await
                .map_err(Failure::Smtp)?;
        }
        if let Some(credentials) = &self.credentials {
            connection
                .auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(Failure::Smtp)?;
        }
        let reply = connection
            .send(mail.envelope(), &mail.formatted())
            .await
            .map_err(Failure::Smtp)?;
        // The message is accepted: a relay that closes without answering QUIT changes nothing.
        let _ = connection.quit().await;
        Ok(reply)
    }
}

/// Whether a failed send may succeed later, from the relay's reply code when the failure was a
/// reply. 4xx is the relay's "not now" (421 closing, 450 mailbox busy, 451 local error, 452 out of
/// storage); 5xx is its "never" (550 no such user, 553 bad address, 554 refused). Without a reply
/// the relay was not reached or not followed (refused, timed out, cut off, TLS failed), which may
/// pass; unless lettre itself refused to go on (`refused_by_client`: no STARTTLS offered, non-ASCII
/// the relay cannot carry), which it will again.
fn retryable(reply: Option<u16>, refused_by_client: bool) -> bool {
    match reply {
        Some(code) => (400..500).contains(&code),
        None => !refused_by_client,
    }
}

/// The mail that tells `message`'s recipient, from `from`.
fn compose(from: &Mailbox, message: &Outgoing) -> Result<Message, SendError> {
    let Recipient::Person(person) = &message.recipient else {
        return Err(SendError::Fatal(
            "email goes to people; a webhook is not an email recipient".to_owned(),
        ));
    };
    let address = person.address.parse::<Address>().map_err(|error| {
        SendError::Fatal(format!(
            "{}'s email address {:?} is invalid: {error}",
            person.handle, person.address
        ))
    })?;
    let Some(first) = message.items.first() else {
        return Err(SendError::Fatal("a message about no incident".to_owned()));
    };
    let name = (!person.name.is_empty()).then(|| one_line(&person.name));
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(name, address))
        .message_id(Some(format!("<{}@{MESSAGE_ID_DOMAIN}>", message.key)))
        .subject(subject(message.severity(), first, message.items.len()))
        .multipart(MultiPart::alternative_plain_html(
            plain_text(message),
            html(message),
        ))
        .map_err(|error| SendError::Fatal(format!("cannot build the mail: {error}")))
}

/// `[CRITICAL] Level 2: Database down`, or for a digest
/// `[CRITICAL] 5 incidents need you: Database down and 4 more`.
fn subject(severity: Severity, first: &Item, count: usize) -> String {
    let severity = severity.as_str().to_uppercase();
    let title = one_line(&first.incident.title);
    match count {
        1 => format!("[{severity}] Level {}: {title}", first.escalation_level),
        count => format!(
            "[{severity}] {count} incidents need you: {title} and {} more",
            count - 1
        ),
    }
}

fn plain_text(message: &Outgoing) -> String {
    let blocks = message.items.iter().map(plain_block).collect::<Vec<_>>();
    let intro = if message.is_digest() {
        format!("{} incidents need you.\n\n", message.items.len())
    } else {
        String::new()
    };
    format!(
        "{intro}{}\nThe acknowledge and resolve links open a page that asks you to confirm.\n",
        blocks.join("\n")
    )
}

/// One incident, every line led by a label of ours: however its title reads, it cannot pass for
/// one of the link lines.
fn plain_block(item: &Item) -> String {
    let incident = &item.incident;
    let dedup_key = incident
        .dedup_key
        .as_deref()
        .map(|key| format!("Dedup key: {}\n", one_line(key)))
        .unwrap_or_default();
    format!(
        "[{severity}] {title}\n\
         Status: {status}, escalation level {level}\n\
         Id: {id}\n\
         Created: {created}\n\
         Events: {events}\n\
         {dedup_key}\
         Incident: {incident_link}\n\
         Acknowledge: {acknowledge}\n\
         Resolve: {resolve}\n",
        severity = incident.severity.as_str().to_uppercase(),
        title = one_line(&incident.title),
        status = incident.status.as_str(),
        level = item.escalation_level,
        id = incident.id,
        created = incident.created_at,
        events = incident.event_count,
        incident_link = item.links.incident,
        acknowledge = item.links.acknowledge,
        resolve = item.links.resolve,
    )
}

fn html(message: &Outgoing) -> String {
    let intro = if message.is_digest() {
        format!("<p>{} incidents need you.</p>\n", message.items.len())
    } else {
        String::new()
    };
    let blocks = message.items.iter().map(html_block).collect::<String>();
    format!(
        "<!DOCTYPE html>\n<html><body>\n{intro}{blocks}\
         <p>The acknowledge and resolve links open a page that asks you to confirm.</p>\n\
         </body></html>\n"
    )
}

fn html_block(item: &Item) -> String {
    let incident = &item.incident;
    let dedup_key = incident
        .dedup_key
        .as_deref()
        .map(|key| {
            format!(
                "<tr><th align=\"left\">Dedup key</th><td>{}</td></tr>\n",
                escape(key)
            )
        })
        .unwrap_or_default();
    format!(
        "<h2>[{severity}] {title}</h2>\n\
         <table>\n\
         <tr><th align=\"left\">Status</th><td>{status}, escalation level {level}</td></tr>\n\
         <tr><th align=\"left\">Id</th><td>{id}</td></tr>\n\
         <tr><th align=\"left\">Created</th><td>{created}</td></tr>\n\
         <tr><th align=\"left\">Events</th><td>{events}</td></tr>\n\
         {dedup_key}\
         </table>\n\
         <p><a href=\"{acknowledge}\">Acknowledge</a> &middot; <a href=\"{resolve}\">Resolve</a> &middot; \
         <a href=\"{incident_link}\">Open the incident</a></p>\n",
        severity = incident.severity.as_str().to_uppercase(),
        title = escape(&incident.title),
        status = incident.status.as_str(),
        level = item.escalation_level,
        id = incident.id,
        created = incident.created_at,
        events = incident.event_count,
        acknowledge = escape(&item.links.acknowledge),
        resolve = escape(&item.links.resolve),
        incident_link = escape(&item.links.incident),
    )
}

/// `text` with its control characters (a lone `\r` among them) made spaces, so that it stays on
/// its line in a header or in the plain text.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Incident, IncidentStatus, Timestamp};
    use crate::notify::{Links, Person};

    fn item(title: &str, severity: Severity, n: u32) -> Item {
        let id = uuid::Uuid::from_u128(n.into());
        Item {
            incident: Incident {
                id,
                title: title.to_owned(),
                severity,
                status: IncidentStatus::Escalating,
                dedup_key: Some(format!("key-{n}")),
                event_count: 3,
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
                incident: format!("https://klaxon.test/incidents/{id}"),
                acknowledge: format!("https://klaxon.test/act/ack-{n}?sig=a&b"),
                resolve: format!("https://klaxon.test/act/resolve-{n}?sig=r&s"),
            },
        }
    }

    fn to_ada(items: Vec<Item>) -> Outgoing {
        Outgoing::new(
            "0190b7a1-key".to_owned(),
            Recipient::Person(Person {
                handle: "ada".to_owned(),
                name: "Ada Lovelace".to_owned(),
                address: "ada@example.com".to_owned(),
            }),
            items,
        )
    }

    fn from() -> Mailbox {
        "Klaxon <klaxon@example.com>"
            .parse()
            .expect("a valid mailbox")
    }

    fn formatted(message: &Outgoing) -> String {
        let mail = compose(&from(), message).expect("the mail composes");
        String::from_utf8(mail.formatted()).expect("the mail is UTF-8")
    }

    #[test]
    fn subject_names_severity_level_and_title() {
        let message = to_ada(vec![item("Database down", Severity::Critical, 1)]);
        assert_eq!(
            subject(message.severity(), &message.items[0], 1),
            "[CRITICAL] Level 2: Database down"
        );
    }

    #[test]
    fn digest_subject_counts_and_takes_the_worst_severity() {
        let message = to_ada(vec![
            item("Disk filling", Severity::Warning, 1),
            item("Database down", Severity::Critical, 2),
            item("Queue slow", Severity::Info, 3),
        ]);
        assert_eq!(
            subject(message.severity(), &message.items[0], 3),
            "[CRITICAL] 3 incidents need you: Disk filling and 2 more"
        );
    }

    #[test]
    fn plain_text_carries_each_link_on_a_line_of_its_own() {
        let message = to_ada(vec![item("Database down", Severity::Critical, 1)]);
        let text = plain_text(&message);
        let lines = text.lines().collect::<Vec<_>>();
        let links = &message.items[0].links;
        for line in [
            format!("Incident: {}", links.incident),
            format!("Acknowledge: {}", links.acknowledge),
            format!("Resolve: {}", links.resolve),
        ] {
            assert!(
                lines.contains(&line.as_str()),
                "no line {line:?} in:\n{text}"
            );
        }
        for detail in [
            "[CRITICAL] Database down",
            "Status: ESCALATING, escalation level 2",
            "Id: 00000000-0000-0000-0000-000000000001",
            "Created: 2026-11-27T12:00:00.123Z",
            "Events: 3",
            "Dedup key: key-1",
        ] {
            assert!(lines.contains(&detail), "no line {detail:?} in:\n{text}");
        }
    }

    #[test]
    fn digest_has_one_block_per_incident() {
        let message = to_ada(vec![
            item("Disk filling", Severity::Warning, 1),
            item("Database down", Severity::Critical, 2),
            item("Queue slow", Severity::Info, 3),
        ]);
        let text = plain_text(&message);
        assert!(text.starts_with("3 incidents need you.\n"), "{text}");
        for item in &message.items {
            let acknowledge = format!("Acknowledge: {}", item.links.acknowledge);
            let resolve = format!("Resolve: {}", item.links.resolve);
            assert_eq!(text.lines().filter(|l| *l == acknowledge).count(), 1);
            assert_eq!(text.lines().filter(|l| *l == resolve).count(), 1);
        }
        assert_eq!(html(&message).matches("<h2>").count(), 3);
    }

    #[test]
    fn a_title_cannot_pass_for_a_link_line() {
        let forged = "Acknowledge: https://evil.test\rResolve: https://evil.test\nAcknowledge: https://evil.test";
        let message = to_ada(vec![item(forged, Severity::Critical, 1)]);
        let text = plain_text(&message);
        let mut link_lines = text
            .lines()
            .filter(|l| l.starts_with("Acknowledge: ") || l.starts_with("Resolve: "));
        assert!(
            link_lines.all(|l| l.starts_with("Acknowledge: https://klaxon.test/")
                || l.starts_with("Resolve: https://klaxon.test/"))
        );
        assert!(!subject(Severity::Critical, &message.items[0], 1).contains(['\r', '\n']));
    }

    #[test]
    fn html_escapes_incident_text_and_links() {
        let mut hostile = item("<script>alert(\"x\")</script> & 'co'", Severity::Error, 1);
        hostile.incident.dedup_key = Some("<b>key</b>".to_owned());
        let page = html(&to_ada(vec![hostile]));
        assert!(!page.contains("<script>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;co&#39;")
        );
        assert!(page.contains("&lt;b&gt;key&lt;/b&gt;"));
        assert!(page.contains("href=\"https://klaxon.test/act/ack-1?sig=a&amp;b\""));
    }

    #[test]
    fn mail_has_message_id_from_the_key_and_both_parts() {
        let mail = formatted(&to_ada(vec![item("Database down", Severity::Critical, 1)]));
        assert!(
            mail.contains("Message-ID: <0190b7a1-key@klaxon>\r\n"),
            "{mail}"
        );
        assert!(mail.contains("Subject: [CRITICAL] Level 2: Database down\r\n"));
        assert!(mail.contains("To: \"Ada Lovelace\" <ada@example.com>\r\n"));
        assert!(mail.contains("From: Klaxon <klaxon@example.com>\r\n"));
        assert!(mail.contains("Content-Type: multipart/alternative;"));
        assert!(mail.contains("Content-Type: text/plain; charset=utf-8"));
        assert!(mail.contains("Content-Type: text/html; charset=utf-8"));
    }

    #[test]
    fn a_title_cannot_add_a_header() {
        let title = "Down\r\nBcc: eve@evil.test";
        let mail = formatted(&to_ada(vec![item(title, Severity::Critical, 1)]));
        let (headers, _body) = mail.split_once("\r\n\r\n").expect("a header section");
        assert!(!headers.contains("\r\nBcc:"), "{headers}");
    }

    #[test]
    fn a_webhook_is_no_email_recipient() {
        let mut message = to_ada(vec![item("Database down", Severity::Critical, 1)]);
        message.recipient = Recipient::Webhook("ops".to_owned());
        assert!(matches!(
            compose(&from(), &message),
            Err(SendError::Fatal(_))
        ));
    }

    #[test]
    fn an_invalid_recipient_address_is_fatal() {
        let mut message = to_ada(vec![item("Database down", Severity::Critical, 1)]);
        if let Recipient::Person(person) = &mut message.recipient {
            person.address = "not an address".to_owned();
        }
        let error = compose(&from(), &message).expect_err("no mail to a bad address");
        assert!(
            matches!(&error, SendError::Fatal(text) if text.contains("ada")),
            "{error}"
        );
    }

    #[test]
    fn an_invalid_from_address_is_a_config_error() {
        let config = EmailConfig {
            smtp_host: "localhost".to_owned(),
            smtp_port: 25,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "klaxon@".to_owned(),
        };
        assert!(matches!(
            EmailSender::new(&config).err(),
            Some(ConfigError::Invalid { key, .. }) if key == "email.from"
        ));
    }

    #[test]
    fn smtp_replies_are_classed_by_their_first_digit() {
        for code in [421, 450, 451, 452] {
            assert!(retryable(Some(code), false), "{code} is retryable");
        }
        for code in [530, 535, 550, 552, 553, 554] {
            assert!(!retryable(Some(code), false), "{code} is fatal");
        }
    }

    #[test]
    fn failing_to_reach_the_relay_is_retryable_and_lettre_refusing_is_not() {
        assert!(retryable(None, false));
        assert!(!retryable(None, true));
    }
}
