// The owner's bucket as a source of sealed objects, read from this page: S3's
// ListObjectsV2 and GetObject, signed with AWS Signature V4 on WebCrypto's HMAC-SHA-256,
// with the phone's read-only key. The page talks to the bucket itself: no server of ours
// sees the key or the objects.
//
// Everything the bucket says is hostile input. Only keys that are exactly FORMAT §8 names
// directly under the prefix are listed (every other name is reported escaped and never
// read), the listing's XML is read by a small strict parser of our own (no DOCTYPE, no
// entities beyond XML's five), and no body is read past the largest sealed object,
// whatever its headers claim.

import { concat, fromUtf8, sha256, toHex, utf8 } from './bytes.js';
import { MAX_OBJECT, parseObjectName } from './format/object.js';

// S3 keys are at most 1024 bytes and a name takes 44, as doorbell-phone sync allows.
const MAX_PREFIX = 512;
// A page of 1000 keys of 1024 bytes, each URL-encoded to three times that, and their tags.
const MAX_LISTING = 16 * 1024 * 1024;
const MAX_ERROR_BODY = 64 * 1024;
// As doorbell-phone sync: a bucket that sends nothing for 30 s is given up on.
const IDLE_MS = 30_000;
// A server's passing failure is tried twice more, half a second and a second later.
const RETRIED = new Set([500, 502, 503, 504]);
const RETRY_DELAYS_MS = [500, 1000];
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** What the bucket did wrong, or what is wrong with its settings, in words a person can act on. */
export class BucketError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'BucketError';
    this.code = code;
  }
}

/**
 * The sealed objects directly under `s3://bucket/prefix`, as the reader's source:
 * `names()`, `read(name)`, `describe(name)`.
 *
 * `sizes` holds the size the last listing gave for each name; `ignored` the other names,
 * escaped, as they were also handed to `onStrangeName`. Path-style requests
 * (`endpoint/bucket/key`) except on AWS and Alibaba Cloud hosts, which get virtual-hosted
 * ones (`bucket.endpoint/key`) as the Python client (minio) makes them.
 */
export class S3Source {
  #endpoint;
  #credentials;
  #signingKeys = new Map();

  constructor({
    endpoint,
    region = 'us-east-1',
    bucket,
    prefix = '',
    accessKeyId,
    secretAccessKey,
    sessionToken,
    onStrangeName = () => {},
    maxKeys = 1000,
  }) {
    this.region = checkRegion(region || 'us-east-1');
    this.bucket = checkBucket(bucket);
    this.prefix = checkPrefix(prefix ?? '');
    this.#endpoint = parseEndpoint(endpoint, this.bucket, this.region);
    this.endpoint = this.#endpoint.shown;
    this.#credentials = checkCredentials(accessKeyId, secretAccessKey, sessionToken);
    if (!Number.isInteger(maxKeys) || maxKeys < 1 || maxKeys > 1000) {
      throw new BucketError('settings', `maxKeys must be 1..1000, not ${maxKeys}`);
    }
    this.maxKeys = maxKeys;
    this.onStrangeName = onStrangeName;
    this.sizes = new Map();
    this.ignored = [];
  }

  /** The FORMAT §8 names under the prefix, sorted; every page of the listing. */
  async names() {
    this.sizes.clear();
    this.ignored = [];
    const seen = new Set();
    let token;
    do {
      const query = [
        ['list-type', '2'],
        ['delimiter', '/'],
        ['encoding-type', 'url'],
        ['max-keys', String(this.maxKeys)],
      ];
      if (this.prefix) query.push(['prefix', this.prefix]);
      if (token !== undefined) query.push(['continuation-token', token]);
      const response = await this.#get(this.#url(null, query), {});
      const text = await readText(response, MAX_LISTING, 'the listing');
      const page = parseListing(parseXml(text, 'the listing'));
      for (const { key, sent, size } of page.contents) {
        const name = key?.startsWith(this.prefix) ? key.slice(this.prefix.length) : null;
        if (name !== null && parseObjectName(name) !== null) {
          this.sizes.set(name, size);
        } else {
          this.#strange(name ?? key ?? sent, seen);
        }
      }
      for (const { key, sent } of page.folders) {
        this.#strange(key?.startsWith(this.prefix) ? key.slice(this.prefix.length) : (key ?? sent), seen);
      }
      if (!page.truncated) break;
      if (page.next === null) {
        throw new BucketError('bad-answer', 'the bucket said its listing goes on but gave no continuation token');
      }
      if (page.next === token) {
        throw new BucketError('bad-answer', 'the bucket gave the same listing page twice: its listing does not advance');
      }
      token = page.next;
    } while (true);
    return [...this.sizes.keys()].sort();
  }

