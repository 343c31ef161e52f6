// responses.mjs: /v1/responses driven by the official `openai` npm package
// (create, stream, retrieve, continue with previous_response_id, delete) and
// by plain HTTP, every object and stream event validated against the schemas
// pinned from OpenAI's openapi.yaml: a 10-turn conversation with an image a
// turn equal to cold runs over the same ids, GET and DELETE, 404s that name
// the id, per-key visibility, store: false, the store's count bound,
// concurrent continuations of one response, and bad input of every kind.
// The daemon runs with two keys (MMD_KEY, MMD_KEY2) and responses_max 12.
import { OpenAI, base, apiKey, model, check, validate, finish, post, get, png, dataUrl, auth, healthy } from './common.mjs';
import { chain } from './responses_chain.mjs';

const client = new OpenAI({ baseURL: base + '/v1', apiKey, maxRetries: 0, timeout: 120000 });
const key2 = process.env.MMD_KEY2;
const other = new OpenAI({ baseURL: base + '/v1', apiKey: key2, maxRetries: 0, timeout: 60000 });
const R = '/v1/responses';
const eventSchema = {
  'response.created': 'ResponseCreatedEvent',
  'response.in_progress': 'ResponseInProgressEvent',
  'response.output_item.added': 'ResponseOutputItemAddedEvent',
  'response.content_part.added': 'ResponseContentPartAddedEvent',
  'response.output_text.delta': 'ResponseTextDeltaEvent',
  'response.output_text.done': 'ResponseTextDoneEvent',
  'response.content_part.done': 'ResponseContentPartDoneEvent',
  'response.output_item.done': 'ResponseOutputItemDoneEvent',
  'response.completed': 'ResponseCompletedEvent',
  'response.incomplete': 'ResponseIncompleteEvent',
  'response.failed': 'ResponseFailedEvent',
};

async function expectStatus(name, p, body, status, param, headers = auth()) {
  const r = await post(p, body, headers);
  const ok = check(r.status === status, `${name}: status ${status}`, { got: r.status, body: r.text.slice(0, 300) });
  if (ok && r.json && status >= 400) {
    validate('ErrorResponse', r.json, name);
    if (param !== undefined)
      check(r.json.error.param === param, `${name}: param ${param}`, r.json.error);
  }
  check(await healthy(), `${name}: still serving`);
  return r;
}

