/**
 * Strict standard base64 (RFC 4648 section 4, with padding). Node's decoder
 * silently skips invalid characters and truncates, which would let a mangled
 * key or signature decode to a different value instead of failing.
 */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export function decodeBase64Strict(text: string, what: string): Buffer {
  if (text.length === 0 || !BASE64.test(text)) throw new Error(`${what}: not valid base64`);
  const bytes = Buffer.from(text, 'base64');
  // Non-canonical trailing bits (e.g. "QR==" vs "QQ==") decode to the same bytes: reject them.
  if (bytes.toString('base64') !== text) throw new Error(`${what}: non-canonical base64`);
  return bytes;
}
