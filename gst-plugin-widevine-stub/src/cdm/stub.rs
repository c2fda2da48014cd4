//! The software stub CDM (security level L3): parses Widevine PSSHs, speaks the stub license
//! protocol of `crate::protocol`, keeps keys zeroized in memory, decrypts with `crate::cenc`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::{
    Cdm, CdmError, InitDataType, KeyStatus, LicenseUpdate, MessageType, SecurityLevel, SessionId,
    SessionMessage,
};
use crate::cenc::{self, SampleProtection};
use crate::protocol::{
    emulator_server_public_key, widevine_init_data, ClientInfo, ClientSession, KeyId,
    LicensePolicy, RequestKind, WIDEVINE_SYSTEM_ID,
};

struct Session {
    client: ClientSession,
    policy: Option<LicensePolicy>,
}

struct StoredKey {
    key: cenc::Key,
    session: SessionId,
    expires_at: Option<Instant>,
}

/// The default CDM. Cheap to create; one per element instance.
pub struct StubCdm {
    sessions: Mutex<HashMap<SessionId, Session>>,
    keys: Mutex<HashMap<KeyId, StoredKey>>,
    /// Its provisioning: the public key of the only license server it takes licenses from.
    trusted_server: Mutex<[u8; 32]>,
}

impl Default for StubCdm {
    fn default() -> Self {
        StubCdm {
            sessions: Mutex::default(),
            keys: Mutex::default(),
            trusted_server: Mutex::new(emulator_server_public_key()),
        }
    }
}

impl StubCdm {
    pub fn new() -> Self {
        Self::default()
    }

    /// Provisions the CDM with the license server it trusts (default: the emulator's), for
    /// sessions created from now on.
    pub fn set_trusted_server(&self, public: [u8; 32]) {
        *self.trusted_server.lock().unwrap() = public;
    }

    pub fn trusted_server(&self) -> [u8; 32] {
        *self.trusted_server.lock().unwrap()
    }
}

fn key_ids_from_init_data(
    init_data_type: InitDataType,
    init_data: &[u8],
) -> Result<(Vec<KeyId>, Vec<u8>), CdmError> {
    let (kids, content_id) = match init_data_type {
        InitDataType::Cenc => {
            let data = widevine_init_data(init_data)?;
            (data.key_ids, data.content_id)
        }
        InitDataType::KeyIds => (
            init_data
                .chunks_exact(16)
                .filter_map(KeyId::from_slice)
                .collect(),
            Vec::new(),
        ),
    };
    if kids.is_empty() {
        return Err(CdmError::NoKeyIds);
    }
    Ok((kids, content_id))
}

impl Cdm for StubCdm {
    fn system_id(&self) -> [u8; 16] {
        WIDEVINE_SYSTEM_ID
    }

    fn security_level(&self) -> SecurityLevel {
        SecurityLevel::L3
    }

    fn create_session(
        &self,
        init_data_type: InitDataType,
        init_data: &[u8],
    ) -> Result<(SessionId, SessionMessage), CdmError> {
        let (kids, content_id) = key_ids_from_init_data(init_data_type, init_data)?;
        let mut client = ClientSession::new(kids, content_id, ClientInfo::default())
            .trust_server(self.trusted_server());
        let payload = client.challenge(RequestKind::License);
        let id = client.session_id().to_owned();
        self.sessions.lock().unwrap().insert(
            id.clone(),
            Session {
                client,
                policy: None,
            },
        );
        Ok((
            id,
            SessionMessage {
                kind: MessageType::LicenseRequest,
                payload,
            },
        ))
    }

    fn session_key_ids(&self, session: &SessionId) -> Result<Vec<KeyId>, CdmError> {
        let sessions = self.sessions.lock().unwrap();
        let s = sessions
            .get(session)
            .ok_or_else(|| CdmError::NoSuchSession(session.clone()))?;
        Ok(s.client.key_ids().to_vec())
    }

