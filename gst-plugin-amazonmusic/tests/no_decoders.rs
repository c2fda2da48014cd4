// SPDX-License-Identifier: MPL-2.0
//! With the audio decoders removed from this process's registry, the source says which plugin
//! to install: at start for `quality=auto`, after the manifest for an explicit quality.
//! Its own process: removing registry features is process-wide.

mod common;

use std::time::Duration;

use common::*;
use gst::prelude::*;

fn remove_decoders() {
    init();
    let registry = gst::Registry::get();
    for name in ["flacdec", "opusdec", "avdec_eac3", "avdec_ac3", "avdec_aac"] {
        if let Some(f) = gst::ElementFactory::find(name) {
            registry.remove_feature(&f);
        }
    }
    assert!(gst::ElementFactory::find("flacdec").is_none());
}

#[test]
fn missing_decoders_are_named() {
    remove_decoders();
    let emu = Emulator::start(&[]).unwrap();
    let dir = temp_dir();
    let token_file = emu.sign_in(dir.path());

    // auto: nothing to ask for.
    let run = Running::new(source(&emu, &token_file, "B0EMUHD001"));
    let (err, _) = run.error(Duration::from_secs(30));
    assert!(err.matches(gst::StreamError::CodecNotFound), "{err:?}");
    assert!(
        err.message().contains("flacdec (gst-plugins-good)")
            && err.message().contains("opusdec (gst-plugins-base)"),
        "{}",
        err.message()
    );
    assert!(emu.audio_calls("B0EMUHD001").is_empty());
    drop(run);

    // hd: asked, but nothing in the manifest can be decoded here.
    let src = source(&emu, &token_file, "B0EMUHD001");
    src.set_property_from_str("quality", "hd");
    let run = Running::new(src);
    let (err, _) = run.error(Duration::from_secs(30));
    assert!(err.matches(gst::StreamError::CodecNotFound), "{err:?}");
    assert!(
        err.message().contains("flacdec") && err.message().contains("opusdec"),
        "{}",
        err.message()
    );
    assert_eq!(emu.audio_calls("B0EMUHD001").len(), 1);
}