// ---- create, stream, retrieve, continue, delete through the SDK --------------------------------
let first;
{
  const r = await client.responses.create({ model, input: 'Describe a red square.', max_output_tokens: 12, temperature: 0 });
  validate('Response', r, 'create');
  check(/^resp_[0-9a-f]{48}$/.test(r.id) && r.object === 'response', 'id: resp_ and 192 random bits', r.id);
  check(['completed', 'incomplete'].includes(r.status) && r.output.length === 1 && r.output[0].role === 'assistant',
    'one assistant message', r.output);
  check(typeof r.output_text === 'string' && r.output_text === r.output[0].content[0].text, 'SDK output_text', r.output_text);
  const u = r.usage;
  check(u.input_tokens > 10 && u.output_tokens >= 1 && u.output_tokens <= 12 && u.total_tokens === u.input_tokens + u.output_tokens &&
    u.input_tokens_details.cached_tokens >= 0, 'usage adds up', u);
  check(r.status !== 'incomplete' || r.incomplete_details.reason === 'max_output_tokens', 'incomplete: max_output_tokens', r);
  check(r.store === true && r.previous_response_id === null && r.temperature === 0, 'echoed fields', r);
  first = r;

  // the same request streamed: the semantic events in order, each valid, numbered
  const stream = await client.responses.create({ model, input: 'Describe a red square.', max_output_tokens: 12, temperature: 0, stream: true });
  const events = [];
  for await (const e of stream) events.push(e);
  events.forEach((e, i) => eventSchema[e.type] ? validate(eventSchema[e.type], e, `stream event ${i} ${e.type}`) :
    check(false, `stream event ${i}: known type`, e.type));
  check(events.every((e, i) => e.sequence_number === i), 'sequence_number counts from 0');
  const types = events.map((e) => e.type);
  const deltas = types.filter((t) => t === 'response.output_text.delta').length;
  const want = ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
    ...Array(deltas).fill('response.output_text.delta'), 'response.output_text.done', 'response.content_part.done',
    'response.output_item.done', r.status === 'completed' ? 'response.completed' : 'response.incomplete'];
  check(JSON.stringify(types) === JSON.stringify(want), 'event order', types);
  check(deltas === r.usage.output_tokens || deltas === r.usage.output_tokens - 1, 'a delta per emitted token', { deltas, usage: r.usage });
  const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
  const done = events.find((e) => e.type === 'response.output_text.done');
  check(text === r.output_text && done.text === text, 'streamed text equals the greedy buffered text', { text, buffered: r.output_text });
  const last = events[events.length - 1].response;
  check(last.id === events[0].response.id && last.id !== r.id && last.output[0].content[0].text === text, 'final response carries the text');

  // the SDK's stream helper accumulates the same
  const helper = client.responses.stream({ model, input: 'Describe a red square.', max_output_tokens: 12, temperature: 0 });
  const fin = await helper.finalResponse();
  // (the helper takes the final object from response.completed only: an incomplete one stays in_progress)
  check(fin.output[0].content[0].text === r.output_text, 'responses.stream().finalResponse()', fin);

  const got = await client.responses.retrieve(r.id);
  validate('Response', got, 'retrieve');
  check(got.id === r.id && got.output_text === r.output_text && got.usage.output_tokens === u.output_tokens, 'retrieve gives it back', got);
  const streamed = await client.responses.retrieve(last.id);
  check(streamed.output[0].content[0].text === text, 'a streamed response is stored too');

  const next = await client.responses.create({ model, previous_response_id: r.id, input: 'And a blue one?', max_output_tokens: 6, temperature: 0 });
  validate('Response', next, 'continue');
  check(next.previous_response_id === r.id && next.usage.input_tokens > u.total_tokens, 'the continuation holds the history', next.usage);
  const again = await client.responses.create({ model, previous_response_id: r.id, input: 'And a blue one?', max_output_tokens: 6, temperature: 0 });
  check(again.output_text === next.output_text && again.id !== next.id, 'the same continuation twice: same answer, new id');

  const del = await client.responses.delete(next.id);
  check(del === undefined || del === null || del.deleted === true || typeof del === 'object', 'SDK delete', del);
  try {
    await client.responses.retrieve(next.id);
    check(false, 'a deleted response is gone');
  } catch (e) {
    check(e.status === 404 && e.message.includes(next.id), 'deleted: 404 naming the id', { status: e.status, message: e.message });
  }
  try {
    await client.responses.create({ model, previous_response_id: next.id, input: 'x' });
    check(false, 'continuing a deleted response is refused');
  } catch (e) {
    check(e.status === 404 && e.param === 'previous_response_id' && e.message.includes(next.id),
      'continuing a deleted response: 404, param previous_response_id, names it', { status: e.status, param: e.param });
  }
}