  /** Object `name`'s bytes: refused, having read at most one chunk more, when larger than any sealed object. */
  async read(name) {
    if (parseObjectName(name) === null) {
      throw new BucketError('not-an-object', `"${shown(String(name))}" is not the name of a sealed object: not read`);
    }
    const listed = this.sizes.get(name);
    if (listed !== undefined && listed > MAX_OBJECT) throw tooLarge(name, `${listed} bytes in the listing`);
    const response = await this.#get(this.#url(this.prefix + name, []), { name });
    const declared = response.headers.get('content-length');
    if (declared !== null && /^[0-9]+$/.test(declared) && Number(declared) > MAX_OBJECT) {
      response.idle.clear();
      await response.body?.cancel().catch(() => {});
      throw tooLarge(name, `${declared} bytes`);
    }
    return readBounded(response, MAX_OBJECT, (got) => tooLarge(name, `more than ${got - 1} bytes`), name);
  }

  describe(name) {
    return `s3://${this.bucket}/${this.prefix}${name}`;
  }

  /** The size the last listing gave, without a request. */
  size(name) {
    return this.sizes.get(name);
  }

  #strange(name, seen) {
    const escaped = shown(name ?? '');
    if (seen.has(escaped)) return;
    seen.add(escaped);
    this.ignored.push(escaped);
    this.onStrangeName(escaped);
  }

  #url(key, query) {
    const { protocol, host, virtual } = this.#endpoint;
    const base = virtual ? `/` : `/${this.bucket}`;
    const path = key === null ? base : `${base}${base.endsWith('/') ? '' : '/'}${encodePath(key)}`;
    const search = canonicalQuery(query);
    const text = `${protocol}//${virtual ? `${this.bucket}.${host}` : host}${path}${search ? `?${search}` : ''}`;
    const url = new URL(text);
    // What is signed must be what is sent: a URL the browser would rewrite is refused.
    if (url.href !== text) {
      throw new BucketError('settings', `the prefix "${shown(this.prefix)}" cannot be fetched as it is written`);
    }
    return url;
  }

  async #get(url, { name }) {
    for (let attempt = 0; ; attempt++) {
      const headers = await signV4({
        method: 'GET',
        url,
        region: this.region,
        ...this.#credentials,
        signingKeys: this.#signingKeys,
      });
      const idle = new Idle();
      let response;
      try {
        response = await fetch(url, {
          method: 'GET',
          headers,
          redirect: 'manual',
          cache: 'no-store',
          credentials: 'omit',
          referrerPolicy: 'no-referrer',
          mode: 'cors',
          signal: idle.signal,
        });
      } catch (error) {
        idle.clear();
        throw this.#unreachable(error, idle);
      }
      if (response.ok) {
        response.idle = idle;
        return response;
      }
      if (RETRIED.has(response.status) && attempt < RETRY_DELAYS_MS.length) {
        idle.clear();
        await response.body?.cancel().catch(() => {});
        await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[attempt]));
        continue;
      }
      try {
        throw await this.#failure(response, name);
      } finally {
        idle.clear();
      }
    }
  }

  #unreachable(error, idle) {
    if (idle.expired) {
      return new BucketError('timeout', `the bucket at ${this.endpoint} sent nothing for ${IDLE_MS / 1000} s`);
    }
    if (typeof document !== 'undefined') {
      // A browser says no more than "failed to fetch" for a refused connection, a name that
      // does not resolve, and an answer without the CORS headers alike.
      const origin = globalThis.location?.origin ?? 'this page';
      const insecure = globalThis.location?.protocol === 'https:' && this.#endpoint.protocol === 'http:';
      return new BucketError(
        'unreachable',
        insecure
          ? `the bucket did not answer: this page is served over https, so the browser refuses the http:// endpoint ${this.endpoint}; use the bucket's https endpoint`
          : `the bucket did not answer: check its CORS rule allows this page's origin (${origin}), and the endpoint ${this.endpoint}`,
      );
    }
    const cause = error?.cause?.code ?? error?.cause?.message ?? error?.message ?? String(error);
    return new BucketError('unreachable', `the bucket did not answer at ${this.endpoint}: ${cause}`);
  }

  async #failure(response, name) {
    const status = response.status;
    if (response.type === 'opaqueredirect' || (status >= 300 && status < 400)) {
      await response.body?.cancel().catch(() => {});
      return new BucketError(
        'region',
        `${this.endpoint} sent the request elsewhere (HTTP ${status || 'redirect'}): check the endpoint and the region (${this.region})`,
      );
    }
    let answer = { code: '', message: '', region: '' };
    try {
      answer = parseError(parseXml(await readText(response, MAX_ERROR_BODY, 'the error'), 'the error'));
    } catch {
      // The status alone still says what to do.
    }
    const said = answer.code ? ` (${answer.code}${answer.message ? `: ${answer.message}` : ''})` : '';
    if (status === 403) {
      const why = {
        InvalidAccessKeyId: ': it does not know the access key id',
        SignatureDoesNotMatch: ': the secret access key does not belong to the access key id',
        RequestTimeTooSkewed: ": this device's clock is more than 15 minutes off",
        ExpiredToken: ': the session token has expired',
        InvalidToken: ': the session token is not valid',
      }[answer.code];
      return new BucketError(
        'refused',
        `the bucket refused the key (check the read-only key and the bucket policy)${why ?? said}`,
      );
    }
    if (status === 404 && (answer.code === 'NoSuchBucket' || name === undefined)) {
      return new BucketError(
        'no-bucket',
        `there is no bucket "${this.bucket}" at ${this.endpoint}: check the bucket's name, the endpoint and the region`,
      );
    }
    if (status === 404) {
      return new BucketError('gone', `${this.describe(name)} is not in the bucket (deleted since it was listed?)`);
    }
    if (['AuthorizationHeaderMalformed', 'PermanentRedirect', 'IllegalLocationConstraintException'].includes(answer.code)) {
      const where = answer.region ? ` (the bucket says ${answer.region})` : '';
      return new BucketError('region', `the bucket is not in region ${this.region}${where}: check the region and the endpoint`);
    }
    if (status >= 500) {
      return new BucketError('server', `the bucket's server failed (HTTP ${status}${said}): try again later`);
    }
    return new BucketError('failed', `the bucket answered HTTP ${status}${said}`);
  }
}

