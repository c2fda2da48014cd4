#!/usr/bin/python3
"""Plays one Amazon Music track from Python (python3-gi) with Gst.parse_launch and exits 0 at
its end; with --wav FILE it writes the decoded audio there instead of to a fakesink.

    set -a; . /tmp/amz.env; set +a              # amzmusic-emulator serve --env-file /tmp/amz.env
    GST_PLUGIN_PATH=$PWD/target/debug /usr/bin/python3 examples/python/play.py B0EMUHD001 [--wav out.wav]

The elements read the endpoints and the token from the environment (or amzmusic-login's token
file), so the track id is the only property to set.
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("track_id")
    ap.add_argument("--wav", help="write the decoded audio to this WAV file")
    args = ap.parse_args()

    Gst.init(None)
    if args.wav:
        # One WAV header for the whole track: fix the format, since the demuxer may switch
        # representations (44.1/16 to 48/24 FLAC, or Opus) while it plays.
        sink = (
            "audioresample ! audio/x-raw,format=S24LE,rate=48000,channels=2 ! "
            'wavenc ! filesink location="%s"' % args.wav.replace('"', "")
        )
    else:
        sink = "fakesink sync=false"
    pipeline = Gst.parse_launch(
        "amazonmusicsrc track-id=%s ! amzdashdemux ! qtdemux ! widevinedecrypt ! "
        "flacparse ! flacdec ! audioconvert ! %s" % (args.track_id, sink)
    )
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        print("play.py: the pipeline refused to start", file=sys.stderr)
        return 1
    msg = pipeline.get_bus().timed_pop_filtered(
        Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    status = 0
    if msg.type == Gst.MessageType.ERROR:
        err, _debug = msg.parse_error()
        print("play.py: error from %s: %s" % (msg.src.get_name(), err.message), file=sys.stderr)
        status = 1
    else:
        ok, position = pipeline.query_position(Gst.Format.TIME)
        print("played %s to the end (%.3f s)" % (args.track_id, position / Gst.SECOND if ok else -1))
    pipeline.set_state(Gst.State.NULL)
    return status


if __name__ == "__main__":
    sys.exit(main())