    fn update(&self, session: &SessionId, response: &[u8]) -> Result<LicenseUpdate, CdmError> {
        let mut sessions = self.sessions.lock().unwrap();
        let s = sessions
            .get_mut(session)
            .ok_or_else(|| CdmError::NoSuchSession(session.clone()))?;
        let license = s.client.accept_license(response)?;
        let now = Instant::now();
        // A time further off than an Instant can hold (a policy of 2^64-1 s) is "never".
        let expires_at = license.policy.duration().and_then(|d| now.checked_add(d));
        let renew_at = license
            .policy
            .renewal_after()
            .and_then(|d| now.checked_add(d));
        s.policy = Some(license.policy);

        let mut keys = self.keys.lock().unwrap();
        let mut key_statuses = Vec::new();
        for ck in license.keys {
            keys.insert(
                ck.kid,
                StoredKey {
                    key: cenc::Key::new(*ck.key),
                    session: session.clone(),
                    expires_at,
                },
            );
            key_statuses.push((ck.kid, KeyStatus::Usable));
        }
        // Key ids asked for but not granted stay pending: the caller decides how long to wait.
        for kid in s.client.key_ids() {
            if !key_statuses.iter().any(|(k, _)| k == kid) {
                key_statuses.push((*kid, KeyStatus::StatusPending));
            }
        }
        Ok(LicenseUpdate {
            key_statuses,
            expires_at,
            renew_at,
        })
    }

    fn renewal_request(&self, session: &SessionId) -> Result<SessionMessage, CdmError> {
        let mut sessions = self.sessions.lock().unwrap();
        let s = sessions
            .get_mut(session)
            .ok_or_else(|| CdmError::NoSuchSession(session.clone()))?;
        if !s.policy.is_some_and(|p| p.can_renew) {
            return Err(CdmError::RenewalNotAllowed);
        }
        Ok(SessionMessage {
            kind: MessageType::LicenseRenewal,
            payload: s.client.challenge(RequestKind::Renewal),
        })
    }

    fn close_session(&self, session: &SessionId) {
        self.sessions.lock().unwrap().remove(session);
        // Dropping a StoredKey zeroizes it.
        self.keys
            .lock()
            .unwrap()
            .retain(|_, k| &k.session != session);
    }

    fn key_status(&self, kid: &KeyId) -> Option<KeyStatus> {
        let keys = self.keys.lock().unwrap();
        let k = keys.get(kid)?;
        Some(match k.expires_at {
            Some(t) if Instant::now() >= t => KeyStatus::Expired,
            _ => KeyStatus::Usable,
        })
    }

