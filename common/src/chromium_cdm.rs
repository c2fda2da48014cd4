// SPDX-License-Identifier: MPL-2.0
//! The plain-data part of Chromium's library CDM ABI (`content_decryption_module.h`), in our own
//! declarations, for both of its sides in this workspace: widevinedecrypt's `chromium:` host and
//! the test CDM (test-cdms/chromium). The classes (vtables) are C++, in
//! gst-plugin-widevine-stub/cdm-shim/cdm_abi.h; these structs match the ones declared there.

/// `cdm::InputBuffer_2`: 80 bytes on 64-bit, explicit padding after each 32-bit size that
/// precedes a pointer.
#[repr(C)]
pub struct EncryptedInput {
    pub data: *const u8,
    pub data_size: u32,
    pub scheme: u32,
    pub key_id: *const u8,
    pub key_id_size: u32,
    pub pad0: u32,
    pub iv: *const u8,
    pub iv_size: u32,
    pub pad1: u32,
    pub subsamples: *const SubsampleEntry,
    pub subsample_count: u32,
    pub pad2: u32,
    /// The pattern's encrypted blocks.
    pub crypt: u32,
    /// The pattern's clear blocks.
    pub skip: u32,
    /// Microseconds.
    pub timestamp: i64,
}

/// `cdm::SubsampleEntry`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubsampleEntry {
    pub clear: u32,
    pub cipher: u32,
}

/// `cdm::KeyInformation`.
#[repr(C)]
pub struct KeyInfo {
    pub key_id: *const u8,
    pub key_id_size: u32,
    pub status: u32,
    pub system_code: u32,
}

/// `cdm::EncryptionScheme`.
pub const SCHEME_CENC: u32 = 1;
pub const SCHEME_CBCS: u32 = 2;

/// `cdm::InitDataType`.
pub const INIT_CENC: u32 = 0;
pub const INIT_KEYIDS: u32 = 1;

/// `cdm::Status`.
pub const STATUS_OK: u32 = 0;
pub const STATUS_NO_KEY: u32 = 2;
pub const STATUS_DECRYPT_ERROR: u32 = 4;

/// `cdm::Exception`.
pub const EXCEPTION_TYPE_ERROR: u32 = 0;
pub const EXCEPTION_NOT_SUPPORTED: u32 = 1;
pub const EXCEPTION_INVALID_STATE: u32 = 2;
pub const EXCEPTION_QUOTA_EXCEEDED: u32 = 3;

/// `cdm::MessageType`.
pub const MESSAGE_REQUEST: u32 = 0;
pub const MESSAGE_RENEWAL: u32 = 1;

/// `cdm::KeyStatus`.
pub const KEY_USABLE: u32 = 0;
pub const KEY_INTERNAL_ERROR: u32 = 1;
pub const KEY_EXPIRED: u32 = 2;
pub const KEY_OUTPUT_RESTRICTED: u32 = 3;
pub const KEY_OUTPUT_DOWNSCALED: u32 = 4;
pub const KEY_PENDING: u32 = 5;
pub const KEY_RELEASED: u32 = 6;

/// The name of a `cdm::Exception`, for messages.
pub fn exception_name(e: u32) -> String {
    match e {
        EXCEPTION_TYPE_ERROR => "TypeError".into(),
        EXCEPTION_NOT_SUPPORTED => "NotSupportedError".into(),
        EXCEPTION_INVALID_STATE => "InvalidStateError".into(),
        EXCEPTION_QUOTA_EXCEEDED => "QuotaExceededError".into(),
        _ => format!("exception {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_header() {
        if std::mem::size_of::<usize>() == 8 {
            assert_eq!(std::mem::size_of::<EncryptedInput>(), 80);
            assert_eq!(std::mem::size_of::<KeyInfo>(), 24);
        }
        assert_eq!(std::mem::size_of::<SubsampleEntry>(), 8);
        assert_eq!(exception_name(1), "NotSupportedError");
        assert_eq!(exception_name(9), "exception 9");
    }
}
