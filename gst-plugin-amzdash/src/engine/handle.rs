// SPDX-License-Identifier: MPL-2.0
//! The element's handle on the engine: starts and stops plays on the plugin's runtime, hands
//! the streaming thread its next item, and answers what the element reports.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use amzmusic_common::codec::Codec;

use super::{run, AudioObject, Candidate, Context, Next, Presentation, Stats};

/// The plugin's one tokio runtime: every download task runs on it.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("amzdash-net")
        .enable_all()
        .build()
        .expect("tokio runtime")
});

/// One track's engine (see the module documentation).
pub struct Engine {
    ctx: Arc<Context>,
    /// The play's download task.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Engine {
    pub fn new(ctx: Context) -> Engine {
        Engine {
            ctx: Arc::new(ctx),
            task: Mutex::new(None),
        }
    }

    /// Plays from `position` (a start or a seek): empties the queue and replaces the previous
    /// play's download task.
    pub fn start(&self, position: Duration) {
        let queue = &self.ctx.queue;
        let epoch = queue.clear();
        // Nothing flows until the first fragment after this (re)start: waiting for it is
        // start-up, not an underrun.
        queue.set_playing(false);
        queue.set_flushing(false);
        let handle = RUNTIME.spawn(run(self.ctx.clone(), position, epoch));
        if let Some(old) = self.task.lock().unwrap().replace(handle) {
            old.abort();
        }
    }

    /// Stops the play's download task; dropping it drops its in-flight requests, so everything
    /// stops at once.
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }

    /// The streaming thread's next item (see [`super::Queue::next`]); an underrun is the
    /// selector's too.
    pub fn next(&self, report: impl FnMut(bool)) -> Next {
        self.ctx.queue.next(report, || self.ctx.on_underrun())
    }

    /// A newer audio object from upstream, swapped in under the swap lock.
    pub fn update_audio_object(&self, fresh: AudioObject) {
        self.ctx.update_audio_object(fresh);
    }

    pub fn presentation(&self) -> Arc<Presentation> {
        self.ctx.presentation.lock().unwrap().clone()
    }

    /// The codec the engine started in.
    pub fn family(&self) -> Codec {
        self.ctx.family
    }

    /// The counters, and the candidate the last switch went to.
    pub fn stats(&self) -> (Stats, Option<Candidate>) {
        let s = self.ctx.stats.lock().unwrap().clone();
        let p = self.presentation();
        let cand = s.candidate.map(|i| p.candidates[i].clone());
        (s, cand)
    }
}
