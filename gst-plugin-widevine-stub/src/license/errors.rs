// SPDX-License-Identifier: MPL-2.0
//! The error table: every way licensing or decryption fails, and the GStreamer error (domain and
//! message) the element posts for it (docs/license-protocol.md).

use std::time::Duration;

use crate::cdm::CdmError;
use crate::fetch::FetchError;
use crate::protocol::KeyId;

/// Which exchange of a license session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The session's first license request.
    First,
    /// A renewal of the license the session holds.
    Renewal,
}

impl Phase {
    fn what(self) -> &'static str {
        match self {
            Phase::First => "license request",
            Phase::Renewal => "license renewal",
        }
    }
}

/// Why a sample waited in vain for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoKeyReason {
    /// Neither the property nor the manifest gave a license URL.
    NoLicenseUrl,
    /// A license was asked for and did not come within the key timeout.
    NotInTime,
    /// No license session asked for the key id.
    NotNamed,
}

impl NoKeyReason {
    fn text(self) -> &'static str {
        match self {
            NoKeyReason::NoLicenseUrl => {
                "no license URL is known and the keys property does not hold it"
            }
            NoKeyReason::NotInTime => "the license did not arrive in time",
            NoKeyReason::NotNamed => "no license names it",
        }
    }
}

/// A licensing or decryption failure that ends playback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The CDM cannot open a session from the init data.
    SessionNotCreated(CdmError),
    /// The license server refused, or stayed silent, after the retries.
    Fetch {
        error: FetchError,
        kids: Vec<KeyId>,
        phase: Phase,
    },
    /// The CDM refused the license the server sent.
    LicenseRejected(CdmError),
    /// The key expired and its renewal failed (`why`).
    Expired { kid: KeyId, why: String },
    /// The key did not become usable within the key timeout.
    NoKey {
        kid: KeyId,
        waited: Duration,
        reason: NoKeyReason,
    },
    /// A sample's protection meta cannot be read.
    BadMeta(String),
    /// A sample does not decrypt.
    Decrypt(CdmError),
    /// A FLAC sample decrypted with `kid`'s key fails its frame-header check (`fault`): the
    /// key, though from a license that verified, is not the one the content was encrypted with.
    WrongKey { kid: KeyId, fault: &'static str },
}

impl Failure {
    /// Failed HTTP attempts behind this failure (a body that is not a license counts one).
    pub fn attempts(&self) -> u32 {
        match self {
            Failure::Fetch { error, .. } => match error {
                FetchError::Server { attempts, .. } | FetchError::Transport { attempts, .. } => {
                    *attempts
                }
                FetchError::BadBody(_) | FetchError::Unanswerable(_) => 1,
            },
            _ => 0,
        }
    }

    /// What went wrong in one phrase (kept while a renewal is retried, named at expiry).
    pub fn reason(&self) -> String {
        match self {
            Failure::Fetch { error, .. } => error.to_string(),
            Failure::SessionNotCreated(e) | Failure::LicenseRejected(e) | Failure::Decrypt(e) => {
                e.to_string()
            }
            Failure::Expired { why, .. } => why.clone(),
            Failure::NoKey { reason, .. } => reason.text().to_owned(),
            Failure::BadMeta(why) => why.clone(),
            Failure::WrongKey { fault, .. } => (*fault).to_owned(),
        }
    }

    /// The error the element posts for this failure.
    pub fn error_message(&self) -> gst::ErrorMessage {
        let text = self.message();
        match self.domain() {
            Domain::Resource(e) => gst::error_msg!(e, ("{}", text)),
            Domain::Stream(e) => gst::error_msg!(e, ("{}", text)),
        }
    }

    /// The GStreamer error domain: the table of docs/license-protocol.md.
    pub fn domain(&self) -> Domain {
        use gst::{ResourceError as R, StreamError as S};
        match self {
            Failure::Fetch {
                error: FetchError::Server { error, .. },
                ..
            } => match error.status() {
                404 => Domain::Stream(S::DecryptNokey),
                401 | 403 => Domain::Resource(R::NotAuthorized),
                429 | 500..=599 => Domain::Resource(R::Read),
                _ => Domain::Stream(S::Decrypt),
            },
            Failure::Fetch {
                error: FetchError::Transport { .. } | FetchError::Unanswerable(_),
                ..
            } => Domain::Resource(R::Read),
            Failure::Expired { .. } | Failure::NoKey { .. } => Domain::Stream(S::DecryptNokey),
            Failure::Fetch {
                error: FetchError::BadBody(_),
                ..
            }
            | Failure::SessionNotCreated(_)
            | Failure::LicenseRejected(_)
            | Failure::BadMeta(_)
            | Failure::Decrypt(_)
            | Failure::WrongKey { .. } => Domain::Stream(S::Decrypt),
        }
    }

