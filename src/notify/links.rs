//! The acknowledge and resolve links in messages: signed, expiring, for one notification (so one
//! recipient and one incident) and one action.
//!
//! A link is `{public_url}/links/{notification_id}/{action}?expires={unix seconds}&sig={hex}`,
//! where `sig` is the HMAC-SHA256, under the installation's link key (made by a migration, shared
//! by every instance), of `{notification_id}:{action}:{expires}`. Changing any part breaks the
//! signature; the expiry is inside what is signed. A `GET` of the link only shows a confirmation
//! page (mail scanners prefetch links); a `POST` to it acts, once.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use super::Links;
use crate::domain::token::hex;
use crate::domain::{Action, Timestamp};

type HmacSha256 = Hmac<Sha256>;

/// What a call document's signature is for.
const VOICE: &str = "voice";

/// The actions a link can carry.
pub const LINK_ACTIONS: [Action; 2] = [Action::Acknowledge, Action::Resolve];

/// Signs and checks links.
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
    public_url: String,
    expiry: Duration,
}

/// Why a link does not act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link is not valid: it may have been changed or cut short")]
    Tampered,
    #[error("this link has expired")]
    Expired,
}

/// A link's parts, as its URL carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedLink {
    pub notification_id: Uuid,
    pub action: Action,
    /// Unix seconds.
    pub expires: i64,
    pub signature: String,
}

impl SignedLink {
    /// What a used link is remembered by: one notification's one action.
    pub fn id(&self) -> String {
        format!("{}:{}", self.notification_id, self.action)
    }
}

impl LinkSigner {
    pub fn new(key: &str, public_url: &str, expiry: Duration) -> Self {
        Self {
            key: key.as_bytes().to_vec(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            expiry,
        }
    }

    /// The links of a message about `incident_id` carrying notification `notification_id`,
    /// valid until `now` + the expiry.
    pub fn links(&self, notification_id: Uuid, incident_id: Uuid, now: Timestamp) -> Links {
        let expires = now.after(self.expiry).as_millis() / 1000;
        Links {
            incident: format!("{}/incidents/{incident_id}", self.public_url),
            acknowledge: self.url(notification_id, Action::Acknowledge, expires),
            resolve: self.url(notification_id, Action::Resolve, expires),
        }
    }

    fn url(&self, notification_id: Uuid, action: Action, expires: i64) -> String {
        let signature = self.sign(notification_id, action.as_str(), expires);
        format!(
            "{}/links/{notification_id}/{action}?expires={expires}&sig={signature}",
            self.public_url
        )
    }

    fn mac(&self, notification_id: Uuid, purpose: &str, expires: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any size");
        mac.update(format!("{notification_id}:{purpose}:{expires}").as_bytes());
        mac
    }

    fn sign(&self, notification_id: Uuid, purpose: &str, expires: i64) -> String {
        let tag = self.mac(notification_id, purpose, expires).finalize();
        hex(&tag.into_bytes())
    }

    /// The signed URL of the TwiML document a call for `notification_id` plays:
    /// `{public_url}/integrations/twilio/voice/{notification_id}?expires=…&sig=…`, signed over
    /// `{notification_id}:voice:{expires}`.
    pub fn voice_url(&self, notification_id: Uuid, now: Timestamp) -> String {
        let expires = now.after(self.expiry).as_millis() / 1000;
        let signature = self.sign(notification_id, VOICE, expires);
        format!(
            "{}/integrations/twilio/voice/{notification_id}?expires={expires}&sig={signature}",
            self.public_url
        )
    }

    /// Checks a call document's URL parts at `now`.
    pub fn verify_voice(
        &self,
        notification_id: Uuid,
        expires: i64,
        signature: &str,
        now: Timestamp,
    ) -> Result<(), LinkError> {
        let tag = unhex(signature).ok_or(LinkError::Tampered)?;
        self.mac(notification_id, VOICE, expires)
            .verify_slice(&tag)
            .map_err(|_| LinkError::Tampered)?;
        if now.as_millis() / 1000 > expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }

    /// Checks `link` at `now`: its signature (compared in constant time), then its expiry.
    pub fn verify(&self, link: &SignedLink, now: Timestamp) -> Result<(), LinkError> {
        if !LINK_ACTIONS.contains(&link.action) {
            return Err(LinkError::Tampered);
        }
        let tag = unhex(&link.signature).ok_or(LinkError::Tampered)?;
        self.mac(link.notification_id, link.action.as_str(), link.expires)
            .verify_slice(&tag)
            .map_err(|_| LinkError::Tampered)?;
        if now.as_millis() / 1000 > link.expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> LinkSigner {
        LinkSigner::new(
            "0123456789abcdef",
            "https://klaxon.example.com/",
            Duration::from_secs(3600),
        )
    }

    /// Reads a link's parts back from its URL, as the router would.
    fn parse(url: &str) -> SignedLink {
        let rest = url
            .strip_prefix("https://klaxon.example.com/links/")
            .unwrap();
        let (path, query) = rest.split_once('?').unwrap();
        let (id, action) = path.split_once('/').unwrap();
        let action = LINK_ACTIONS
            .into_iter()
            .find(|a| a.as_str() == action)
            .unwrap();
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let value = |name: &str| pairs.iter().find(|(k, _)| k == name).unwrap().1.clone();
        SignedLink {
            notification_id: id.parse().unwrap(),
            action,
            expires: value("expires").parse().unwrap(),
            signature: value("sig"),
        }
    }

    #[test]
    fn links_verify_until_they_expire() {
        let (notification, incident) = (Uuid::now_v7(), Uuid::now_v7());
        let now = Timestamp::from_millis(1_800_000_000_000);
        let links = signer().links(notification, incident, now);
        assert_eq!(
            links.incident,
            format!("https://klaxon.example.com/incidents/{incident}")
        );
        let acknowledge = parse(&links.acknowledge);
        assert_eq!(
            (acknowledge.notification_id, acknowledge.action),
            (notification, Action::Acknowledge)
        );
        assert_eq!(acknowledge.expires, 1_800_003_600);
        assert_eq!(signer().verify(&acknowledge, now), Ok(()));
        assert_eq!(signer().verify(&parse(&links.resolve), now), Ok(()));
        let later = now.after(Duration::from_secs(3601));
        assert_eq!(
            signer().verify(&acknowledge, later),
            Err(LinkError::Expired)
        );
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let now = Timestamp::from_millis(1_800_000_000_000);
        let links = signer().links(Uuid::now_v7(), Uuid::now_v7(), now);
        let good = parse(&links.acknowledge);
        let tampered = [
            SignedLink {
                action: Action::Resolve,
                ..good.clone()
            },
            SignedLink {
                action: Action::Cancel,
                ..good.clone()
            },
            SignedLink {
                expires: good.expires + 86_400,
                ..good.clone()
            },
            SignedLink {
                notification_id: Uuid::now_v7(),
                ..good.clone()
            },
            SignedLink {
                signature: good.signature[..62].to_owned(),
                ..good.clone()
            },
            SignedLink {
                signature: "zz".repeat(32),
                ..good.clone()
            },
        ];
        for link in tampered {
            assert_eq!(
                signer().verify(&link, now),
                Err(LinkError::Tampered),
                "{link:?}"
            );
        }
        let other_key = LinkSigner::new(
            "another key",
            "https://klaxon.example.com",
            Duration::from_secs(3600),
        );
        assert_eq!(other_key.verify(&good, now), Err(LinkError::Tampered));
    }
}