// -- settings -----------------------------------------------------------------------------

function parseEndpoint(endpoint, bucket, region) {
  if (typeof endpoint !== 'string' || !endpoint.trim()) {
    throw new BucketError('settings', 'no endpoint: give the bucket service\'s URL, e.g. https://s3.eu-west-1.amazonaws.com');
  }
  const text = /^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint.trim()) ? endpoint.trim() : `https://${endpoint.trim()}`;
  let url;
  try {
    url = new URL(text);
  } catch {
    throw new BucketError('settings', `"${shown(endpoint)}" is not a URL: expected https://HOST or https://HOST:PORT`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new BucketError('settings', `the endpoint must start with https:// (or http:// on your own network), not ${shown(url.protocol)}//`);
  }
  if (url.username || url.password || url.search || url.hash || (url.pathname !== '/' && url.pathname !== '')) {
    throw new BucketError(
      'settings',
      `endpoint "${shown(endpoint)}": give only https://HOST or https://HOST:PORT, without a path, query or credentials`,
    );
  }
  let host = url.host;
  const hostname = url.hostname;
  const aws = /^s3[.-]([a-z0-9-]+\.)*amazonaws\.com(\.cn)?$/.test(hostname);
  // The global endpoint answers buckets of other regions with a redirect a browser cannot
  // follow with its signature: the regional one is asked, as the Python client does.
  if (hostname === 's3.amazonaws.com' || hostname === 's3.amazonaws.com.cn') {
    host = `s3.${region}.${hostname.slice(3)}${url.port ? `:${url.port}` : ''}`;
  }
  // A bucket with dots as a host name would not match the certificate's wildcard.
  const virtual = (aws || hostname.endsWith('.aliyuncs.com')) && !(bucket.includes('.') && url.protocol === 'https:');
  return { protocol: url.protocol, host, virtual, shown: `${url.protocol}//${host}` };
}

