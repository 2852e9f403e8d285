// The bucket source without a bucket: Signature V4 against AWS's own published examples,
// the strict XML reader, the listing's rules, and what S3Source asks and refuses with
// fetch answered here. tests/test_s3_browser.py runs it against a real S3 server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BucketError,
  parseListing,
  parseXml,
  S3Source,
  shown,
  signV4,
  uriEncode,
} from '../src/s3.js';
import { MAX_OBJECT } from '../src/format/object.js';

const AWS_EXAMPLE = {
  region: 'us-east-1',
  accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  now: new Date('2013-05-24T00:00:00Z'),
};
const NAME = '0123456789abcdef-00000000000000000042.sealed';
const SETTINGS = {
  endpoint: 'http://127.0.0.1:9000',
  bucket: 'my-doorbell',
  prefix: 'front/',
  accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'secret',
};

test("the signature of AWS's GET Object example (with a Range header) is AWS's", async () => {
  const headers = await signV4({
    ...AWS_EXAMPLE,
    method: 'GET',
    url: new URL('https://examplebucket.s3.amazonaws.com/test.txt'),
    headers: { Range: 'bytes=0-9' },
  });
  assert.equal(
    headers.authorization,
    'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, ' +
      'SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, ' +
      'Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
  );
  assert.equal(headers['x-amz-date'], '20130524T000000Z');
  assert.equal(headers.host, undefined); // the browser sends it from the URL
});

test("the signature of AWS's list-objects example is AWS's", async () => {
  const headers = await signV4({
    ...AWS_EXAMPLE,
    method: 'GET',
    url: new URL('https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J'),
  });
  assert.match(headers.authorization, /Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7$/);
});

test('a session token is sent and signed', async () => {
  const url = new URL('https://examplebucket.s3.amazonaws.com/test.txt');
  const plain = await signV4({ ...AWS_EXAMPLE, method: 'GET', url });
  const withToken = await signV4({ ...AWS_EXAMPLE, method: 'GET', url, sessionToken: 'token/+=' });
  assert.equal(withToken['x-amz-security-token'], 'token/+=');
  assert.match(withToken.authorization, /SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,/);
  assert.notEqual(plain.authorization, withToken.authorization);
});

test('URI encoding keeps only the unreserved characters, and slashes in paths', () => {
  assert.equal(uriEncode('a b+c/d~e_f.g-h*'), 'a%20b%2Bc%2Fd~e_f.g-h%2A');
  assert.equal(uriEncode('front/é‮', true), 'front/%C3%A9%E2%80%AE');
});

// -- XML ------------------------------------------------------------------------------------

const listing = (body, extra = '<IsTruncated>false</IsTruncated>') =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
  `<Name>b</Name>${extra}${body}</ListBucketResult>`;

test('XML: entities, character references, CDATA and comments read as their text', () => {
  const root = parseXml('<a x="1 &amp; 2"><!-- c --><b>&lt;&gt;&amp;&quot;&apos;&#65;&#x1F600;</b><c><![CDATA[<&>]]></c></a>');
  assert.equal(root.name, 'a');
  assert.deepEqual(root.children.map((child) => child.text), ['<>&"\'A😀', '<&>']);
});

test('XML: anything not plain, well-formed S3 XML is refused', () => {
  const refused = [
    ['<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>', /DOCTYPE/],
    ['<a>&e;</a>', /unknown entity/],
    ['<a>&#0;</a>', /character reference/],
    ['<a>&#xD800;</a>', /character reference/],
    ['<a>& b</a>', /unknown entity/],
    ['<a><b></a></b>', /<\/a> closes <b>/],
    ['<a>', /ends inside <a>/],
    ['<a></a><b></b>', /more after the root/],
    ['<a></a>trailing', /more after the root/],
    ['text<a></a>', /no root element/],
    ['<a><?php x ?></a>', /processing instruction/],
    ['<a b="<">', /"<" in an attribute/],
    ['<a b=1>', /quoted attribute/],
    ['<a' + '<b>'.repeat(20), /expected a space|nested more than/],
    ['<r>' + '<b>'.repeat(20) + '</b>'.repeat(20) + '</r>', /nested more than 16 deep/],
    ['', /no root element/],
  ];
  for (const [text, message] of refused) {
    assert.throws(() => parseXml(text), (error) => error instanceof BucketError && error.code === 'bad-answer' && message.test(error.message), text);
  }
});

