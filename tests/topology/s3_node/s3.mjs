// The topology tests' Node.js S3 client (tests/topology/test_s3.py), run in an app host's
// network namespace. Reads {endpoint, region, bucket, other_bucket, key_id, secret} as JSON
// on stdin and prints one JSON object of results. The S3 client keeps the SDK's default
// checksum settings (requestChecksumCalculation WHEN_SUPPORTED): uploads carry a CRC32.
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  S3Client, PutObjectCommand, GetObjectCommand, DeleteObjectsCommand, ListObjectsV2Command,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";

const input = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (d) => { text += d; });
  process.stdin.on("end", () => resolve(text));
}));

const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");
const seen = [];  // what the SDK sent: content-sha256 and content-encoding of each request
const client = new S3Client({
  endpoint: input.endpoint, region: input.region, forcePathStyle: true,
  credentials: { accessKeyId: input.key_id, secretAccessKey: input.secret },
});
client.middlewareStack.add((next) => async (args) => {
  const h = args.request.headers || {};
  seen.push({ sha: h["x-amz-content-sha256"], encoding: h["content-encoding"], trailer: h["x-amz-trailer"] });
  return next(args);
}, { step: "finalizeRequest", name: "record", priority: "low" });

async function body(resp) {
  return Buffer.from(await resp.Body.transformToByteArray());
}

const out = {};
const dir = mkdtempSync(join(tmpdir(), "s3node-"));
const prefix = `node-${Date.now()}`;
try {
  // 1. A streaming upload of a file (a stream, so the SDK sends aws-chunked with a trailer).
  const data = randomBytes(3 * 1024 * 1024 + 17);
  const file = join(dir, "stream.bin");
  writeFileSync(file, data);
  seen.length = 0;
  await client.send(new PutObjectCommand({
    Bucket: input.bucket, Key: `${prefix}/stream.bin`, Body: createReadStream(file), ContentLength: data.length,
  }));
  out.stream_request = seen[0];
  out.stream_roundtrip = sha256(await body(await client.send(
    new GetObjectCommand({ Bucket: input.bucket, Key: `${prefix}/stream.bin` })))) === sha256(data);

  // 2. A multipart upload of 3 parts (lib-storage, a stream of unknown length).
  const big = randomBytes(11 * 1024 * 1024);
  const bigFile = join(dir, "big.bin");
  writeFileSync(bigFile, big);
  let parts = 0;
  const upload = new Upload({
    client, params: { Bucket: input.bucket, Key: `${prefix}/multipart.bin`, Body: createReadStream(bigFile) },
    partSize: 5 * 1024 * 1024, queueSize: 2,
  });
  upload.on("httpUploadProgress", (p) => { if (p.part) parts = Math.max(parts, p.part); });
  const done = await upload.done();
  out.multipart_parts = parts;
  out.multipart_etag_parts = Number((done.ETag || "").replace(/"/g, "").split("-")[1] || 0);
  out.multipart_roundtrip = sha256(await body(await client.send(
    new GetObjectCommand({ Bucket: input.bucket, Key: `${prefix}/multipart.bin` })))) === sha256(big);

  // 3. DeleteObjects of 7 objects (the SDK sends the body's checksum, as S3 requires).
  const keys = [...Array(7).keys()].map((i) => `${prefix}/many/${i}.txt`);
  for (const key of keys) {
    await client.send(new PutObjectCommand({ Bucket: input.bucket, Key: key, Body: `object ${key}` }));
  }
  const del = await client.send(new DeleteObjectsCommand({
    Bucket: input.bucket, Delete: { Objects: keys.map((Key) => ({ Key })) },
  }));
  out.deleted = (del.Deleted || []).length;
  out.delete_errors = (del.Errors || []).length;
  const left = await client.send(new ListObjectsV2Command({ Bucket: input.bucket, Prefix: `${prefix}/many/` }));
  out.left_after_delete = left.KeyCount || 0;

  // 4. Another project's bucket is refused.
  try {
    await client.send(new PutObjectCommand({ Bucket: input.other_bucket, Key: `${prefix}/x`, Body: "x" }));
    out.other_bucket = "allowed";
  } catch (err) {
    out.other_bucket = err.name;
  }

  // 5. A presigned PUT and GET, used by a plain HTTP client that has no secret. The URLs come
  // from a client set to compute checksums only when required: with the default, the SDK
  // signs the CRC32 of an empty body into the PUT URL, which any upload then contradicts
  // (the SDK's documented setting for presigning uploads).
  const presigner = new S3Client({
    endpoint: input.endpoint, region: input.region, forcePathStyle: true,
    credentials: { accessKeyId: input.key_id, secretAccessKey: input.secret },
    requestChecksumCalculation: "WHEN_REQUIRED",
  });
  const presigned = randomBytes(64 * 1024);
  const putUrl = await getSignedUrl(presigner, new PutObjectCommand({ Bucket: input.bucket, Key: `${prefix}/presigned.bin` }),
    { expiresIn: 300 });
  const put = await fetch(putUrl, { method: "PUT", body: presigned });
  out.presigned_put = put.status;
  out.presigned_put_body = put.ok ? "" : (await put.text()).slice(0, 300);
  const getUrl = await getSignedUrl(presigner, new GetObjectCommand({ Bucket: input.bucket, Key: `${prefix}/presigned.bin` }),
    { expiresIn: 300 });
  const get = await fetch(getUrl);
  out.presigned_get = get.status;
  out.presigned_roundtrip = get.ok && sha256(Buffer.from(await get.arrayBuffer())) === sha256(presigned);
  out.presigned_put_url_has_secret = putUrl.includes(input.secret);

  await client.send(new DeleteObjectsCommand({
    Bucket: input.bucket,
    Delete: { Objects: ["stream.bin", "multipart.bin", "presigned.bin"].map((k) => ({ Key: `${prefix}/${k}` })) },
  }));
} catch (err) {
  out.error = `${err.name}: ${err.message}`;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