function checkRegion(region) {
  if (typeof region !== 'string' || !/^[a-z0-9-]{1,64}$/.test(region)) {
    throw new BucketError('settings', `region "${shown(String(region))}": lower-case letters, digits and '-', e.g. eu-west-1`);
  }
  return region;
}

function checkBucket(bucket) {
  const ok =
    typeof bucket === 'string' &&
    /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket) &&
    !/\.\.|\.-|-\./.test(bucket) &&
    !/^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/.test(bucket);
  if (!ok) {
    throw new BucketError(
      'settings',
      `bucket name "${shown(String(bucket ?? ''))}": 3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit`,
    );
  }
  return bucket;
}

function checkPrefix(prefix) {
  if (typeof prefix !== 'string' || !prefix.isWellFormed()) {
    throw new BucketError('settings', 'the prefix is not text');
  }
  if (utf8(prefix).length > MAX_PREFIX) {
    throw new BucketError('settings', `the prefix is longer than ${MAX_PREFIX} bytes`);
  }
  // A browser resolves "." and ".." in a URL's path before it sends it: such a key
  // cannot be fetched as it is named.
  if (prefix.split('/').some((part) => part === '.' || part === '..')) {
    throw new BucketError('settings', `the prefix "${shown(prefix)}" has a "." or ".." between slashes, which a browser cannot fetch`);
  }
  return prefix;
}

function checkCredentials(accessKeyId, secretAccessKey, sessionToken) {
  // The key id goes into the Authorization header's Credential=ID/date/region/s3/aws4_request.
  if (typeof accessKeyId !== 'string' || !/^[\x21-\x7e]{1,128}$/.test(accessKeyId) || /[/,=]/.test(accessKeyId)) {
    throw new BucketError('settings', 'the access key id is missing or is not a key id (letters and digits, no spaces)');
  }
  if (typeof secretAccessKey !== 'string' || !/^[\x21-\x7e]{1,256}$/.test(secretAccessKey)) {
    throw new BucketError('settings', 'the secret access key is missing or has spaces or other characters no key has');
  }
  if (sessionToken !== undefined && sessionToken !== null && sessionToken !== '') {
    if (typeof sessionToken !== 'string' || !/^[\x21-\x7e]{1,4096}$/.test(sessionToken)) {
      throw new BucketError('settings', 'the session token has spaces or other characters no token has');
    }
    return { accessKeyId, secretAccessKey, sessionToken };
  }
  return { accessKeyId, secretAccessKey };
}

// -- Signature V4 -------------------------------------------------------------------------

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/** RFC 3986 percent-encoding of every byte but the unreserved ones, as SigV4 wants it. */
export function uriEncode(text, keepSlash = false) {
  let out = '';
  for (const char of text) {
    if (UNRESERVED.test(char) || (keepSlash && char === '/')) {
      out += char;
    } else {
      for (const byte of utf8(char)) out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
    }
  }
  return out;
}

function encodePath(key) {
  return uriEncode(key, true);
}

function canonicalQuery(pairs) {
  return pairs
    .map(([key, value]) => [uriEncode(key), uriEncode(value)])
    .sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0))
    .map(([key, value]) => `${key}=${value}`)
    .join('&');
}

async function hmac(key, data) {
  const imported = await crypto.subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await crypto.subtle.sign('HMAC', imported, utf8(data)));
}

/**
 * The headers that sign a bodiless S3 request (AWS Signature V4, service "s3", the
 * payload the empty string): `x-amz-date`, `x-amz-content-sha256`, `authorization`,
 * `x-amz-security-token` with a session token, and any `headers` given, signed too.
 * `url` is a URL whose path and query are already in SigV4's canonical encoding.
 */
