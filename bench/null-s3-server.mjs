#!/usr/bin/env node
// The benchmark client's ceiling: an HTTP server that speaks just enough S3 for bench/s3.ts
// (create bucket, PUT object, GET object) and does no work: it checks no signature, stores
// nothing but each object's size, and answers a GET with that many zero bytes. What the client
// reaches against it is the most any server can show on the same cores with the same client.
// Usage: node bench/null-s3-server.mjs PORT
import http from 'node:http';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: null-s3-server.mjs PORT');
  process.exit(2);
}
const sizes = new Map();
const zeros = Buffer.alloc(1024 * 1024);
const ETAG = '"00000000000000000000000000000000"';

http
  .createServer((req, res) => {
    const url = req.url.split('?')[0];
    if (req.method === 'PUT') {
      let n = 0;
      req.on('data', (d) => (n += d.length));
      req.on('end', () => {
        sizes.set(url, n);
        res.writeHead(200, { ETag: ETAG, 'Content-Length': 0 });
        res.end();
      });
      return;
    }
    if (req.method === 'GET' && sizes.has(url)) {
      const size = sizes.get(url);
      res.writeHead(200, { ETag: ETAG, 'Content-Length': size, 'Content-Type': 'application/octet-stream' });
      let left = size;
      const more = () => {
        while (left > 0) {
          const n = Math.min(left, zeros.length);
          left -= n;
          if (!res.write(n === zeros.length ? zeros : zeros.subarray(0, n))) return void res.once('drain', more);
        }
        res.end();
      };
      more();
      return;
    }
    res.writeHead(404, { 'Content-Type': 'application/xml' });
    res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>not found</Message></Error>');
  })
  .listen(port, '127.0.0.1');

const stop = () => process.exit(0);
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
