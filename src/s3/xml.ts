// S3 XML documents: building responses and parsing request bodies (fast-xml-parser), with AWS's namespace.
import { XMLBuilder, XMLParser, XMLValidator } from 'fast-xml-parser';
import { s3err } from './errors.js';

export const S3_NS = 'http://s3.amazonaws.com/doc/2006-03-01/';

/** A response element: strings, nested elements, arrays for repeated elements; undefined is left out. */
export type XmlValue = string | number | boolean | undefined | XmlNode | XmlValue[];
export interface XmlNode {
  [name: string]: XmlValue;
}

const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@_', suppressEmptyNode: false, suppressBooleanAttributes: false });

/** `<?xml ...?><Root xmlns="...">...</Root>` */
export function buildXml(root: string, body: XmlNode, namespace = true): string {
  const node: XmlNode = namespace ? { '@_xmlns': S3_NS, ...body } : body;
  return `<?xml version="1.0" encoding="UTF-8"?>\n${builder.build({ [root]: clean(node) })}`;
}

function clean(v: XmlValue): XmlValue {
  if (Array.isArray(v)) return v.map(clean);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return String(v);
  if (v && typeof v === 'object') {
    const out: XmlNode = {};
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = clean(x);
    return out;
  }
  return v;
}

/**
 * A string with the characters XML 1.0 cannot carry at all (C0 controls other than tab, newline
 * and carriage return; lone surrogates; U+FFFE and U+FFFF) replaced by U+FFFD: for echoes of
 * request input in error documents, which must stay well-formed whatever the client sent.
 */
export function xmlSafe(v: string): string {
  return v.replace(/[\x00-\x08\x0B\x0C\x0E-\x1F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
}

/** Elements that may repeat in request documents: always parsed as arrays. */
const ARRAYS = new Set(['Object', 'Part', 'Tag', 'Rule', 'Grant']);

const parser = new XMLParser({
  ignoreAttributes: true,
  removeNSPrefix: true,
  parseTagValue: false,
  trimValues: false,
  processEntities: true,
  // Numeric character references (&#34;) are what Go's encoder writes for quotes in ETags.
  htmlEntities: true,
  isArray: (name) => ARRAYS.has(name),
});

/** A parsed element: text values stay strings, exactly as sent (no trimming, no number parsing). */
export type Parsed = { [name: string]: unknown };

/** Parses a request document and returns its root element; anything malformed is MalformedXML. */
export function parseXml(body: Buffer, root: string): Parsed {
  const text = body.toString('utf8');
  // No DTDs: entity definitions are how XML bombs get in, and S3 documents never need them.
  if (/<!DOCTYPE|<!ENTITY/i.test(text)) throw s3err.malformedXml();
  if (XMLValidator.validate(text) !== true) throw s3err.malformedXml();
  let doc: Parsed;
  try {
    doc = parser.parse(text) as Parsed;
  } catch {
    throw s3err.malformedXml();
  }
  const el = doc[root];
  if (el === '' ) return {};
  if (!el || typeof el !== 'object' || Array.isArray(el)) throw s3err.malformedXml();
  return el as Parsed;
}

/** A child element's text, or undefined; an element with children is malformed here. */
export function text(el: Parsed, name: string): string | undefined {
  const v = el[name];
  if (v === undefined) return undefined;
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).every((k) => k === '#text')) return String((v as Parsed)['#text'] ?? '');
  throw s3err.malformedXml();
}

/** Repeated child elements (declared in ARRAYS) as a list of elements. */
export function children(el: Parsed, name: string): Parsed[] {
  const v = el[name];
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw s3err.malformedXml();
  return v.map((x) => {
    if (x === '') return {};
    if (!x || typeof x !== 'object') throw s3err.malformedXml();
    return x as Parsed;
  });
}

/** Nested single element, or undefined. */
export function child(el: Parsed, name: string): Parsed | undefined {
  const v = el[name];
  if (v === undefined) return undefined;
  if (v === '') return {};
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw s3err.malformedXml();
  return v as Parsed;
}
