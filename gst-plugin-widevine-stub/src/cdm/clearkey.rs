// SPDX-License-Identifier: MPL-2.0
//! The built-in W3C Clear Key CDM (`cdm=clearkey`): common `pssh` boxes (or bare key ids) in,
//! EME's JSON license request out, a JWK set back, keys zeroized in memory. Software only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use amzmusic_common::clearkey;

use super::{
    Cdm, CdmError, InitDataType, KeyStatus, LicenseUpdate, MessageType, SecurityLevel, SessionId,
    SessionMessage,
};
use crate::cenc::{self, SampleProtection};
use crate::protocol::KeyId;

struct StoredKey {
    key: cenc::Key,
    session: SessionId,
    expires_at: Option<Instant>,
}

#[derive(Default)]
pub struct ClearKeyCdm {
    sessions: Mutex<HashMap<SessionId, Vec<KeyId>>>,
    keys: Mutex<HashMap<KeyId, StoredKey>>,
    next: Mutex<u64>,
}

impl ClearKeyCdm {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Key ids of Clear Key init data: the common `pssh` boxes' header key ids, or bare key ids.
pub fn init_data_key_ids(kind: InitDataType, init_data: &[u8]) -> Result<Vec<KeyId>, CdmError> {
    let kids = match kind {
        InitDataType::Cenc => clearkey::key_ids(init_data)?,
        InitDataType::KeyIds => init_data
            .chunks_exact(16)
            .filter_map(KeyId::from_slice)
            .collect(),
    };
    if kids.is_empty() {
        return Err(CdmError::NoKeyIds);
    }
    Ok(kids)
}

impl Cdm for ClearKeyCdm {
    fn system_id(&self) -> [u8; 16] {
        clearkey::CLEARKEY_SYSTEM_ID
    }

    fn system_ids(&self) -> Vec<[u8; 16]> {
        clearkey::SYSTEM_IDS.to_vec()
    }

    fn security_level(&self) -> SecurityLevel {
        SecurityLevel::L3
    }

    fn create_session(
        &self,
        init_data_type: InitDataType,
        init_data: &[u8],
    ) -> Result<(SessionId, SessionMessage), CdmError> {
        let kids = init_data_key_ids(init_data_type, init_data)?;
        let id = {
            let mut next = self.next.lock().unwrap();
            *next += 1;
            format!("clearkey-{next}")
        };
        let payload = clearkey::license_request(&kids);
        self.sessions.lock().unwrap().insert(id.clone(), kids);
        Ok((
            id,
            SessionMessage {
                kind: MessageType::LicenseRequest,
                payload,
            },
        ))
    }

    fn session_key_ids(&self, session: &SessionId) -> Result<Vec<KeyId>, CdmError> {
        self.sessions
            .lock()
            .unwrap()
            .get(session)
            .cloned()
            .ok_or_else(|| CdmError::NoSuchSession(session.clone()))
    }

    fn update(&self, session: &SessionId, response: &[u8]) -> Result<LicenseUpdate, CdmError> {
        let asked = self.session_key_ids(session)?;
        let license =
            clearkey::parse_license(response).map_err(|e| CdmError::BadLicense(e.to_string()))?;
        let now = Instant::now();
        let lifetime = license.expiration_secs.map(Duration::from_secs);
        let expires_at = lifetime.and_then(|d| now.checked_add(d));
        let renew_at = lifetime.and_then(|d| now.checked_add(d.mul_f64(0.8)));
        let mut keys = self.keys.lock().unwrap();
        let mut key_statuses = Vec::new();
        for (kid, key) in license.keys {
            // A JWK set may carry keys nobody asked for; the session keeps those it asked for.
            if !asked.contains(&kid) {
                continue;
            }
            keys.insert(
                kid,
                StoredKey {
                    key: cenc::Key::new(*key),
                    session: session.clone(),
                    expires_at,
                },
            );
            key_statuses.push((kid, KeyStatus::Usable));
        }
        for kid in &asked {
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
        Ok(SessionMessage {
            kind: MessageType::LicenseRenewal,
            payload: clearkey::license_request(&self.session_key_ids(session)?),
        })
    }

    fn close_session(&self, session: &SessionId) {
        self.sessions.lock().unwrap().remove(session);
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

    #[test]
    fn request_license_decrypt() {
        let kid = KeyId([5; 16]);
        let cdm = ClearKeyCdm::new();
        let (sid, msg) = cdm
            .create_session(InitDataType::Cenc, &clearkey::pssh(&[kid]))
            .unwrap();
        assert_eq!(
            clearkey::parse_license_request(&msg.payload).unwrap(),
            vec![kid]
        );
        assert!(cdm
            .update(
                &sid,
                b"{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"x\",\"k\":\"y\"}]}"
            )
            .is_err());
        let up = cdm
            .update(
                &sid,
                &clearkey::license(&[(kid, [9; 16]), (KeyId([6; 16]), [1; 16])], Some(100)),
            )
            .unwrap();
        assert_eq!(up.key_statuses, vec![(kid, KeyStatus::Usable)]);
        let renew = up.renew_at.unwrap() - Instant::now();
        assert!(renew > Duration::from_secs(79) && renew <= Duration::from_secs(80));
        assert_eq!(cdm.key_status(&KeyId([6; 16])), None);
        let iv = [3u8; 8];
        let prot = SampleProtection {
            scheme: Scheme::Cenc,
            iv: &iv,
            subsamples: &[],
            pattern: Pattern::default(),
        };
        let mut data = b"clear key sample".to_vec();
        cenc::encrypt_in_place(&cenc::Key::new([9; 16]), &prot, &mut data).unwrap();
        cdm.decrypt(&kid, &prot, &mut data).unwrap();
        assert_eq!(data, b"clear key sample");
        cdm.close_session(&sid);
        assert_eq!(cdm.key_status(&kid), None);
        // Widevine boxes alone name nothing Clear Key can ask for.
        let wv = crate::protocol::WidevinePsshData {
            key_ids: vec![kid],
            ..Default::default()
        }
        .to_pssh_box();
        assert!(matches!(
            cdm.create_session(InitDataType::Cenc, &wv),
            Err(CdmError::NoKeyIds)
        ));
    }
}
