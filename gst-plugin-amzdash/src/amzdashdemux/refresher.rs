// SPDX-License-Identifier: MPL-2.0
//! The engine's [`Refresher`]: the contract's refresh query, asked through the sink pad's peer.

use gst::glib;
use gst::prelude::*;

use super::audio_object::audio_object_from_structure;
use crate::engine::{AudioObject, Refresher};
use amzmusic_common::contract;

/// Answers the contract's refresh query through the sink pad's peer.
pub struct PadRefresher(pub glib::WeakRef<gst::Pad>);

/// The refresh query: the contract's structure with why and which generation is stale.
pub fn refresh_query(reason: &str, generation: u32) -> gst::query::Custom<gst::Query> {
    gst::query::Custom::new(contract::refresh_query_structure(reason, generation))
}

impl Refresher for PadRefresher {
    fn refresh(&self, reason: &str, generation: u32) -> Option<AudioObject> {
        let pad = self.0.upgrade()?;
        let mut q = refresh_query(reason, generation);
        if !pad.peer_query(&mut q) {
            return None;
        }
        audio_object_from_structure(q.structure()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_the_reason_and_the_generation() {
        gst::init().unwrap();
        let q = refresh_query("expired", 3);
        let s = q.structure().unwrap();
        assert_eq!(s.name(), contract::AUDIO_OBJECT);
        assert_eq!(s.get::<&str>("reason"), Ok("expired"));
        assert_eq!(s.get::<u32>("generation"), Ok(3));
    }

    #[test]
    fn no_peer_no_refresh() {
        gst::init().unwrap();
        let pad = gst::Pad::new(gst::PadDirection::Sink);
        assert!(PadRefresher(pad.downgrade())
            .refresh("expired", 1)
            .is_none());
    }
}
