// SPDX-License-Identifier: MPL-2.0
// amzmusic-bench's browser players: one playback of the emulator's open mirror by Shaka Player
// or dash.js in headless Chromium (puppeteer-core), or the DevTools re-throttling measurement.
//
//   node run.mjs '{"player":"shaka","emulator":"http://127.0.0.1:PORT","manifest":"…/manifest.mpd",
//                  "shaping":{"scenario":"wifi-to-4g","seed":1},"timeout_s":120,"max_audio_s":null}'
//   node run.mjs '{"devtools":true}'
//
// The page is served from this process on its own loopback port (another origin than the
// emulator's, so the open mirror's CORS answers are what lets it play). The emulator shapes the
// link; the browser is not throttled. The request log is cleared and the shaping clock started
// right before the player loads the manifest, as for the GStreamer players.
// Prints one line `RESULT <json>`.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer from 'puppeteer-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const spec = JSON.parse(process.argv[2] ?? '{}');
const chromium = spec.chromium ?? process.env.CHROMIUM ?? '/usr/bin/chromium';

const LIBS = {
  '/shaka.js': 'node_modules/shaka-player/dist/shaka-player.compiled.js',
  '/dash.js': 'node_modules/dashjs/dist/modern/umd/dash.all.min.js',
};
const version = (pkg) =>
  JSON.parse(fs.readFileSync(path.join(here, 'node_modules', pkg, 'package.json'))).version;

// The DevTools test file: 1 MB.
const MB = Buffer.alloc(1_000_000, 7);

function serve() {
  const server = http.createServer((req, res) => {
    const url = req.url.split('?')[0];
    if (url === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<!doctype html><meta charset=utf-8><title>amzmusic-bench</title><audio id=a></audio>');
    } else if (LIBS[url]) {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      fs.createReadStream(path.join(here, LIBS[url])).pipe(res);
    } else if (url === '/1mb') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(MB);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

async function launch() {
  return puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: [
      '--no-sandbox',
      '--autoplay-policy=no-user-gesture-required',
      '--disable-gpu',
      '--mute-audio',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
    ],
  });
}

// In the page: the player, its events and the element's, timed from `t0` (just before the
// manifest is requested). Samples of (wall, media time) at every event and every 100 ms.
async function pagePlay(player, manifest, timeoutS, maxAudioS) {
  const a = document.getElementById('a');
  const t0 = performance.now();
  const now = () => (performance.now() - t0) / 1000;
  const out = { events: [], samples: [], chosen: [], errors: [], config: null, version: null };
  const sample = () => out.samples.push([now(), a.currentTime]);
  const ev = (name, extra) => {
    out.events.push(Object.assign({ t: now(), name, media: a.currentTime }, extra || {}));
    sample();
  };
  for (const name of ['playing', 'waiting', 'stalled', 'ended', 'pause', 'seeking', 'error']) {
    a.addEventListener(name, () => ev(name));
  }
  const timer = setInterval(sample, 100);
  let p;
  if (player === 'shaka') {
    shaka.polyfill.installAll();
    p = new shaka.Player();
    out.version = shaka.Player.version;
    out.config = p.getConfiguration();
    const active = () => {
      const v = (p.getVariantTracks ? p.getVariantTracks() : []).find((t) => t.active);
      return v ? { bandwidth: v.bandwidth, codec: v.audioCodec, rep: v.originalAudioId } : null;
    };
    p.addEventListener('adaptation', () => out.chosen.push(Object.assign({ t: now(), why: 'adaptation' }, active())));
    p.addEventListener('variantchanged', () => out.chosen.push(Object.assign({ t: now(), why: 'variantchanged' }, active())));
    p.addEventListener('buffering', (e) => ev(e.buffering ? 'buffering' : 'buffered'));
    p.addEventListener('error', (e) => out.errors.push(String(e.detail && (e.detail.code + ' ' + e.detail.message))));
    await p.attach(a);
    try {
      await p.load(manifest);
      out.chosen.push(Object.assign({ t: now(), why: 'loaded' }, active()));
      await a.play();
    } catch (e) {
      out.errors.push('load: ' + (e && (e.code || '') + ' ' + (e.message || e)));
    }
  } else {
    p = dashjs.MediaPlayer().create();
    out.version = p.getVersion();
    const E = dashjs.MediaPlayer.events;
    p.on(E.QUALITY_CHANGE_REQUESTED, (e) => {
      const r = e.newRepresentation || {};
      out.chosen.push({ t: now(), why: 'requested', rep: r.id, bandwidth: r.bandwidth });
    });
    p.on(E.QUALITY_CHANGE_RENDERED, (e) => {
      const r = e.newRepresentation || {};
      out.chosen.push({ t: now(), why: 'rendered', rep: r.id, bandwidth: r.bandwidth });
    });
    p.on(E.ERROR, (e) => out.errors.push(JSON.stringify(e.error || e).slice(0, 300)));
    p.initialize(a, manifest, true);
    out.config = p.getSettings();
  }
  const end = await new Promise((ok) => {
    const check = setInterval(() => {
      if (a.ended) { clearInterval(check); ok('ended'); }
      else if (maxAudioS != null && a.currentTime >= maxAudioS) { clearInterval(check); ok('max-audio'); }
      else if (now() >= timeoutS) { clearInterval(check); ok('timeout'); }
    }, 50);
  });
  clearInterval(timer);
  sample();
  out.end = end;
  out.end_s = now();
  const b = a.buffered;
  out.buffered = [];
  for (let i = 0; i < b.length; i++) out.buffered.push([b.start(i), b.end(i)]);
  if (player === 'shaka') {
    out.stats = p.getStats();
    await p.destroy();
  } else {
    p.reset();
  }
  return out;
}

async function play() {
  const server = await serve();
  const origin = `http://127.0.0.1:${server.address().port}`;
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const logs = [];
    page.on('console', (m) => logs.push(m.text().slice(0, 300)));
    page.on('pageerror', (e) => logs.push('pageerror: ' + String(e).slice(0, 300)));
    await page.goto(origin + '/');
    await page.addScriptTag({ url: origin + (spec.player === 'shaka' ? '/shaka.js' : '/dash.js') });
    const caps = await page.evaluate(() => ({
      flac: MediaSource.isTypeSupported('audio/mp4; codecs="flac"'),
      opus: MediaSource.isTypeSupported('audio/mp4; codecs="opus"'),
      downlink: navigator.connection ? navigator.connection.downlink : null,
      ua: navigator.userAgent,
    }));
    // The run starts now: an empty request log and the scenario's clock at 0.
    const e = spec.emulator;
    if (e) {
      let r = await fetch(e + '/_emulator/requests', { method: 'DELETE' });
      if (!r.ok) throw new Error('clearing the request log: ' + r.status);
      if (spec.shaping) {
        r = await fetch(e + '/_emulator/shaping', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(spec.shaping),
        });
        if (!r.ok) throw new Error('shaping: ' + r.status + ' ' + (await r.text()));
      }
    }
    const out = await page.evaluate(pagePlay, spec.player, spec.manifest, spec.timeout_s ?? 120, spec.max_audio_s ?? null);
    if (e && spec.shaping) await fetch(e + '/_emulator/shaping', { method: 'DELETE' });
    out.caps = caps;
    out.chromium = await browser.version();
    out.package_version = version(spec.player === 'shaka' ? 'shaka-player' : 'dashjs');
    out.puppeteer = version('puppeteer-core');
    out.console = logs.slice(-40);
    return out;
  } finally {
    await browser.close();
    server.close();
  }
}

