/* Plays one Amazon Music track from C and exits 0 at its end: the chain amazonmusicsrc !
 * amzdashdemux ! qtdemux ! widevinedecrypt ! flacparse ! flacdec ! audioconvert ! <sink>,
 * built element by element with gst_element_factory_make, or in one line with gst_parse_launch.
 *
 *   cc -o play play.c $(pkg-config --cflags --libs gstreamer-1.0)
 *   set -a; . /tmp/amz.env; set +a                  # amzmusic-emulator serve --env-file /tmp/amz.env
 *   GST_PLUGIN_PATH=$PWD/target/debug ./play B0EMUHD001 [--parse] [--sink autoaudiosink]
 *
 * The elements read the endpoints and the token from the environment (or amzmusic-login's
 * token file), so the track id is the only property an application must set. */
#include <gst/gst.h>
#include <stdio.h>
#include <string.h>

/* Demuxers add their source pads once they know the stream (qtdemux after the movie header):
 * link each to the next element then. */
static void
on_pad_added (GstElement * demux, GstPad * pad, gpointer next)
{
  GstPad *sinkpad = gst_element_get_static_pad (GST_ELEMENT (next), "sink");

  if (!gst_pad_is_linked (sinkpad) && gst_pad_link (pad, sinkpad) != GST_PAD_LINK_OK)
    fprintf (stderr, "play: could not link %s to %s\n", GST_OBJECT_NAME (demux),
        GST_OBJECT_NAME (next));
  gst_object_unref (sinkpad);
}

static GstElement *
build_with_factories (const char *track_id, const char *sink_name)
{
  const char *names[] = { "amazonmusicsrc", "amzdashdemux", "qtdemux", "widevinedecrypt",
    "flacparse", "flacdec", "audioconvert", sink_name
  };
  enum { N = G_N_ELEMENTS (names) };
  GstElement *e[N];
  GstElement *pipeline = gst_pipeline_new ("play");
  guint i;

  for (i = 0; i < N; i++) {
    e[i] = gst_element_factory_make (names[i], NULL);
    if (e[i] == NULL) {
      fprintf (stderr, "play: element %s is missing (is GST_PLUGIN_PATH set?)\n", names[i]);
      gst_object_unref (pipeline);
      return NULL;
    }
    gst_bin_add (GST_BIN (pipeline), e[i]);
  }
  g_object_set (e[0], "track-id", track_id, NULL);
  if (strcmp (sink_name, "fakesink") == 0)
    g_object_set (e[N - 1], "sync", FALSE, NULL);       /* as fast as it decodes */
  if (!gst_element_link (e[0], e[1])
      || !gst_element_link_many (e[3], e[4], e[5], e[6], e[7], NULL)) {
    fprintf (stderr, "play: could not link the chain\n");
    gst_object_unref (pipeline);
    return NULL;
  }
  /* amzdashdemux's pad may exist already (link now) or come later (link on pad-added). */
  if (!gst_element_link (e[1], e[2]))
    g_signal_connect (e[1], "pad-added", G_CALLBACK (on_pad_added), e[2]);
  g_signal_connect (e[2], "pad-added", G_CALLBACK (on_pad_added), e[3]);
  return pipeline;
}

static GstElement *
build_with_parse_launch (const char *track_id, const char *sink_name)
{
  GError *err = NULL;
  gchar *desc = g_strdup_printf ("amazonmusicsrc track-id=%s ! amzdashdemux ! qtdemux ! "
      "widevinedecrypt ! flacparse ! flacdec ! audioconvert ! %s%s", track_id, sink_name,
      strcmp (sink_name, "fakesink") == 0 ? " sync=false" : "");
  GstElement *pipeline = gst_parse_launch (desc, &err);

  g_free (desc);
  if (err != NULL) {
    fprintf (stderr, "play: %s\n", err->message);
    g_clear_error (&err);
    if (pipeline != NULL)
      gst_object_unref (pipeline);
    return NULL;
  }
  return pipeline;
}

int
main (int argc, char **argv)
{
  const char *track_id = NULL, *sink_name = "fakesink";
  gboolean parse = FALSE;
  GstElement *pipeline;
  GstBus *bus;
  GstMessage *msg;
  gint64 position = -1;
  int i, status = 1;

  gst_init (&argc, &argv);
  for (i = 1; i < argc; i++) {
    if (strcmp (argv[i], "--parse") == 0)
      parse = TRUE;
    else if (strcmp (argv[i], "--sink") == 0 && i + 1 < argc)
      sink_name = argv[++i];
    else
      track_id = argv[i];
  }
  if (track_id == NULL) {
    fprintf (stderr, "usage: %s TRACK_ID [--parse] [--sink ELEMENT]\n", argv[0]);
    return 2;
  }

  pipeline = parse ? build_with_parse_launch (track_id, sink_name)
      : build_with_factories (track_id, sink_name);
  if (pipeline == NULL)
    return 1;
  if (gst_element_set_state (pipeline, GST_STATE_PLAYING) == GST_STATE_CHANGE_FAILURE) {
    fprintf (stderr, "play: the pipeline refused to start\n");
    gst_object_unref (pipeline);
    return 1;
  }

  bus = gst_element_get_bus (pipeline);
  msg = gst_bus_timed_pop_filtered (bus, GST_CLOCK_TIME_NONE,
      GST_MESSAGE_EOS | GST_MESSAGE_ERROR);
  if (GST_MESSAGE_TYPE (msg) == GST_MESSAGE_ERROR) {
    GError *err = NULL;
    gchar *debug = NULL;

    gst_message_parse_error (msg, &err, &debug);
    fprintf (stderr, "play: error from %s: %s\n", GST_OBJECT_NAME (GST_MESSAGE_SRC (msg)),
        err->message);
    g_clear_error (&err);
    g_free (debug);
  } else {
    gst_element_query_position (pipeline, GST_FORMAT_TIME, &position);
    printf ("played %s to the end (%" GST_TIME_FORMAT ")\n", track_id,
        GST_TIME_ARGS ((GstClockTime) position));
    status = 0;
  }
  gst_message_unref (msg);
  gst_object_unref (bus);
  gst_element_set_state (pipeline, GST_STATE_NULL);
  gst_object_unref (pipeline);
  return status;
}