test('a listing page gives its keys, sizes, folders and continuation token', () => {
  const page = parseListing(
    parseXml(
      listing(
        `<Contents><Key>front/${NAME}</Key><LastModified>x</LastModified><ETag>&quot;e&quot;</ETag><Size>66904</Size></Contents>` +
          '<CommonPrefixes><Prefix>front/sub/</Prefix></CommonPrefixes><NextContinuationToken>1/a+b=</NextContinuationToken>',
        '<IsTruncated>true</IsTruncated>',
      ),
    ),
  );
  assert.deepEqual(page.contents, [{ key: `front/${NAME}`, sent: `front/${NAME}`, size: 66904 }]);
  assert.deepEqual(page.folders, [{ key: 'front/sub/', sent: 'front/sub/' }]);
  assert.equal(page.truncated, true);
  assert.equal(page.next, '1/a+b=');
});

test('URL-encoded keys are decoded, "+" as a space; bytes that are not UTF-8 give no key', () => {
  const page = parseListing(
    parseXml(
      listing(
        '<EncodingType>url</EncodingType>' +
          '<Contents><Key>front/a+b%2Bc%E2%80%AE%2F..</Key><Size>1</Size></Contents>' +
          '<Contents><Key>front/%FF</Key><Size>1</Size></Contents>',
      ),
    ),
  );
  assert.deepEqual(page.contents[0], { key: 'front/a b+c‮/..', sent: 'front/a+b%2Bc%E2%80%AE%2F..', size: 1 });
  assert.deepEqual(page.contents[1], { key: null, sent: 'front/%FF', size: 1 });
});

test('a listing without its fields, or with them twice or malformed, is refused', () => {
  const refused = [
    [listing('', ''), /no <IsTruncated>/],
    [listing('', '<IsTruncated>yes</IsTruncated>'), /not true or false/],
    [listing('<IsTruncated>false</IsTruncated>'), /more than one <IsTruncated>/],
    [listing('<Contents><Size>1</Size></Contents>'), /no <Key>/],
    [listing('<Contents><Key>a</Key><Key>b</Key><Size>1</Size></Contents>'), /more than one <Key>/],
    [listing('<Contents><Key>a</Key><Size>-1</Size></Contents>'), /<Size> of "-1"/],
    [listing('<Contents><Key>a</Key><Size>1e3</Size></Contents>'), /<Size> of "1e3"/],
    [listing('<Contents><Key><b/></Key><Size>1</Size></Contents>'), /<Key> holds elements/],
    [listing('<EncodingType>base64</EncodingType>'), /unknown <EncodingType>/],
    ['<Error><Code>AccessDenied</Code></Error>', /expected <ListBucketResult>/],
  ];
  for (const [text, message] of refused) {
    assert.throws(() => parseListing(parseXml(text)), message, text);
  }
});

test('names are shown with controls, bidi overrides and backslashes escaped', () => {
  assert.equal(shown('a\u202eb\\c\nd e\u00a0'), 'a\\u{202e}b\\\\c\\u{a}d e\\u{a0}');
  assert.equal(shown('\ud800'), '\\u{d800}');
});

// -- S3Source with fetch answered here -------------------------------------------------------

/** Replace fetch while `body` runs: `answer(url, init)` gives each Response. */
async function withFetch(answer, body) {
  const original = globalThis.fetch;
  const requests = [];
  globalThis.fetch = async (url, init) => {
    requests.push({ url: String(url), init });
    return answer(new URL(url), init);
  };
  try {
    await body(requests);
  } finally {
    globalThis.fetch = original;
  }
}

const xml = (text, status = 200) => new Response(text, { status, headers: { 'content-type': 'application/xml' } });