    fn decrypt(
        &self,
        kid: &KeyId,
        protection: &SampleProtection<'_>,
        data: &mut [u8],
    ) -> Result<(), CdmError> {
        // Clone out of the lock (a 16-byte copy, zeroized on drop) so decryption never blocks
        // a license update.
        let key = {
            let keys = self.keys.lock().unwrap();
            let k = keys.get(kid).ok_or(CdmError::NoKey(*kid))?;
            if let Some(t) = k.expires_at {
                let now = Instant::now();
                if now >= t {
                    return Err(CdmError::KeyExpired {
                        kid: *kid,
                        ago: now - t,
                    });
                }
            }
            k.key.clone()
        };
        cenc::decrypt_in_place(&key, protection, data)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cenc::{Pattern, Scheme};
    use crate::protocol::{issue_license, WidevinePsshData};
    use std::time::Duration;

    const KID: KeyId = KeyId([0x42; 16]);
    const OTHER: KeyId = KeyId([0x43; 16]);
    const KEY: [u8; 16] = [0x99; 16];

    fn pssh() -> Vec<u8> {
        WidevinePsshData {
            key_ids: vec![KID, OTHER],
            content_id: b"c".to_vec(),
            provider: None,
        }
        .to_pssh_box()
    }

    fn server(kid: &KeyId) -> Option<[u8; 16]> {
        (*kid == KID).then_some(KEY)
    }

    #[test]
    fn license_flow_then_decrypt() {
        let cdm = StubCdm::new();
        assert_eq!(cdm.security_level(), SecurityLevel::L3);
        let (sid, msg) = cdm.create_session(InitDataType::Cenc, &pssh()).unwrap();
        assert_eq!(msg.kind, MessageType::LicenseRequest);
        assert_eq!(cdm.session_key_ids(&sid).unwrap(), vec![KID, OTHER]);
        assert_eq!(cdm.key_status(&KID), None);

        let policy = LicensePolicy {
            license_duration_secs: 100,
            renewal_delay_secs: 10,
            can_renew: true,
        };
        let license = issue_license(&msg.payload, server, &policy).unwrap();
        let up = cdm.update(&sid, &license).unwrap();
        assert_eq!(
            up.key_statuses,
            vec![(KID, KeyStatus::Usable), (OTHER, KeyStatus::StatusPending)]
        );
        let renew_in = up.renew_at.unwrap() - Instant::now();
        assert!(renew_in <= Duration::from_secs(10) && renew_in > Duration::from_secs(9));
        assert_eq!(cdm.key_status(&KID), Some(KeyStatus::Usable));

        // Decrypt a sample encrypted with the key the server holds.
        let iv = [1u8; 8];
        let prot = SampleProtection {
            scheme: Scheme::Cenc,
            iv: &iv,
            subsamples: &[],
            pattern: Pattern::default(),
        };
        let mut data = b"some audio frame".to_vec();
        cenc::encrypt_in_place(&cenc::Key::new(KEY), &prot, &mut data).unwrap();
        cdm.decrypt(&KID, &prot, &mut data).unwrap();
        assert_eq!(data, b"some audio frame");
        assert_eq!(
            cdm.decrypt(&OTHER, &prot, &mut data),
            Err(CdmError::NoKey(OTHER))
        );

        let renewal = cdm.renewal_request(&sid).unwrap();
        assert_eq!(renewal.kind, MessageType::LicenseRenewal);
        let renewed = issue_license(&renewal.payload, server, &policy).unwrap();
        cdm.update(&sid, &renewed).unwrap();

        cdm.close_session(&sid);
        assert_eq!(cdm.key_status(&KID), None);
    }

    #[test]
    fn expired_keys_refuse_to_decrypt() {
        let cdm = StubCdm::new();
        let (sid, msg) = cdm.create_session(InitDataType::Cenc, &pssh()).unwrap();
        let policy = LicensePolicy {
            license_duration_secs: 1,
            renewal_delay_secs: 0,
            can_renew: false,
        };
        let up = cdm
            .update(&sid, &issue_license(&msg.payload, server, &policy).unwrap())
            .unwrap();
        assert_eq!(up.renew_at, None);
        assert!(matches!(
            cdm.renewal_request(&sid),
            Err(CdmError::RenewalNotAllowed)
        ));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(cdm.key_status(&KID), Some(KeyStatus::Expired));
        let iv = [0u8; 16];
        let prot = SampleProtection {
            scheme: Scheme::Cbcs,
            iv: &iv,
            subsamples: &[],
            pattern: Pattern::default(),
        };
        assert!(matches!(
            cdm.decrypt(&KID, &prot, &mut [0u8; 32]),
            Err(CdmError::KeyExpired { .. })
        ));
    }

    #[test]
    fn a_policy_beyond_any_instant_means_never_not_a_panic() {
        let cdm = StubCdm::new();
        let (sid, msg) = cdm.create_session(InitDataType::Cenc, &pssh()).unwrap();
        let policy = LicensePolicy {
            license_duration_secs: u64::MAX,
            renewal_delay_secs: u64::MAX,
            can_renew: true,
        };
        let up = cdm
            .update(&sid, &issue_license(&msg.payload, server, &policy).unwrap())
            .unwrap();
        assert_eq!((up.expires_at, up.renew_at), (None, None));
        assert_eq!(cdm.key_status(&KID), Some(KeyStatus::Usable));
        // The CDM's locks are not poisoned: the session still closes.
        cdm.close_session(&sid);
        assert_eq!(cdm.key_status(&KID), None);
    }

    #[test]
    fn bad_init_data_is_an_error() {
        let cdm = StubCdm::new();
        assert!(cdm.create_session(InitDataType::Cenc, b"junk").is_err());
        assert!(matches!(
            cdm.create_session(InitDataType::KeyIds, &[1, 2, 3]),
            Err(CdmError::NoKeyIds)
        ));
        let (sid, _) = cdm
            .create_session(InitDataType::KeyIds, &[7u8; 32])
            .unwrap();
        assert!(cdm.update(&sid, b"{}").is_err());
        assert!(cdm.update(&"nope".to_string(), b"{}").is_err());
    }
}
