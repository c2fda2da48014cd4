#!/usr/bin/python3
"""How GStreamer 1.22's decodebin3 takes a FLAC -> Opus switch in fragmented MP4.

Evidence for the cross-codec design in ../README.md ("Switching design"). Feeds the emulator's
clear HD track (FLAC 44.1/16 for 0-20 s, then Opus 150k for 20-60 s, from
`amzmusic-emulator export --clear --addressing template`) into decodebin3 through appsrc, and
prints what comes out.

    amzmusic-emulator export --clear --addressing template --out /tmp/hd B0EMUHD001
    /usr/bin/python3 codec_switch_decodebin3.py /tmp/hd MODE

MODE:
  same-input       one input, new init segment after new caps      -> not-negotiated
  second-input     a second decodebin3 input for the Opus part     -> not-linked
  selectable       as second-input, upstream answers SELECTABLE,   -> the FLAC audio still
                   the new input appears at once (the old input       queued in decodebin3 is
                   ends after the new one started)                    dropped: a gap, or nothing
  selectable-late  as selectable, the new input appears once the  -> plays 0-60 s on one output
                   FLAC audio is out (0.5 s later, unsynced sink)     pad, but the last FLAC
                                                                      frame (0.1 s) is lost
  selectable-eos   as selectable, the old input ends (EOS) first   -> the output ends at 20 s
                                                                      (EOS), or decodebin3
                                                                      aborts (1 run in 2 here):
                                                                      parsebin_pad_removed_cb:
                                                                      assertion failed (input)
"""
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import Gst, GstApp  # noqa: E402,F401

Gst.init(None)
root, mode = sys.argv[1], sys.argv[2]
S = Gst.SECOND
CAPS = "video/quicktime,variant=iso-fragmented"


def read(rep, name):
    with open(f"{root}/{rep}/{name}", "rb") as f:
        return f.read()


def buf(data, pts=None, flags=0):
    b = Gst.Buffer.new_wrapped(data)
    if pts is not None:
        b.pts = pts
    if flags:
        b.set_flags(flags)
    return b


pipeline = Gst.Pipeline()
dec = Gst.ElementFactory.make("decodebin3")
out_bin = Gst.parse_bin_from_description(
    "audioconvert ! audio/x-raw,format=S16LE,channels=2 ! appsink name=sink sync=false", True
)
pipeline.add(dec)
pipeline.add(out_bin)
sink = out_bin.get_by_name("sink")
dec.connect(
    "pad-added",
    lambda _e, pad: pad.link(out_bin.get_static_pad("sink"))
    if not out_bin.get_static_pad("sink").is_linked()
    else None,
)


def source(name):
    a = Gst.ElementFactory.make("appsrc", name)
    a.set_property("format", Gst.Format.TIME)
    a.set_caps(Gst.Caps.from_string(CAPS))
    pipeline.add(a)
    if mode.startswith("selectable"):

        def answer(_pad, info):
            q = info.get_query()
            if q.type == Gst.QueryType.SELECTABLE:
                q.set_selectable(True)
                return Gst.PadProbeReturn.HANDLED
            return Gst.PadProbeReturn.OK

        a.get_static_pad("src").add_probe(Gst.PadProbeType.QUERY_UPSTREAM, answer)
    return a


out = []


def pull():
    while True:
        s = sink.emit("try-pull-sample", 4 * S)
        if s is None:
            return
        b = s.get_buffer()
        out.append((b.pts, b.duration))


a1 = source("flac")
a1.link_pads("src", dec, "sink")
pipeline.set_state(Gst.State.PLAYING)
puller = threading.Thread(target=pull)
puller.start()
a1.emit("push-buffer", buf(read("flac-44k16", "init.mp4"), None, Gst.BufferFlags.HEADER))
for i in (1, 2):
    a1.emit("push-buffer", buf(read("flac-44k16", f"{i:05d}.m4s"), (i - 1) * 10 * S))
if mode == "same-input":
    a2 = a1
else:
    if mode == "selectable-eos":
        a1.emit("end-of-stream")
        time.sleep(2)
    if mode == "selectable-late":
        time.sleep(0.5)
    a2 = source("opus")
    a2.get_static_pad("src").link(dec.request_pad_simple("sink_%u"))
    a2.sync_state_with_parent()
a2.emit("push-buffer", buf(read("opus-150k", "init.mp4"), None, Gst.BufferFlags.HEADER))
for i in (3, 4, 5, 6):
    a2.emit("push-buffer", buf(read("opus-150k", f"{i:05d}.m4s"), (i - 1) * 10 * S))
if a2 is not a1 and mode != "selectable-eos":
    time.sleep(1)
    a1.emit("end-of-stream")
a2.emit("end-of-stream")
puller.join(30)
bus = pipeline.get_bus()
while (m := bus.pop()) is not None:
    if m.type == Gst.MessageType.ERROR:
        print("error:", m.parse_error()[0].message, m.parse_error()[1].splitlines()[-1])
pipeline.set_state(Gst.State.NULL)
if out:
    end = out[-1][0] + out[-1][1]
    gaps = [
        ((a[0] + a[1]) / 1e9, b[0] / 1e9)
        for a, b in zip(out, out[1:])
        if abs(b[0] - (a[0] + a[1])) > 2_000_000
    ]
    print(f"{mode}: audio 0 .. {end / 1e9:.3f} s, gaps (from, to): {gaps}")
else:
    print(f"{mode}: no audio")
