// sdk.mjs: drives the daemon with the official `openai` npm package (major 6,
// maxRetries 0) and validates every response and stream chunk against the
// schemas pinned from OpenAI's openapi.yaml (openai-schemas.json).
// Greedy decoding is deterministic, so streamed text must equal the buffered
// text, and a stop string cut out of a greedy answer must end it there.
import { OpenAI, base, apiKey, model, check, validate, finish, post, get, png, dataUrl } from './common.mjs';

const client = new OpenAI({ baseURL: base + '/v1', apiKey, maxRetries: 0, timeout: 60000 });
const hello = [{ role: 'user', content: 'Hello! Describe a red square.' }];

// Streamed completion chunks: OpenAI's schema shares one shape between the
// streamed and buffered completion objects and so lists finish_reason as a
// string, but its streams (and vLLM's) send null until a choice ends; that
// one field is relaxed for intermediate completion chunks only.
function validateCompletionChunk(c, name) {
  const copy = structuredClone(c);
  for (const ch of copy.choices) if (ch.finish_reason === null) ch.finish_reason = 'stop';
  return validate('CreateCompletionResponse', copy, name);
}

async function collectChat(params) {
  const stream = await client.chat.completions.create({ model, ...params, stream: true });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
}

// ---- models ----------------------------------------------------------------------------
{
  const r = await get('/v1/models');
  check(r.status === 200, 'GET /v1/models is 200', r.text);
  validate('ListModelsResponse', r.json, '/v1/models');
  const page = await client.models.list();
  check(page.data.length === 1 && page.data[0].id === model, 'SDK lists the served model', page.data);
}

// ---- chat, buffered and streamed ----------------------------------------------------------
let greedy;
{
  const r = await client.chat.completions.create({ model, messages: hello, max_tokens: 24, temperature: 0 });
  validate('CreateChatCompletionResponse', r, 'chat');
  check(r.object === 'chat.completion' && r.id.startsWith('chatcmpl-'), 'chat object and id', r);
  check(r.choices.length === 1 && r.choices[0].message.role === 'assistant', 'one assistant choice', r.choices);
  check(['stop', 'length'].includes(r.choices[0].finish_reason), 'finish_reason stop|length', r.choices[0]);
  const u = r.usage;
  check(u.prompt_tokens > 10 && u.completion_tokens >= 1 && u.completion_tokens <= 24 &&
    u.total_tokens === u.prompt_tokens + u.completion_tokens, 'usage adds up', u);
  greedy = r;

  const chunks = await collectChat({ messages: hello, max_tokens: 24, temperature: 0, stream_options: { include_usage: true } });
  chunks.forEach((c, i) => validate('CreateChatCompletionStreamResponse', c, `chat chunk ${i}`));
  check(chunks[0].choices[0].delta.role === 'assistant', 'first chunk carries the role', chunks[0]);
  check(chunks.every((c) => c.id === chunks[0].id && c.object === 'chat.completion.chunk'), 'one id, chunk objects');
  const last = chunks[chunks.length - 1];
  check(last.choices.length === 0 && last.usage && last.usage.completion_tokens === u.completion_tokens &&
    last.usage.prompt_tokens === u.prompt_tokens, 'usage chunk last, with choices []', last);
  const withFinish = chunks.filter((c) => c.choices.length && c.choices[0].finish_reason);
  check(withFinish.length === 1 && withFinish[0].choices[0].finish_reason === r.choices[0].finish_reason,
    'one finish_reason chunk, same as buffered', withFinish);
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  check(text === r.choices[0].message.content, 'streamed text equals buffered greedy text', { text, buffered: r.choices[0].message.content });

  const plain = await collectChat({ messages: hello, max_tokens: 4, temperature: 0 });
  check(plain.every((c) => c.usage === undefined || c.usage === null), 'no usage without include_usage', plain[plain.length - 1]);
}

// ---- multi-turn ------------------------------------------------------------------------------
{
  const messages = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Name a shape.' },
    { role: 'assistant', content: 'A circle.' },
    { role: 'user', content: [{ type: 'text', text: 'Another one?' }] },
  ];
  const r = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0 });
  validate('CreateChatCompletionResponse', r, 'multi-turn');
  const tk = await post('/tokenize', { model, messages });
  check(tk.status === 200 && tk.json.count === r.usage.prompt_tokens, '/tokenize messages count equals usage.prompt_tokens', { tk: tk.json?.count, usage: r.usage });
  const one = await post('/tokenize', { model, messages: [messages[0], messages[3]] });
  check(r.usage.prompt_tokens > one.json.count + 4, 'the history is in the prompt', { multi: r.usage.prompt_tokens, one: one.json.count });
}