// ---- raw HTTP: DELETE's body, unknown ids, other keys, store false ------------------------------
{
  const d = await post(R, { model, input: 'hi', max_output_tokens: 2 });
  const id = d.json.id;
  const other404 = await get(`${R}/${id}`, auth({ Authorization: `Bearer ${key2}` }));
  check(other404.status === 404 && other404.json.error.message.includes(id), 'another key: 404 (not 403), naming the id', other404.text);
  const od = await fetch(`${base}${R}/${id}`, { method: 'DELETE', headers: { Authorization: `Bearer ${key2}` } });
  check(od.status === 404, 'another key cannot delete it', od.status);
  try {
    await other.responses.create({ model, previous_response_id: id, input: 'x' });
    check(false, 'another key cannot continue it');
  } catch (e) {
    check(e.status === 404, 'another key cannot continue it: 404', e.status);
  }
  check((await get(`${R}/${id}`)).status === 200, 'the owner still reads it');
  const mine = await post(R, { model, input: 'hi', max_output_tokens: 2 }, auth({ Authorization: `Bearer ${key2}` }));
  check((await get(`${R}/${mine.json.id}`, auth({ Authorization: `Bearer ${key2}` }))).status === 200 &&
    (await get(`${R}/${mine.json.id}`)).status === 404, 'each key sees its own');
  const dr = await fetch(`${base}${R}/${id}`, { method: 'DELETE', headers: auth() });
  const dj = await dr.json();
  check(dr.status === 200 && dj.id === id && dj.object === 'response.deleted' && dj.deleted === true, 'DELETE answers response.deleted', dj);
  for (const bad of ['resp_' + '0'.repeat(48), 'nothere', 'resp_%22%3Cx%3E']) {
    const g = await get(`${R}/${bad}`);
    check(g.status === 404 && g.json?.error?.code === 'response_not_found' && g.json.error.message.includes(decodeURIComponent(bad).slice(0, 20)),
      `unknown id ${bad}: 404 naming it`, g.text);
    if (g.json) validate('ErrorResponse', g.json, `unknown id ${bad}`);
  }
  const s = await post(R, { model, input: 'hi', max_output_tokens: 2, store: false });
  check(s.status === 200 && s.json.store === false, 'store false is echoed', s.json);
  check((await get(`${R}/${s.json.id}`)).status === 404, 'store false keeps nothing');
  const sc = await post(R, { model, input: 'x', previous_response_id: s.json.id });
  check(sc.status === 404 && sc.json.error.param === 'previous_response_id', 'store false cannot be continued', sc.text);
  // a continuation with store false still works from a stored one, and keeps nothing itself
  const c = await post(R, { model, input: 'more', max_output_tokens: 2, store: false, previous_response_id: first.id });
  check(c.status === 200 && (await get(`${R}/${c.json.id}`)).status === 404, 'store false continuation');
  // metadata, instructions echoed and stored
  const m = await post(R, { model, input: 'x', max_output_tokens: 2, instructions: 'Be terse.', metadata: { conv: 'a1' } });
  validate('Response', m.json, 'metadata');
  const mg = await get(`${R}/${m.json.id}`);
  check(mg.json.metadata.conv === 'a1' && mg.json.instructions === 'Be terse.', 'metadata and instructions stored', mg.json);
  const ins = await post('/tokenize', { model, messages: [{ role: 'system', content: 'Be terse.' }, { role: 'user', content: 'x' }] });
  check(ins.json.count === m.json.usage.input_tokens, 'instructions are the system message', { tok: ins.json.count, usage: m.json.usage });
}

// ---- a 10-turn conversation with an image a turn equals cold runs ------------------------------
{
  const t0 = Date.now();
  const turns = await chain({ turns: 10, maxTokens: 8 });
  check(turns.length === 10, 'ten turns', turns.length);
  console.log(`responses: 10-turn image chain and cold checks in ${Date.now() - t0} ms`);
  // the stored history is what later turns extend: turn 10 re-read equals what came back
  const last = turns[turns.length - 1].response;
  const g = await get(`${R}/${last.id}`);
  check(g.status === 200 && g.json.output_token_ids.join() === last.output_token_ids.join(), 'the last turn reads back');
}

// ---- concurrent continuations of one response: each gets its own answer ----------------------
{
  const root = await post(R, { model, input: [{ role: 'user', content: [
    { type: 'input_image', image_url: dataUrl(png(64, 48, (x, y) => [x * 3, y * 5, 90])) },
    { type: 'input_text', text: 'What is this?' }] }], max_output_tokens: 6, temperature: 0 });
  const asks = ['Red?', 'Blue?', 'How many?', 'Red?', 'Where?', 'Blue?'];
  const seq = {};
  for (const a of new Set(asks)) {
    const r = await post(R, { model, previous_response_id: root.json.id, input: a, max_output_tokens: 8, temperature: 0, return_token_ids: true });
    seq[a] = r.json.output_token_ids.join();
  }
  const par = await Promise.all(asks.map((a, i) => post(R, { model, previous_response_id: root.json.id, input: a,
    max_output_tokens: 8, temperature: 0, return_token_ids: true, stream: i % 2 === 1 })));
  for (let i = 0; i < asks.length; i++) {
    const r = par[i];
    let resp = r.json;
    if (i % 2 === 1) { // streamed: the last event's response
      const lines = r.text.split('\n').filter((l) => l.startsWith('data: '));
      resp = JSON.parse(lines[lines.length - 1].slice(6)).response;
    }
    check(r.status === 200 && resp.output_token_ids.join() === seq[asks[i]],
      `concurrent continuation ${i} (${asks[i]}${i % 2 ? ', streamed' : ''}): its own answer, as alone`, { got: resp?.output_token_ids, want: seq[asks[i]] });
  }
  check(new Set(par.map((r) => r.text.match(/resp_[0-9a-f]{48}/g)?.[0])).size === asks.length, 'concurrent continuations: distinct ids');
}

