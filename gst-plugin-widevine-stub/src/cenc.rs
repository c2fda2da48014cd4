// SPDX-License-Identifier: MPL-2.0
//! CENC sample decryption (`cenc`, `cbcs`): `amzmusic_common::cenc`, which the test CDM modules
//! (`test-cdms/`) link too; this is its old path.

pub use amzmusic_common::cenc::*;