export async function signV4({
  method,
  url,
  region,
  accessKeyId,
  secretAccessKey,
  sessionToken,
  headers = {},
  now = new Date(),
  signingKeys = new Map(),
}) {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.[0-9]{3}/, '');
  const day = stamp.slice(0, 8);
  const signed = { ...lowerKeys(headers), host: url.host, 'x-amz-content-sha256': EMPTY_SHA256, 'x-amz-date': stamp };
  if (sessionToken) signed['x-amz-security-token'] = sessionToken;
  const names = Object.keys(signed).sort();
  const canonical = [
    method,
    url.pathname,
    url.search.slice(1),
    ...names.map((name) => `${name}:${String(signed[name]).trim().replace(/\s+/g, ' ')}`),
    '',
    names.join(';'),
    EMPTY_SHA256,
  ].join('\n');
  const scope = `${day}/${region}/s3/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', stamp, scope, toHex(await sha256(utf8(canonical)))].join('\n');
  const cacheKey = `${secretAccessKey}\n${scope}`;
  let key = signingKeys.get(cacheKey);
  if (!key) {
    key = utf8(`AWS4${secretAccessKey}`);
    for (const part of [day, region, 's3', 'aws4_request']) key = await hmac(key, part);
    signingKeys.clear();
    signingKeys.set(cacheKey, key);
  }
  const signature = toHex(await hmac(key, toSign));
  const out = { ...signed };
  delete out.host; // the browser sends it, from the URL
  out.authorization = `AWS4-HMAC-SHA256 Credential=${accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
  return out;
}

function lowerKeys(headers) {
  return Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]));
}

// -- bodies ---------------------------------------------------------------------------------

/** Aborts a request that has sent nothing for IDLE_MS: `touch()` on every chunk. */
class Idle {
  constructor() {
    this.controller = new AbortController();
    this.signal = this.controller.signal;
    this.expired = false;
    this.touch();
  }

  touch() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.expired = true;
      this.controller.abort();
    }, IDLE_MS);
  }

  clear() {
    clearTimeout(this.timer);
  }
}

async function readBounded(response, limit, tooBig, name) {
  const idle = response.idle;
  const reader = response.body.getReader();
  const chunks = [];
  let total = 0;
  try {
    for (;;) {
      let step;
      try {
        step = await reader.read();
      } catch {
        const what = name === undefined ? 'its answer' : name;
        throw idle?.expired
          ? new BucketError('timeout', `the bucket stopped sending ${what} for ${IDLE_MS / 1000} s`)
          : new BucketError('unreachable', `the connection to the bucket broke while reading ${what}`);
      }
      if (step.done) break;
      idle?.touch();
      total += step.value.length;
      if (total > limit) {
        await reader.cancel().catch(() => {});
        throw tooBig(total);
      }
      chunks.push(step.value);
    }
  } finally {
    idle?.clear();
  }
  return concat(...chunks);
}

async function readText(response, limit, what) {
  const bytes = await readBounded(
    response,
    limit,
    () => new BucketError('bad-answer', `${what} from the bucket is larger than ${limit} bytes: refused`),
  );
  try {
    return fromUtf8(bytes);
  } catch {
    throw new BucketError('bad-answer', `${what} from the bucket is not UTF-8 text`);
  }
}

function tooLarge(name, size) {
  return new BucketError('too-large', `${name} is ${size}, larger than any sealed object (${MAX_OBJECT}): not read`);
}

// -- XML --------------------------------------------------------------------------------------

const XML_NAME = /[A-Za-z_][A-Za-z0-9._:-]*/y;
const ENTITIES = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
const MAX_DEPTH = 16;
const MAX_ELEMENTS = 100_000;

function xmlError(what, message) {
  return new BucketError('bad-answer', `${what} from the bucket is not XML this phone reads: ${message}`);
}

/**
 * A strict reading of a small XML document: `{ name, children, text }` for its root.
 * Elements, attributes (read and dropped), text with XML's five entities and character
 * references, CDATA and comments; a DOCTYPE, any other declaration or processing
 * instruction, an unknown entity, a mismatched tag or anything after the root is refused.
 */
