// @ts-check
// The official JavaScript openai client against the service's /v1, for
// tests/app/test_openai_js_client.py: it prints one JSON object with what the client saw, and
// the Python test judges it (assertions live in one place, in the language of the suite).
//
// usage: node tests/js/chat.mjs <base-url ending in /v1> <api key>
//        (or OPENAI_BASE_URL and OPENAI_API_KEY in the environment)
import OpenAI from "openai";

const baseURL = process.argv[2] ?? process.env.OPENAI_BASE_URL;
const apiKey = process.argv[3] ?? process.env.OPENAI_API_KEY;
if (!baseURL || !apiKey) {
  console.error("usage: node chat.mjs <base-url> <api-key>");
  process.exit(2);
}
// No retries: a retried failure would hide what the service answered the first time.
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 10_000 });
/** @type {OpenAI.Chat.ChatCompletionMessageParam[]} */
const messages = [
  { role: "system", content: "Be brief." },
  { role: "user", content: "Say hello." },
];

const models = [];
for await (const model of client.models.list()) models.push(model.id);

const collected = await client.chat.completions.create({ model: "default", messages });

const stream = await client.chat.completions.create({
  model: "default", messages, stream: true, stream_options: { include_usage: true },
});
const deltas = [];
const streamFinishReasons = [];
/** @type {OpenAI.CompletionUsage | null | undefined} */
let streamUsage = null;
const chunkIds = new Set();
for await (const chunk of stream) {
  chunkIds.add(chunk.id);
  for (const choice of chunk.choices) {
    if (choice.delta.content) deltas.push(choice.delta.content);
    if (choice.finish_reason) streamFinishReasons.push(choice.finish_reason);
  }
  if (chunk.usage) streamUsage = chunk.usage;
}

// A model the key may not use: the client must map the service's 404 to its own class.
let badModel = null;
try {
  await client.chat.completions.create({ model: "no-such-model", messages });
} catch (error) {
  if (!(error instanceof OpenAI.APIError)) throw error;
  badModel = {
    name: error.constructor.name,
    isNotFound: error instanceof OpenAI.NotFoundError,
    status: error.status,
    code: error.code,
    param: error.param,
    type: error.type,
  };
}

console.log(JSON.stringify({
  models,
  collected: {
    text: collected.choices[0]?.message.content,
    finishReason: collected.choices[0]?.finish_reason,
    usage: collected.usage,
    object: collected.object,
  },
  streamed: {
    text: deltas.join(""),
    deltas: deltas.length,
    finishReasons: streamFinishReasons,
    usage: streamUsage,
    ids: [...chunkIds],
  },
  badModel,
}));