test('settings that cannot name a bucket are refused before any request', () => {
  const refused = [
    [{ bucket: 'My_Bucket' }, /bucket name/],
    [{ bucket: 'ab' }, /bucket name/],
    [{ bucket: 'a..b' }, /bucket name/],
    [{ bucket: '192.168.1.1' }, /bucket name/],
    [{ endpoint: 'ftp://example.org' }, /must start with https:\/\//],
    [{ endpoint: 'https://example.org/path' }, /without a path/],
    [{ endpoint: 'https://user:pw@example.org' }, /without a path, query or credentials/],
    [{ endpoint: '' }, /no endpoint/],
    [{ region: 'EU West' }, /region/],
    [{ prefix: 'front/../back/' }, /"\." or "\.\."/],
    [{ prefix: 'x'.repeat(513) }, /longer than 512 bytes/],
    [{ accessKeyId: '' }, /access key id/],
    [{ accessKeyId: 'a/b' }, /access key id/],
    [{ secretAccessKey: 'with space' }, /secret access key/],
    [{ sessionToken: 'a\nb' }, /session token/],
    [{ maxKeys: 1001 }, /maxKeys/],
  ];
  for (const [change, message] of refused) {
    assert.throws(
      () => new S3Source({ ...SETTINGS, ...change }),
      (error) => error instanceof BucketError && error.code === 'settings' && message.test(error.message),
      JSON.stringify(change),
    );
  }
});

test('path-style requests except on AWS, where the bucket is in the host name of its region', async () => {
  const cases = [
    ['http://127.0.0.1:9000', 'my-doorbell', 'http://127.0.0.1:9000/my-doorbell/front/'],
    ['minio.example.org:9000', 'my-doorbell', 'https://minio.example.org:9000/my-doorbell/front/'],
    ['https://s3.eu-central-003.backblazeb2.com', 'my-doorbell', 'https://s3.eu-central-003.backblazeb2.com/my-doorbell/front/'],
    ['https://s3.eu-west-1.amazonaws.com', 'my-doorbell', 'https://my-doorbell.s3.eu-west-1.amazonaws.com/front/'],
    ['https://s3.amazonaws.com', 'my-doorbell', 'https://my-doorbell.s3.eu-west-1.amazonaws.com/front/'],
    ['https://s3.eu-west-1.amazonaws.com', 'my.doorbell', 'https://s3.eu-west-1.amazonaws.com/my.doorbell/front/'],
  ];
  for (const [endpoint, bucket, expected] of cases) {
    const source = new S3Source({ ...SETTINGS, endpoint, bucket, region: 'eu-west-1' });
    await withFetch(
      () => new Response(new Uint8Array(3)),
      async (requests) => {
        await source.read(NAME);
        assert.equal(requests[0].url, expected + NAME);
        assert.match(requests[0].init.headers.authorization, /\/eu-west-1\/s3\/aws4_request,/);
      },
    );
  }
});

test('the listing asks every page with its continuation token and keeps only FORMAT §8 names', async () => {
  const strange = [];
  const source = new S3Source({ ...SETTINGS, maxKeys: 2, onStrangeName: (name) => strange.push(name) });
  const pages = {
    '': listing(
      `<Contents><Key>front/${NAME}</Key><Size>10</Size></Contents><Contents><Key>front/..%2Fx</Key><Size>1</Size></Contents>` +
        '<EncodingType>url</EncodingType><NextContinuationToken>t/1+=</NextContinuationToken>',
      '<IsTruncated>true</IsTruncated>',
    ),
    't/1+=': listing(
      '<Contents><Key>front/a%E2%80%AEb.sealed</Key><Size>1</Size></Contents><Contents><Key>elsewhere/x</Key><Size>1</Size></Contents>' +
        `<Contents><Key>front/${NAME.replace('42', '43')}</Key><Size>99999999999</Size></Contents>` +
        '<CommonPrefixes><Prefix>front/sub%2F</Prefix></CommonPrefixes><EncodingType>url</EncodingType>',
    ),
  };
  await withFetch(
    (url) => xml(pages[url.searchParams.get('continuation-token') ?? '']),
    async (requests) => {
      assert.deepEqual(await source.names(), [NAME, NAME.replace('42', '43')]);
      assert.equal(requests.length, 2);
      const first = new URL(requests[0].url);
      assert.equal(first.search, '?delimiter=%2F&encoding-type=url&list-type=2&max-keys=2&prefix=front%2F');
      assert.equal(new URL(requests[1].url).searchParams.get('continuation-token'), 't/1+=');
      assert.match(requests[1].url, /continuation-token=t%2F1%2B%3D/);
      for (const request of requests) assert.equal(request.init.redirect, 'manual');
    },
  );
  assert.deepEqual(strange, ['../x', 'a\\u{202e}b.sealed', 'elsewhere/x', 'sub/']);
  assert.deepEqual(source.ignored, strange);
  assert.equal(source.size(NAME), 10);
  assert.equal(source.describe(NAME), `s3://my-doorbell/front/${NAME}`);
  await assert.rejects(source.read(NAME.replace('42', '43')), { code: 'too-large' }); // by its listed size
  await assert.rejects(source.read('../x'), { code: 'not-an-object' });
});

test('a listing whose token does not advance, or that goes on without one, is refused', async () => {
  const source = new S3Source(SETTINGS);
  const again = listing('<NextContinuationToken>same</NextContinuationToken>', '<IsTruncated>true</IsTruncated>');
  await withFetch(
    () => xml(again),
    async () => await assert.rejects(source.names(), { code: 'bad-answer', message: /does not advance/ }),
  );
  await withFetch(
    () => xml(listing('', '<IsTruncated>true</IsTruncated>')),
    async () => await assert.rejects(source.names(), { code: 'bad-answer', message: /no continuation token/ }),
  );
});

test('a body larger than any sealed object is cut off as it streams, whatever its length says', async () => {
  const source = new S3Source(SETTINGS);
  let pulled = 0;
  const chunk = new Uint8Array(1 << 20);
  const endless = () =>
    new ReadableStream({
      pull(controller) {
        pulled += chunk.length;
        controller.enqueue(chunk);
      },
    });
  await withFetch(
    () => new Response(endless(), { headers: { 'content-length': '100' } }),
    async () => await assert.rejects(source.read(NAME), { code: 'too-large', message: new RegExp(`${NAME} is more than`) }),
  );
  assert.ok(pulled <= MAX_OBJECT + 4 * chunk.length, `read ${pulled} bytes`);

  pulled = 0;
  await withFetch(
    () => new Response(endless(), { headers: { 'content-length': String(MAX_OBJECT + 1) } }),
    async () => await assert.rejects(source.read(NAME), { code: 'too-large', message: /69282040 bytes/ }),
  );
  assert.ok(pulled <= 4 * chunk.length, `read ${pulled} bytes`);
});

test('an object of exactly the largest size is read', async () => {
  const source = new S3Source(SETTINGS);
  await withFetch(
    () => new Response(new Uint8Array(MAX_OBJECT)),
    async () => assert.equal((await source.read(NAME)).length, MAX_OBJECT),
  );
});

test("the bucket's refusals are told in words a person can act on", async () => {
  const error = (code, message = '') => `<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  const cases = [
    [403, error('AccessDenied', 'Access Denied'), 'refused', /^the bucket refused the key \(check the read-only key and the bucket policy\) \(AccessDenied: Access Denied\)$/],
    [403, error('SignatureDoesNotMatch'), 'refused', /secret access key does not belong to the access key id/],
    [403, error('InvalidAccessKeyId'), 'refused', /does not know the access key id/],
    [403, 'not xml', 'refused', /^the bucket refused the key \(check the read-only key and the bucket policy\)$/],
    [404, error('NoSuchBucket'), 'no-bucket', /no bucket "my-doorbell" at http:\/\/127.0.0.1:9000/],
    [400, error('AuthorizationHeaderMalformed') + '', 'region', /not in region us-east-1/],
    [301, '', 'region', /sent the request elsewhere \(HTTP 301\)/],
    [409, error('Odd\u202e'), 'failed', /HTTP 409 \(Odd\\u\{202e\}\)/],
  ];
  for (const [status, body, code, message] of cases) {
    await withFetch(
      () => xml(body, status),
      async () => await assert.rejects(new S3Source(SETTINGS).names(), { code, message }, `${status} ${body}`),
    );
  }
  await withFetch(
    () => xml(error('NoSuchKey'), 404),
    async () => await assert.rejects(new S3Source(SETTINGS).read(NAME), { code: 'gone', message: /is not in the bucket/ }),
  );
});

test("a server's passing failure is tried twice more, then told", async () => {
  let calls = 0;
  await withFetch(
    () => (++calls < 3 ? xml('', 503) : xml(listing(''))),
    async () => assert.deepEqual(await new S3Source(SETTINGS).names(), []),
  );
  assert.equal(calls, 3);
  calls = 0;
  await withFetch(
    () => (++calls, xml('', 503)),
    async () => await assert.rejects(new S3Source(SETTINGS).names(), { code: 'server', message: /HTTP 503.*try again later/ }),
  );
  assert.equal(calls, 3);
});

test('no answer: in a page, the CORS rule is named; elsewhere, the reason', async () => {
  const failing = () => {
    throw new TypeError('fetch failed', { cause: Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }) });
  };
  await withFetch(failing, async () => {
    await assert.rejects(new S3Source(SETTINGS).names(), {
      code: 'unreachable',
      message: 'the bucket did not answer at http://127.0.0.1:9000: ECONNREFUSED',
    });
    globalThis.document = {};
    try {
      await assert.rejects(new S3Source(SETTINGS).names(), {
        code: 'unreachable',
        message: /^the bucket did not answer: check its CORS rule allows this page's origin/,
      });
    } finally {
      delete globalThis.document;
    }
  });
});