export function parseXml(text, what = 'the answer') {
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  const fail = (message) => {
    throw xmlError(what, `${message} (at character ${i})`);
  };
  const skipSpace = () => {
    const start = i;
    while (i < text.length && ' \t\r\n'.includes(text[i])) i++;
    return i > start;
  };
  const name = () => {
    XML_NAME.lastIndex = i;
    const match = XML_NAME.exec(text);
    if (!match) fail('expected a name');
    i += match[0].length;
    return match[0];
  };
  const skipMisc = () => {
    for (;;) {
      skipSpace();
      if (!text.startsWith('<!--', i)) return;
      const end = text.indexOf('-->', i + 4);
      if (end < 0) fail('an unterminated comment');
      i = end + 3;
    }
  };
  const decode = (raw) => {
    if (!raw.includes('&')) return raw;
    let out = '';
    let from = 0;
    for (let at = raw.indexOf('&'); at >= 0; at = raw.indexOf('&', from)) {
      const end = raw.indexOf(';', at);
      const ref = end < 0 ? '' : raw.slice(at + 1, end);
      let char = ENTITIES[ref];
      if (char === undefined) {
        const number = /^#x[0-9a-fA-F]{1,6}$/.test(ref)
          ? parseInt(ref.slice(2), 16)
          : /^#[0-9]{1,7}$/.test(ref)
            ? parseInt(ref.slice(1), 10)
            : -1;
        if (number < 1 || number > 0x10ffff || (number >= 0xd800 && number <= 0xdfff)) {
          fail(`an unknown entity or character reference "&${shown(ref.slice(0, 12))};"`);
        }
        char = String.fromCodePoint(number);
      }
      out += raw.slice(from, at) + char;
      from = end + 1;
    }
    return out + raw.slice(from);
  };

  if (text.startsWith('<?xml', i)) {
    const end = text.indexOf('?>', i);
    if (end < 0) fail('an unterminated XML declaration');
    i = end + 2;
  }
  skipMisc();
  if (text[i] !== '<') fail('no root element');
  const stack = [];
  let root = null;
  let count = 0;
  while (root === null) {
    const top = stack[stack.length - 1];
    if (i >= text.length) fail(top ? `it ends inside <${top.name}>` : 'it ends before its root element');
    if (text[i] !== '<') {
      if (!top) fail('text outside the root element');
      const end = text.indexOf('<', i);
      if (end < 0) fail(`it ends inside <${top.name}>`);
      top.text += decode(text.slice(i, end));
      i = end;
    } else if (text.startsWith('</', i)) {
      i += 2;
      const closing = name();
      skipSpace();
      if (text[i] !== '>') fail('expected ">"');
      i++;
      const open = stack.pop();
      if (!open || open.name !== closing) fail(`</${closing}> closes <${open?.name ?? 'nothing'}>`);
      if (stack.length === 0) root = open;
    } else if (text.startsWith('<!--', i)) {
      if (!top) fail('a comment before the root element');
      const end = text.indexOf('-->', i + 4);
      if (end < 0) fail('an unterminated comment');
      i = end + 3;
    } else if (text.startsWith('<![CDATA[', i)) {
      if (!top) fail('CDATA outside the root element');
      const end = text.indexOf(']]>', i + 9);
      if (end < 0) fail('an unterminated CDATA section');
      top.text += text.slice(i + 9, end);
      i = end + 3;
    } else if (text.startsWith('<!', i) || text.startsWith('<?', i)) {
      fail('a DOCTYPE, declaration or processing instruction, which S3 never sends');
    } else {
      i++;
      const element = { name: name(), children: [], text: '' };
      for (;;) {
        const spaced = skipSpace();
        if (text[i] === '>' || text.startsWith('/>', i)) break;
        if (!spaced) fail('expected a space before an attribute');
        name();
        skipSpace();
        if (text[i] !== '=') fail('expected "=" after an attribute name');
        i++;
        skipSpace();
        const quote = text[i];
        if (quote !== '"' && quote !== "'") fail('expected a quoted attribute value');
        const end = text.indexOf(quote, i + 1);
        if (end < 0) fail('an unterminated attribute value');
        const value = text.slice(i + 1, end);
        if (value.includes('<')) fail('"<" in an attribute value');
        decode(value);
        i = end + 1;
      }
      if (++count > MAX_ELEMENTS) fail(`more than ${MAX_ELEMENTS} elements`);
      if (top) top.children.push(element);
      if (text.startsWith('/>', i)) {
        i += 2;
        if (!top) root = element;
      } else {
        i++;
        stack.push(element);
        if (stack.length > MAX_DEPTH) fail(`elements nested more than ${MAX_DEPTH} deep`);
      }
    }
  }
  skipMisc();
  if (i !== text.length) fail('more after the root element');
  return root;
}