// The DevTools protocol's throttling, as vinyl's harness uses it: a 1 MB fetch at 500 kb/s
// with the conditions set once, then re-set every second (Network.emulateNetworkConditions).
async function devtools() {
  const server = await serve();
  const origin = `http://127.0.0.1:${server.address().port}`;
  const browser = await launch();
  try {
    const page = await browser.newPage();
    await page.goto(origin + '/');
    const cdp = await page.createCDPSession();
    await cdp.send('Network.enable');
    const cond = { offline: false, latency: 0, downloadThroughput: 500_000 / 8, uploadThroughput: 250_000 / 8 };
    // How the conditions are re-set each second: the same values on our session; values that
    // change by a byte/s each time (as noisy-mobile's do); or as vinyl's harness applies a
    // change, through puppeteer's page.emulateNetworkConditions and then the raw CDP call.
    let n = 0;
    const apply = async (how) => {
      n += 1;
      const c = how === 'same' ? cond : { ...cond, downloadThroughput: cond.downloadThroughput + (n % 2) };
      if (how === 'vinyl') {
        await page.emulateNetworkConditions({ offline: false, download: c.downloadThroughput, upload: c.uploadThroughput, latency: 0 });
      }
      await cdp.send('Network.emulateNetworkConditions', c);
    };
    const once = async (reapply) => {
      await cdp.send('Network.emulateNetworkConditions', cond);
      const timer = reapply
        ? setInterval(() => apply(reapply).catch(() => {}), 1000)
        : null;
      const s = await page.evaluate(async (u) => {
        const t = performance.now();
        const b = await (await fetch(u, { cache: 'no-store' })).arrayBuffer();
        return { seconds: (performance.now() - t) / 1000, bytes: b.byteLength };
      }, origin + '/1mb?' + Math.random());
      if (timer) clearInterval(timer);
      await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
      return s;
    };
    const out = { kbps: 500, bytes: MB.length, set_once: await once(false) };
    for (const how of ['same', 'changing', 'vinyl']) out['reset_every_second_' + how] = await once(how);
    out.chromium = await browser.version();
    return out;
  } finally {
    await browser.close();
    server.close();
  }
}

try {
  const out = spec.devtools ? await devtools() : await play();
  console.log('RESULT ' + JSON.stringify(out));
  process.exit(0);
} catch (e) {
  console.log('RESULT ' + JSON.stringify({ fatal: String(e && e.stack ? e.stack : e) }));
  process.exit(1);
}
