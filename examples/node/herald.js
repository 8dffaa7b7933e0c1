// A few lines of standard Node.js (18+: fetch, node:crypto) that speak
// Herald's HTTP gateway: publish CloudEvents, verify push signatures.
// See docs/http.md for the endpoints.
'use strict';

const crypto = require('node:crypto');

const baseURL = (url) => (url || process.env.HERALD_HTTP_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');

async function call(url, method, path, body, headers = {}) {
  const h = { Accept: 'application/json', ...headers };
  if (process.env.HERALD_TOKEN) h.Authorization = `Bearer ${process.env.HERALD_TOKEN}`;
  const res = await fetch(baseURL(url) + path, { method, headers: h, body });
  const text = await res.text();
  const answer = text ? JSON.parse(text) : null;
  if (!res.ok) {
    const err = new Error(`${res.status}: ${(answer && (answer.detail || answer.error)) || text}`);
    err.status = res.status;
    throw err;
  }
  return answer;
}

// publishBatch publishes structured events; it resolves once the broker
// stored every one.
function publishBatch(url, topic, events) {
  return call(url, 'POST', `/v1/topics/${topic}/events`, JSON.stringify(events),
    { 'Content-Type': 'application/cloudevents-batch+json' });
}

// publish publishes one event in binary mode: attributes as ce- headers.
function publish(url, topic, { id, type, source, subject, data, extensions = {} }) {
  const headers = {
    'Content-Type': 'application/json',
    'ce-specversion': '1.0',
    'ce-id': id || crypto.randomUUID(),
    'ce-source': source,
    'ce-type': type,
  };
  if (subject) headers['ce-subject'] = subject;
  for (const [k, v] of Object.entries(extensions)) headers[`ce-${k}`] = String(v);
  return call(url, 'POST', `/v1/topics/${topic}/events`, JSON.stringify(data), headers);
}

async function ensureTopic(url, topic) {
  const { topics } = await call(url, 'GET', '/api/v1/topics');
  if (topics.some((t) => t.topic === topic)) return;
  await call(url, 'PUT', `/api/v1/topics/${topic}/retention`, JSON.stringify({ max_msgs: 'unlimited' }),
    { 'Content-Type': 'application/json' });
}

// verify checks the Standard Webhooks signature of a push delivery:
// HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>" under the
// secret ("whsec_" + base64 key), within 5 minutes of now.
function verify(secret, headers, body) {
  const id = headers['webhook-id'];
  const ts = headers['webhook-timestamp'];
  const sigs = headers['webhook-signature'];
  if (!id || !ts || !sigs) return false;
  if (Math.abs(Date.now() / 1000 - Number(ts)) > 300) return false;
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice(6), 'base64') : Buffer.from(secret);
  const want = Buffer.from('v1,' + crypto.createHmac('sha256', key).update(`${id}.${ts}.`).update(body).digest('base64'));
  return sigs.split(' ').some((s) => {
    const got = Buffer.from(s);
    return got.length === want.length && crypto.timingSafeEqual(got, want);
  });
}

module.exports = { publishBatch, publish, ensureTopic, verify, call };