/** The text of `element`'s only child named `name`; null when it has none and may not. */
function only(element, name, what, required = true) {
  const found = element.children.filter((child) => child.name === name);
  if (found.length > 1) throw xmlError(what, `more than one <${name}> in <${element.name}>`);
  if (found.length === 0) {
    if (required) throw xmlError(what, `no <${name}> in <${element.name}>`);
    return null;
  }
  if (found[0].children.length) throw xmlError(what, `<${name}> holds elements`);
  return found[0].text;
}

/**
 * A ListObjectsV2 page: `contents` ({ key, sent, size }: the key decoded, null when what
 * the bucket sent does not decode, and as sent), `folders` (the common prefixes, as
 * { key, sent }), `truncated` and `next` (the continuation token).
 */
export function parseListing(root, what = 'the listing') {
  if (root.name !== 'ListBucketResult') {
    throw xmlError(what, `expected <ListBucketResult>, got <${shown(root.name)}>`);
  }
  const truncated = only(root, 'IsTruncated', what).trim();
  if (truncated !== 'true' && truncated !== 'false') {
    throw xmlError(what, `<IsTruncated> is "${shown(truncated.slice(0, 20))}", not true or false`);
  }
  const encoding = only(root, 'EncodingType', what, false);
  if (encoding !== null && encoding.trim() !== 'url') {
    throw xmlError(what, `an unknown <EncodingType> "${shown(encoding.slice(0, 20))}"`);
  }
  const key = (sent) => ({ key: encoding === null ? sent : urlDecode(sent), sent });
  const contents = root.children
    .filter((child) => child.name === 'Contents')
    .map((item) => {
      const size = only(item, 'Size', what).trim();
      if (!/^[0-9]{1,15}$/.test(size)) throw xmlError(what, `a <Size> of "${shown(size.slice(0, 20))}"`);
      return { ...key(only(item, 'Key', what)), size: Number(size) };
    });
  const folders = root.children
    .filter((child) => child.name === 'CommonPrefixes')
    .map((item) => key(only(item, 'Prefix', what)));
  const next = only(root, 'NextContinuationToken', what, false);
  return { contents, folders, truncated: truncated === 'true', next: next || null };
}

function parseError(root) {
  if (root.name !== 'Error') return { code: '', message: '', region: '' };
  const text = (name) => shown((only(root, name, 'the error', false) ?? '').slice(0, 200));
  return { code: text('Code'), message: text('Message'), region: text('Region') };
}

/** S3's `encoding-type=url` (form encoding: '+' a space) as text; null for bytes that are not UTF-8. */
function urlDecode(text) {
  const bytes = [];
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === '%' && /^[0-9a-fA-F]{2}$/.test(text.slice(i + 1, i + 3))) {
      bytes.push(parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (char === '+') {
      bytes.push(0x20);
    } else {
      const code = text.codePointAt(i);
      if (code > 0xffff) i++;
      bytes.push(...utf8(String.fromCodePoint(code)));
    }
  }
  try {
    return fromUtf8(Uint8Array.from(bytes));
  } catch {
    return null;
  }
}

/** `text` safe to show: controls, format characters (bidi overrides), separators other than
 * the space, and backslashes as escapes, never as characters a screen would obey. */
export function shown(text) {
  return String(text).replace(/[\p{C}\p{Z}\\]/gu, (char) =>
    char === ' ' ? ' ' : char === '\\' ? '\\\\' : `\\u{${char.codePointAt(0).toString(16)}}`,
  );
}
