// one_loop.mjs: against a daemon with a single event loop (http_threads 1):
// slow request preparation runs on a worker, never on the loop, so the loop
// keeps answering other connections meanwhile. /tokenize with large images
// is the case (it decodes and tiles them exactly as a chat does); a loop
// that did the work itself would hold /health for the whole decode.
import { model, check, finish, post, healthy, png, dataUrl, sleep } from './common.mjs';

// four 4000x3000 pictures (13 tiles each): long enough to decode that a
// stalled loop shows clearly against a free one
const picture = dataUrl(png(4000, 3000, (x, y) => [(x * 7) & 255, (y * 3) & 255, (x ^ y) & 255]));
const image = { type: 'image_url', image_url: { url: picture } };
const body = { model, messages: [{ role: 'user', content: [image, image, image, image, { type: 'text', text: 'What?' }] }] };

// alone, to know how long the images take
let t0 = Date.now();
const alone = await post('/tokenize', body);
const aloneMs = Date.now() - t0;
check(alone.status === 200 && alone.json.count > 4 * 256 * 12, '/tokenize of four large images', alone.json ?? alone.text.slice(0, 200));
check(aloneMs >= 100, `the images take long enough to show a stall (${aloneMs} ms)`);

// again, with /health asked every few ms on another connection meanwhile
let done = false;
t0 = Date.now();
const pending = post('/tokenize', body).then((r) => { done = true; return r; });
await sleep(10);
let worst = 0;
let answered = 0;
while (!done) {
  const h0 = Date.now();
  if (await healthy()) answered++;
  worst = Math.max(worst, Date.now() - h0);
  await sleep(5);
}
const r = await pending;
const busyMs = Date.now() - t0;
check(r.status === 200 && r.json.count === alone.json.count, '/tokenize answers the same while /health is polled', r.json ?? r.text.slice(0, 200));
check(answered >= 1 && worst < Math.max(50, aloneMs / 3),
  `the loop answered /health while /tokenize decoded (${answered} answers, slowest ${worst} ms; the images took ${aloneMs} ms alone, ${busyMs} ms now)`);
console.log(`one_loop: /tokenize of 4 large images ${aloneMs} ms; /health answered ${answered} times meanwhile, slowest ${worst} ms`);

finish('one_loop');
