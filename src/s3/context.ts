// The per-request context handlers receive, and the helpers they answer with.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Engine, Logger } from '../engine/index.js';
import type { BodyRequest } from './body.js';
import { engineToS3, type ErrorContext } from './errors.js';
import type { SsePolicy } from './sse.js';
import type { AuthResult } from './sigv4.js';
import { buildXml, type XmlNode } from './xml.js';

export interface ServerConfig {
  region: string;
  log: Logger;
  sse: SsePolicy;
  /** Owner ID and display name shown in listings (there is one user). */
  owner: { ID: string; DisplayName: string };
}

export interface S3Context extends BodyRequest {
  req: IncomingMessage;
  res: ServerResponse;
  auth: AuthResult;
  engine: Engine;
  config: ServerConfig;
  /** Request id (x-amz-request-id). */
  id: string;
  /** Bucket and key from the path or virtual host ('' when absent). */
  bucket: string;
  key: string;
  /** Decoded query: first value of each name. */
  query: Map<string, string>;
}

export function header(ctx: S3Context, name: string): string | undefined {
  const v = ctx.req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Sends a response with no body (HEAD, 204, ...) or a small one. */
export function send(ctx: S3Context, status: number, headers: Record<string, string | number> = {}, body?: string | Buffer): void {
  const { res } = ctx;
  res.statusCode = status;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
  if (body !== undefined && ctx.req.method !== 'HEAD') {
    const buf = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    res.setHeader('Content-Length', buf.length);
    res.end(buf);
  } else {
    if (!res.hasHeader('Content-Length') && status !== 204 && status !== 304) res.setHeader('Content-Length', 0);
    res.end();
  }
}

export function sendXml(ctx: S3Context, status: number, root: string, node: XmlNode, headers: Record<string, string | number> = {}): void {
  send(ctx, status, { 'Content-Type': 'application/xml', ...headers }, buildXml(root, node));
}

/**
 * Runs an engine call, turning its errors into S3 errors for the resource at hand (a NotFound
 * while reading an object is NoSuchKey, while touching a bucket NoSuchBucket, ...).
 */
export async function call<T>(ectx: ErrorContext, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw engineToS3(err, ectx) ?? err;
  }
}

/** HTTP date (Last-Modified) and ISO 8601 (XML) at S3's one-second / millisecond precision. */
export function httpDate(ms: number): string {
  return new Date(ms).toUTCString();
}

export function isoDate(ms: number): string {
  return new Date(Math.floor(ms)).toISOString();
}

/**
 * For requests that may run long (CopyObject, UploadPartCopy, CompleteMultipartUpload): if the
 * work is not done within `afterMs`, S3's answer is sent early: 200, then a space every few
 * seconds so that clients and proxies do not time out, then the result document, or an Error
 * document inside the 200 (AWS does the same; the SDKs look for it).
 */
export async function longRunning(
  ctx: S3Context,
  early: Record<string, string>,
  work: () => Promise<{ root: string; node: XmlNode; headers?: Record<string, string> }>,
  afterMs = 2000,
): Promise<void> {
  const { res } = ctx;
  let started = false;
  let ticker: NodeJS.Timeout | undefined;
  const timer = setTimeout(() => {
    started = true;
    res.writeHead(200, { 'Content-Type': 'application/xml', ...early });
    res.write('<?xml version="1.0" encoding="UTF-8"?>\n');
    ticker = setInterval(() => res.write(' '), 5000);
  }, afterMs);
  try {
    const out = await work();
    if (!started) return sendXml(ctx, 200, out.root, out.node, { ...early, ...(out.headers ?? {}) });
    res.end(buildXml(out.root, out.node).replace(/^<\?xml[^>]*\?>\n/, ''));
  } catch (err) {
    if (!started) throw err;
    const s3 = engineToS3(err, { resource: 'object', key: ctx.key });
    if (!s3) ctx.config.log.error(`request ${ctx.id}: ${(err as Error).stack ?? String(err)}`);
    res.end(buildXml('Error', { Code: s3?.code ?? 'InternalError', Message: s3?.message ?? 'We encountered an internal error. Please try again.', RequestId: ctx.id }, false).replace(/^<\?xml[^>]*\?>\n/, ''));
  } finally {
    clearTimeout(timer);
    if (ticker) clearInterval(ticker);
  }
}