    /// The message a person reads.
    pub fn message(&self) -> String {
        match self {
            Failure::SessionNotCreated(e) => {
                format!("The CDM cannot start a license session: {e}")
            }
            Failure::Fetch { error, kids, phase } => {
                let what = phase.what();
                match error {
                    FetchError::Server { error: e, .. } => match e.status() {
                        404 => format!(
                            "The license server has no key for key ids {}: {error}",
                            kid_list(kids)
                        ),
                        401 | 403 => format!("The license server refused the {what}: {error}"),
                        429 | 500..=599 => {
                            format!("The license server stayed unavailable for the {what}: {error}")
                        }
                        _ => format!("The license server rejected the {what}: {error}"),
                    },
                    FetchError::Transport { .. } => {
                        format!("The license server could not be reached for the {what}: {error}")
                    }
                    FetchError::BadBody(_) => {
                        format!("The {what} got an answer that is not a license: {error}")
                    }
                    FetchError::Unanswerable(_) => format!("The {what} failed: {error}"),
                }
            }
            Failure::LicenseRejected(e) => format!("The license was rejected by the CDM: {e}"),
            Failure::Expired { kid, why } => {
                format!("The license for key id {kid} expired and its renewal failed: {why}")
            }
            Failure::NoKey {
                kid,
                waited,
                reason,
            } => format!(
                "No key for key id {kid} after waiting {} ms: {}",
                waited.as_millis(),
                reason.text()
            ),
            Failure::BadMeta(why) => format!("Bad protection metadata: {why}"),
            Failure::Decrypt(e) => format!("Cannot decrypt sample: {e}"),
            Failure::WrongKey { kid, fault } => format!(
                "The key for key id {kid} looks wrong: a sample decrypted with it is not a \
                 FLAC frame ({fault})"
            ),
        }
    }
}

/// A GStreamer error domain and code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Resource(gst::ResourceError),
    Stream(gst::StreamError),
}

/// Key ids for a log line or a message: not secret.
pub fn kid_list(kids: &[KeyId]) -> String {
    kids.iter()
        .map(KeyId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LicenseError;
    use gst::{ResourceError as R, StreamError as S};

    fn fetch(error: LicenseError, phase: Phase) -> Failure {
        Failure::Fetch {
            error: FetchError::Server { error, attempts: 1 },
            kids: vec![KeyId([1; 16])],
            phase,
        }
    }

    #[test]
    fn server_answers_map_to_the_documented_domains() {
        let unavailable = LicenseError::Unavailable {
            retry_after_secs: None,
        };
        for phase in [Phase::First, Phase::Renewal] {
            for (error, domain) in [
                (
                    LicenseError::NotEntitled("x".into()),
                    Domain::Resource(R::NotAuthorized),
                ),
                (
                    LicenseError::InvalidToken("x".into()),
                    Domain::Resource(R::NotAuthorized),
                ),
                (
                    LicenseError::UnknownKeyId(vec![]),
                    Domain::Stream(S::DecryptNokey),
                ),
                (unavailable.clone(), Domain::Resource(R::Read)),
                (
                    LicenseError::MalformedChallenge("x".into()),
                    Domain::Stream(S::Decrypt),
                ),
            ] {
                let status = error.status();
                let f = fetch(error, phase);
                assert_eq!(f.domain(), domain, "{status}");
                let text = f.message();
                assert!(text.contains(&status.to_string()), "{text}");
                if status == 404 {
                    assert!(text.contains(&"01".repeat(16)), "{text}");
                } else {
                    assert!(text.contains(phase.what()), "{text}");
                }
            }
        }
        let transport = Failure::Fetch {
            error: FetchError::Transport {
                message: "refused".into(),
                attempts: 5,
            },
            kids: vec![],
            phase: Phase::First,
        };
        assert_eq!(transport.attempts(), 5);
        assert_eq!(transport.domain(), Domain::Resource(R::Read));
        assert!(transport.message().contains("after 5 attempt(s)"));
    }

    #[test]
    fn key_waits_are_decrypt_no_key() {
        let kid = KeyId([2; 16]);
        let f = Failure::NoKey {
            kid,
            waited: Duration::from_millis(300),
            reason: NoKeyReason::NoLicenseUrl,
        };
        assert_eq!(f.domain(), Domain::Stream(S::DecryptNokey));
        let text = f.message();
        assert!(
            text.contains(&kid.to_string()) && text.contains("300 ms"),
            "{text}"
        );
        let f = Failure::Expired {
            kid,
            why: "HTTP 403".into(),
        };
        assert_eq!(f.domain(), Domain::Stream(S::DecryptNokey));
        assert!(f.message().contains("renewal failed: HTTP 403"));
    }

    #[test]
    fn a_wrong_key_is_a_decrypt_error_naming_the_key_id() {
        let kid = KeyId([3; 16]);
        let f = Failure::WrongKey {
            kid,
            fault: "a frame header CRC-8 mismatch",
        };
        assert_eq!(f.domain(), Domain::Stream(S::Decrypt));
        let text = f.message();
        assert!(
            text.contains(&kid.to_string()) && text.contains("looks wrong"),
            "{text}"
        );
    }
}
