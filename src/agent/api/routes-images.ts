import { stat } from 'node:fs/promises';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { FastifyInstance } from 'fastify';
import { verifyImageDigest } from '../../identity/image-signing.js';
import { SiloError } from '../../util/silo-error.js';
import type { RouteContext } from './context.js';
import { ApiError, badRequest, notFound } from './errors.js';
import { DigestParams, parseInput } from './validate.js';

export const IMAGE_SIGNATURE_HEADER = 'x-silo-image-signature';

/**
 * Upload into this node's image store (`silo apply` with a local image):
 * PUT /v1/images/<digest>, body = the tar, header x-silo-image-signature =
 * the org CA's signature over the digest. The digest is recomputed from the
 * bytes; a tar that does not hash to the URL's digest is refused and not kept.
 */
export function registerImageRoutes(app: FastifyInstance, ctx: RouteContext): void {
  // Tars arrive as streams; handlers pipe them to disk instead of buffering.
  app.addContentTypeParser(['application/x-tar', 'application/octet-stream'], (_request, payload, done) => {
    done(null, payload);
  });

  const store = () => {
    if (!ctx.images) throw new ApiError('internal', 'this agent has no image store');
    return ctx.images;
  };

  app.get('/v1/images/:digest', async (request) => {
    const { digest } = parseInput(DigestParams, request.params, 'image digest');
    const images = store();
    if (!(await images.has(digest))) throw notFound(`image ${digest} is not in this node's store`);
    const { size } = await stat(images.tarPath(digest));
    return { digest, size };
  });

  app.put('/v1/images/:digest', async (request, reply) => {
    const { digest } = parseInput(DigestParams, request.params, 'image digest');
    const images = store();
    const signature = request.headers[IMAGE_SIGNATURE_HEADER];
    if (typeof signature !== 'string' || signature.length === 0) {
      throw badRequest(`missing ${IMAGE_SIGNATURE_HEADER} header (the org CA's signature over the digest)`);
    }
    if (ctx.caPublicKey && verifyImageDigest(ctx.caPublicKey, digest, signature) !== null) {
      throw badRequest(`${IMAGE_SIGNATURE_HEADER} is not the org CA's signature over ${digest}`);
    }
    if (!(request.body instanceof Readable)) {
      throw badRequest('the image must be sent as content-type application/x-tar');
    }
    const limited = sizeLimit(ctx.maxImageBytes);
    // pipeline (unlike pipe) destroys `limited` when the upload aborts, so the import fails instead of hanging.
    pipeline(request.body, limited).catch(() => undefined);
    // A digest mismatch or an oversized body is a SiloError the error handler answers by its code.
    const stored = await images.importStream(limited, digest);
    reply.status(201);
    return stored;
  });
}

function sizeLimit(maxBytes: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      seen += chunk.length;
      if (seen > maxBytes) callback(new SiloError('too_large', `image too large (limit ${maxBytes} bytes)`));
      else callback(null, chunk);
    },
  });
}
