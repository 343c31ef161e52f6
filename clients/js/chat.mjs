// chat.mjs: the official `openai` npm package (v6) pointed at mmmambad:
// a streamed chat answer, then a question about an image sent as a data: URL.
//
//   cd clients/js && npm install
//   MMMAMBA_BASE_URL=http://127.0.0.1:8000 node chat.mjs [IMAGE] ["prompt"]
//
// The server root comes from MMMAMBA_BASE_URL (the SDK wants the /v1 prefix,
// added here), the key from MMMAMBA_API_KEY or OPENAI_API_KEY (any string
// when the daemon has no keys), the model from MMMAMBA_MODEL or else the
// server's first.
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';

const root = (process.env.MMMAMBA_BASE_URL ?? 'http://127.0.0.1:8000').replace(/\/+$/, '');
const client = new OpenAI({
  baseURL: root.endsWith('/v1') ? root : `${root}/v1`,
  apiKey: process.env.MMMAMBA_API_KEY || process.env.OPENAI_API_KEY || 'none',
  timeout: 600_000, // ms; a long prompt's prefill can take a while
  maxRetries: 1,
});
const [imagePath, prompt = 'Tell me about Mamba state-space models.'] = process.argv.slice(2);
const model = process.env.MMMAMBA_MODEL || (await client.models.list()).data[0].id;

// 1. A streamed answer, token by token, with the usage chunk at the end.
const stream = await client.chat.completions.create({
  model,
  messages: [{ role: 'user', content: prompt }],
  max_tokens: Number(process.env.MAX_TOKENS ?? 64),
  stream: true,
  stream_options: { include_usage: true },
});
process.stdout.write('stream: ');
let usage;
for await (const chunk of stream) {
  const text = chunk.choices[0]?.delta?.content;
  if (text) process.stdout.write(text);
  if (chunk.usage) usage = chunk.usage;
}
process.stdout.write(`\nusage: ${JSON.stringify(usage)}\n`);

// 2. An image: the file's bytes as a data: URL in an image_url content part.
if (imagePath) {
  const ext = path.extname(imagePath).slice(1).toLowerCase();
  const mime = { jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif', webp: 'image/webp' }[ext] ?? 'image/png';
  const url = `data:${mime};base64,${fs.readFileSync(imagePath).toString('base64')}`;
  const r = await client.chat.completions.create({
    model,
    messages: [{
      role: 'user',
      content: [
        { type: 'image_url', image_url: { url } },
        { type: 'text', text: 'What is in this image?' },
      ],
    }],
    max_tokens: Number(process.env.MAX_TOKENS ?? 64),
  });
  process.stdout.write(`image: ${r.choices[0].message.content}\n`);
}

// 3. Errors arrive as OpenAI.APIError with the server's status and error object.
try {
  await client.chat.completions.create({ model, messages: [], max_tokens: 1 });
  process.stdout.write('error: none\n');
} catch (e) {
  if (!(e instanceof OpenAI.APIError)) throw e;
  process.stdout.write(`error: ${e.status} ${e.error?.type ?? ''}\n`);
}