// ---- bad input of every kind: a clear 4xx, and the daemon keeps serving ----------------------
{
  const img = (url, role = 'user') => ({ model, input: [{ role, content: [{ type: 'input_image', image_url: url }] }] });
  const cases = [
    ['no input', { model }, 400, 'input'],
    ['input a number', { model, input: 5 }, 400, 'input'],
    ['input empty array', { model, input: [] }, 400, 'input'],
    ['item not an object', { model, input: [3] }, 400, 'input[0]'],
    ['function_call_output item', { model, input: [{ type: 'function_call_output', call_id: 'x', output: 'y' }] }, 400, 'input[0]'],
    ['unknown role', { model, input: [{ role: 'wizard', content: 'x' }] }, 400, 'input[0].role'],
    ['no role', { model, input: [{ content: 'x' }] }, 400, 'input[0].role'],
    ['content a number', { model, input: [{ role: 'user', content: 5 }] }, 400, 'input[0].content'],
    ['content empty', { model, input: [{ role: 'user', content: [] }] }, 400, 'input[0].content'],
    ['audio part', { model, input: [{ role: 'user', content: [{ type: 'input_audio' }] }] }, 400, 'input[0].content[0]'],
    ['input_file part', { model, input: [{ role: 'user', content: [{ type: 'input_file', file_id: 'f' }] }] }, 400, 'input[0].content[0]'],
    ['text not a string', { model, input: [{ role: 'user', content: [{ type: 'input_text', text: 1 }] }] }, 400, 'input[0].content[0]'],
    ['output_text from the user', { model, input: [{ role: 'user', content: [{ type: 'output_text', text: 'x' }] }] }, 400, 'input[0].content[0]'],
    ['image without url', { model, input: [{ role: 'user', content: [{ type: 'input_image' }] }] }, 400, 'input[0].content[0]'],
    ['image file_id', { model, input: [{ role: 'user', content: [{ type: 'input_image', file_id: 'file-1' }] }] }, 400, 'input[0].content[0]'],
    ['image in an assistant message', img(dataUrl(png(8, 8, () => [1, 2, 3])), 'assistant'), 400, 'input[0].content[0]'],
    ['remote image', img('https://example.com/cat.png'), 400, 'input[0].content[0].image_url'],
    ['bad base64 image', img('data:image/png;base64,@@@'), 400, 'input[0].content[0].image_url'],
    ['not an image', img('data:image/png;base64,' + Buffer.from('hello').toString('base64')), 400, 'input[0].content[0].image_url'],
    ['instructions a number', { model, input: 'x', instructions: 3 }, 400, 'instructions'],
    ['instructions as items', { model, input: 'x', instructions: [{ role: 'system', content: 'x' }] }, 400, 'instructions'],
    ['previous_response_id a number', { model, input: 'x', previous_response_id: 7 }, 400, 'previous_response_id'],
    ['unknown previous_response_id', { model, input: 'x', previous_response_id: 'resp_abc' }, 404, 'previous_response_id'],
    ['store a string', { model, input: 'x', store: 'yes' }, 400, 'store'],
    ['max_output_tokens 0', { model, input: 'x', max_output_tokens: 0 }, 400, 'max_output_tokens'],
    ['max_output_tokens a string', { model, input: 'x', max_output_tokens: '5' }, 400, 'max_output_tokens'],
    ['max_output_tokens past the context', { model, input: 'x', max_output_tokens: 1e9 }, 400, 'max_output_tokens'],
    ['temperature 5', { model, input: 'x', temperature: 5 }, 400, 'temperature'],
    ['top_p 0', { model, input: 'x', top_p: 0 }, 400, 'top_p'],
    ['n 2', { model, input: 'x', n: 2 }, 400, 'n'],
    ['stop', { model, input: 'x', stop: ['a'] }, 400, 'stop'],
    ['top_logprobs', { model, input: 'x', top_logprobs: 3 }, 400, 'top_logprobs'],
    ['tools', { model, input: 'x', tools: [{ type: 'function', name: 'f' }] }, 400, 'tools'],
    ['tool_choice required', { model, input: 'x', tool_choice: 'required' }, 400, 'tool_choice'],
    ['json format', { model, input: 'x', text: { format: { type: 'json_object' } } }, 400, 'text.format'],
    ['truncation auto', { model, input: 'x', truncation: 'auto' }, 400, 'truncation'],
    ['background', { model, input: 'x', background: true }, 400, 'background'],
    ['include', { model, input: 'x', include: ['message.output_text.logprobs'] }, 400, 'include'],
    ['conversation', { model, input: 'x', conversation: 'conv_1' }, 400, 'conversation'],
    ['metadata not an object', { model, input: 'x', metadata: [1] }, 400, 'metadata'],
    ['metadata number value', { model, input: 'x', metadata: { a: 1 } }, 400, 'metadata'],
    ['metadata 17 keys', { model, input: 'x', metadata: Object.fromEntries([...Array(17).keys()].map((k) => ['k' + k, 'v'])) }, 400, 'metadata'],
    ['unknown model', { model: 'nope', input: 'x' }, 404, 'model'],
    ['too many images', { model, input: [{ role: 'user', content: Array(9).fill({ type: 'input_image', image_url: dataUrl(png(8, 8, () => [1, 2, 3])) }) }] }, 400, 'input[0].content[8]'],
  ];
  for (const [name, body, status, param] of cases) await expectStatus(name, R, body, status, param);
  await expectStatus('not JSON', R, '{"input": ', 400, null);
  await expectStatus('a JSON array', R, '[1]', 400, null);
  const long = await expectStatus('input past the context', R, { model, input: 'word '.repeat(40000) }, 400, 'input');
  check(long.json?.error?.code === 'context_length_exceeded' || long.status === 413, 'past the context: context_length_exceeded', long.text.slice(0, 200));
  // routes
  const put = await fetch(base + R, { method: 'PUT', headers: auth(), body: '{}' });
  check(put.status === 405 && put.headers.get('allow') === 'POST', 'PUT /v1/responses: 405 with Allow', put.status);
  const postId = await fetch(`${base}${R}/resp_x`, { method: 'POST', headers: auth(), body: '{}' });
  check(postId.status === 405 && postId.headers.get('allow') === 'GET, DELETE', 'POST /v1/responses/ID: 405', postId.status);
  check((await get(`${R}/resp_x/input_items`)).status === 404, 'no input_items route: 404');
  check((await get(`${R}/`)).status === 404, 'an empty id: 404');
  const noKey = await fetch(`${base}${R}/${first.id}`);
  check(noKey.status === 401, 'no key: 401', noKey.status);
  check(await healthy(), 'still serving after the bad input');
}

// ---- the store's bound: responses_max 12, the least recently used go first -------------------------
{
  const ids = [];
  for (let i = 0; i < 14; i++)
    ids.push((await post(R, { model, input: `n${i}`, max_output_tokens: 1 })).json.id);
  const kept = [];
  for (const id of ids) kept.push((await get(`${R}/${id}`)).status === 200);
  check(!kept[0] && !kept[1] && kept.slice(2).every((k) => k), 'only the 12 most recent remain', kept);
  check((await get(`${R}/${first.id}`)).status === 404, 'older ones were evicted');
  const m = (await get('/metrics')).text;
  const gauge = (n) => Number(m.split('\n').find((l) => l.startsWith(n + '{'))?.split(' ').pop());
  check(gauge('mmmamba:responses_stored') === 12 && gauge('mmmamba:responses_bytes') > 0 &&
    gauge('mmmamba:responses_evicted_total') >= 2, 'store metrics', m.split('\n').filter((l) => l.startsWith('mmmamba:responses')));
  const gone = await post(R, { model, input: 'x', previous_response_id: ids[0] });
  check(gone.status === 404 && gone.json.error.message.includes(ids[0]), 'an evicted response: 404 naming it', gone.text);
}
finish('responses');
