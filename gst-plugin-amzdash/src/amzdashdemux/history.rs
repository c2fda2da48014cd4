// SPDX-License-Identifier: MPL-2.0
//! The engine's [`History`] as a GstContext, so that it outlives one demuxer the GStreamer way
//! (as GL displays do): the demuxer asks for it with a need-context message when it goes to
//! READY, and when nobody has one it makes one and posts it with have-context. Bins keep what
//! their children post and give it to the next demuxer they hold (playbin3, track after track);
//! an application carries it to its next pipeline with `gst_element_set_context()`.

use gst::glib;
use gst::prelude::*;
use std::sync::Mutex;

use crate::engine::History;

/// The context type (public: applications carry it between pipelines).
pub const CONTEXT_TYPE: &str = "amzdash.history";
/// The field of the context's structure that holds the history.
const FIELD: &str = "history";

/// The history as a GValue.
#[derive(Clone, Debug, glib::Boxed)]
#[boxed_type(name = "GstAmzDashHistory")]
struct BoxedHistory(History);

/// A persistent context holding `history`.
pub fn context(history: &History) -> gst::Context {
    let mut ctx = gst::Context::new(CONTEXT_TYPE, true);
    ctx.get_mut()
        .unwrap()
        .structure_mut()
        .set(FIELD, BoxedHistory(history.clone()));
    ctx
}

/// The history a context of our type holds; None for any other context.
pub fn from_context(ctx: &gst::ContextRef) -> Option<History> {
    if ctx.context_type() != CONTEXT_TYPE {
        return None;
    }
    ctx.structure().get::<BoxedHistory>(FIELD).ok().map(|b| b.0)
}

/// Where the element keeps its history.
#[derive(Debug, Default)]
pub struct HistorySlot(Mutex<Option<History>>);

impl HistorySlot {
    /// Takes the history `ctx` holds; false for another context.
    pub fn set_from(&self, ctx: &gst::ContextRef) -> bool {
        let Some(h) = from_context(ctx) else {
            return false;
        };
        *self.0.lock().unwrap() = Some(h);
        true
    }

    /// The history a bin or the application holds (need-context), else a new one, which is
    /// posted (have-context) for the next demuxer. Nothing when `element` has one already.
    pub fn obtain(&self, element: &gst::Element) {
        if self.0.lock().unwrap().is_some() {
            return;
        }
        // A bin that holds one sets it on the element (set_context) before this returns.
        let _ = element.post_message(
            gst::message::NeedContext::builder(CONTEXT_TYPE)
                .src(element)
                .build(),
        );
        if self.0.lock().unwrap().is_some() {
            return;
        }
        let h = History::new();
        let ctx = context(&h);
        *self.0.lock().unwrap() = Some(h);
        element.set_context(&ctx);
        let _ = element.post_message(gst::message::HaveContext::builder(ctx).src(element).build());
    }

    /// The history (a new one if the element never went to READY).
    pub fn get(&self) -> History {
        self.0
            .lock()
            .unwrap()
            .get_or_insert_with(History::new)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_carries_the_same_history() {
        gst::init().unwrap();
        let h = History::new();
        let ctx = context(&h);
        assert!(ctx.is_persistent());
        assert!(from_context(&ctx).unwrap().is_same(&h));
        let other = gst::Context::new("gst.gl.GLDisplay", true);
        assert!(from_context(&other).is_none());
    }

    #[test]
    fn demuxers_of_one_pipeline_share_a_history_and_other_pipelines_start_cold() {
        gst::init().unwrap();
        static REGISTER: std::sync::Once = std::sync::Once::new();
        REGISTER.call_once(|| crate::plugin_register_static().unwrap());
        let ready_demuxer_in = |bin: &gst::Pipeline| {
            let e = gst::ElementFactory::make("amzdashdemux").build().unwrap();
            bin.add(&e).unwrap();
            e.set_state(gst::State::Ready).unwrap();
            let h = from_context(&e.context(CONTEXT_TYPE).unwrap()).unwrap();
            (e, h)
        };
        let first = gst::Pipeline::new();
        let (a, h) = ready_demuxer_in(&first);
        // The pipeline keeps the context its demuxer posted...
        let kept = first
            .context(CONTEXT_TYPE)
            .expect("a bin keeps the context its child posted");
        assert!(from_context(&kept).unwrap().is_same(&h));
        // ...and the next demuxer in it (playbin3's next track) starts from the same one.
        let (b, hb) = ready_demuxer_in(&first);
        assert!(hb.is_same(&h));
        // Another pipeline starts cold: nothing is process-wide.
        let second = gst::Pipeline::new();
        let (c, hc) = ready_demuxer_in(&second);
        assert!(!hc.is_same(&h));
        // Unless the application carries the context over.
        let third = gst::Pipeline::new();
        third.set_context(&kept);
        let (d, hd) = ready_demuxer_in(&third);
        assert!(hd.is_same(&h));
        for e in [a, b, c, d] {
            e.set_state(gst::State::Null).unwrap();
        }
    }
}