// ---- n, seeds --------------------------------------------------------------------------------
{
  const r = await client.chat.completions.create({ model, messages: hello, max_tokens: 12, n: 3, temperature: 1.0, seed: 7 });
  validate('CreateChatCompletionResponse', r, 'n=3');
  check(r.choices.map((c) => c.index).join() === '0,1,2', 'n=3 gives indexes 0,1,2', r.choices.map((c) => c.index));
  const again = await client.chat.completions.create({ model, messages: hello, max_tokens: 12, n: 3, temperature: 1.0, seed: 7 });
  check(JSON.stringify(again.choices.map((c) => c.message.content)) === JSON.stringify(r.choices.map((c) => c.message.content)),
    'same seed, same choices');
  const chunks = await collectChat({ messages: hello, max_tokens: 6, n: 2, temperature: 0 });
  chunks.forEach((c, i) => validate('CreateChatCompletionStreamResponse', c, `n=2 chunk ${i}`));
  for (const idx of [0, 1]) {
    const mine = chunks.filter((c) => c.choices[0]?.index === idx);
    check(mine.length >= 2 && mine[0].choices[0].delta.role === 'assistant' && mine[mine.length - 1].choices[0].finish_reason,
      `streamed choice ${idx}: role first, finish last`);
  }
  const greedy2 = await client.chat.completions.create({ model, messages: hello, max_tokens: 6, n: 2, temperature: 0 });
  check(greedy2.choices[0].message.content === greedy2.choices[1].message.content, 'greedy n=2 choices agree');
}

// ---- stop --------------------------------------------------------------------------------------
{
  const full = greedy.choices[0].message.content;
  // a stop string from the middle of the greedy answer (at least 2 chars in)
  const at = Math.max(2, Math.floor(full.length / 2));
  const stop = full.slice(at, at + 3);
  if (check(stop.length >= 1 && full.length > 4, 'greedy answer long enough for a stop test', full)) {
    const r = await client.chat.completions.create({ model, messages: hello, max_tokens: 24, temperature: 0, stop: [stop, 'zzzqqq'] });
    validate('CreateChatCompletionResponse', r, 'stop');
    const want = full.slice(0, full.indexOf(stop));
    check(r.choices[0].message.content === want && r.choices[0].finish_reason === 'stop',
      'stop string ends the answer before it, finish_reason stop', { got: r.choices[0].message.content, want, stop });
    const chunks = await collectChat({ messages: hello, max_tokens: 24, temperature: 0, stop });
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    check(text === want, 'streamed stop: same text, stop string never sent', { text, want });
  }
}

// ---- logprobs -------------------------------------------------------------------------------------
{
  const r = await client.chat.completions.create({ model, messages: hello, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3 });
  validate('CreateChatCompletionResponse', r, 'logprobs');
  const lp = r.choices[0].logprobs?.content ?? [];
  check(lp.length === r.usage.completion_tokens || lp.length === r.usage.completion_tokens - 1,
    'one logprob entry per emitted token', { n: lp.length, usage: r.usage });
  check(lp.every((t) => t.logprob <= 0 && t.top_logprobs.length === 3 &&
    t.top_logprobs[0].logprob >= t.top_logprobs[2].logprob && Math.abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4),
  'greedy: chosen token is the top one, 3 alternatives in order', lp[0]);
  const chunks = await collectChat({ messages: hello, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2 });
  chunks.forEach((c, i) => validate('CreateChatCompletionStreamResponse', c, `logprobs chunk ${i}`));
  check(chunks.some((c) => c.choices[0]?.logprobs?.content?.length === 1), 'streamed chunks carry logprobs');
}

// ---- images ---------------------------------------------------------------------------------------
{
  const img = png(64, 48, (x, y) => [x * 4, y * 5, 128]);
  const messages = [{ role: 'user', content: [
    { type: 'image_url', image_url: { url: dataUrl(img) } },
    { type: 'text', text: 'What is in the picture?' }] }];
  const r = await client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 0 });
  validate('CreateChatCompletionResponse', r, 'image');
  check(r.usage.prompt_tokens > 256, 'an image adds a tile of context tokens', r.usage);
  const tk = await post('/tokenize', { model, messages });
  check(tk.json?.count === r.usage.prompt_tokens, 'tokenize counts the image tokens too', { tk: tk.json?.count, usage: r.usage });
  const chunks = await collectChat({ messages, max_tokens: 6, temperature: 0 });
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  check(text === r.choices[0].message.content, 'image: streamed equals buffered');
  const two = [{ role: 'user', content: [
    { type: 'image_url', image_url: { url: dataUrl(img) } },
    { type: 'image_url', image_url: { url: dataUrl(png(900, 300, (x) => [x % 256, 0, 0])) } },
    { type: 'text', text: 'Compare.' }] }];
  const r2 = await client.chat.completions.create({ model, messages: two, max_tokens: 3 });
  validate('CreateChatCompletionResponse', r2, 'two images');
  check(r2.usage.prompt_tokens > r.usage.prompt_tokens + 256, 'a wide second image adds several tiles', r2.usage);
}

// ---- /v1/completions ------------------------------------------------------------------------------
{
  const ids = [1, 1029, 17, 40, 91, 388];
  const r = await client.completions.create({ model, prompt: ids, max_tokens: 8, temperature: 0 });
  validate('CreateCompletionResponse', r, 'completion from token ids');
  check(r.object === 'text_completion' && r.usage.prompt_tokens === ids.length, 'token-id prompt is used as given', r.usage);
  const s = await client.completions.create({ model, prompt: ids, max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let usage = null;
  let n = 0;
  for await (const c of s) {
    if (c.choices.length) validateCompletionChunk(c, `completion chunk ${n}`);
    else usage = c.usage;
    text += c.choices[0]?.text ?? '';
    n++;
  }
  check(text === r.choices[0].text, 'streamed completion equals buffered', { text, buffered: r.choices[0].text });
  check(usage && usage.completion_tokens === r.usage.completion_tokens, 'completion stream usage chunk', usage);
  const multi = await client.completions.create({ model, prompt: ['A red', 'Two blue'], n: 2, max_tokens: 4, temperature: 0 });
  validate('CreateCompletionResponse', multi, 'two prompts x n=2');
  check(multi.choices.map((c) => c.index).join() === '0,1,2,3', 'prompts x n choices, indexed in order', multi.choices.map((c) => c.index));
  const lp = await client.completions.create({ model, prompt: 'A red square', max_tokens: 4, temperature: 0, logprobs: 2 });
  validate('CreateCompletionResponse', lp, 'completion logprobs');
  const L = lp.choices[0].logprobs;
  check(L && L.tokens.length === L.token_logprobs.length && L.top_logprobs.every((t) => Object.keys(t).length >= 1),
    'completion logprobs arrays line up', L);
  const batch = await client.completions.create({ model, prompt: [[1, 5, 6], [1, 7, 8, 9]], max_tokens: 3 });
  check(batch.choices.length === 2 && batch.usage.prompt_tokens === 7, 'array of token-id prompts', batch.usage);
}

// ---- tokenize / detokenize ----------------------------------------------------------------------------
{
  const t = await post('/tokenize', { model, prompt: 'Hello, world' });
  check(t.status === 200 && Array.isArray(t.json.tokens) && t.json.count === t.json.tokens.length &&
    t.json.max_model_len > 0, '/tokenize prompt shape', t.json);
  const d = await post('/detokenize', { model, tokens: t.json.tokens });
  check(d.status === 200 && d.json.prompt === 'Hello, world', '/detokenize round trip', d.json);
  const nb = await post('/tokenize', { model, prompt: 'Hello, world', add_special_tokens: false });
  check(nb.json.count === t.json.count - 1, 'add_special_tokens false drops BOS', nb.json);
}

// ---- errors through the SDK -------------------------------------------------------------------------
{
  try {
    await client.chat.completions.create({ model: 'no-such-model', messages: hello });
    check(false, 'unknown model refused');
  } catch (e) {
    check(e.status === 404 && e.code === 'model_not_found', 'unknown model: SDK NotFoundError, code model_not_found', { status: e.status, code: e.code });
  }
  const bad = new OpenAI({ baseURL: base + '/v1', apiKey: 'wrong-key', maxRetries: 0 });
  try {
    await bad.models.list();
    check(false, 'wrong key refused');
  } catch (e) {
    check(e.status === 401, 'wrong key: SDK AuthenticationError', e.status);
  }
  const r = await post('/v1/chat/completions', { model, messages: [] });
  validate('ErrorResponse', r.json, 'error body');
}

// ---- metrics -------------------------------------------------------------------------------------------
{
  const r = await get('/metrics');
  check(r.status === 200 && r.headers.get('content-type').startsWith('text/plain'), '/metrics is Prometheus text');
  const line = (n) => r.text.split('\n').find((l) => l.startsWith(n + '{'));
  const label = `model_name="${model}"`;
  for (const n of ['vllm:prompt_tokens_total', 'vllm:generation_tokens_total', 'vllm:num_requests_running',
    'vllm:num_requests_waiting', 'vllm:time_to_first_token_seconds_count', 'vllm:e2e_request_latency_seconds_bucket',
    'vllm:time_per_output_token_seconds_sum', 'vllm:request_queue_time_seconds_count', 'mmmamba:state_slots_total',
    'mmmamba:kv_blocks_total']) {
    const l = line(n);
    check(l && l.includes(label), `metric ${n} with model_name`, l);
  }
  check(Number(line('vllm:generation_tokens_total').split(' ').pop()) > 50, 'generation tokens counted');
  check(Number(line('vllm:time_to_first_token_seconds_count').split(' ').pop()) > 10, 'TTFT observed per request');
}
finish('sdk');
